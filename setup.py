"""Builds the Cython modules on `pip install -e .`: the commit log decoder (cdcfast/_commitlog.pyx),
the change-event builder (cdcfast/_events.pyx), the writers' binary COPY rows
(cdcfast/sinks/_pgcopy.pyx), their change-log JSON (cdcfast/sinks/_changelog.pyx), PostgreSQL
scalar values (cdcfast/sinks/_scalars.pyx), the state model's hottest loops
(cdcfast/sinks/_state.pyx), the rows merge plans straight from their event (cdcfast/sinks/_merge.pyx)
and ClickHouse change-log columns in Native format (cdcfast/sinks/_chnative.pyx)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "cdcfast._commitlog",
        ["cdcfast/_commitlog.pyx"],
        include_dirs=["cdcfast"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "cdcfast._events",
        ["cdcfast/_events.pyx"],
        include_dirs=["cdcfast"],
        extra_compile_args=["-O3"],
    ),
    Extension("cdcfast.sinks._pgcopy", ["cdcfast/sinks/_pgcopy.pyx"], extra_compile_args=["-O3"]),
    Extension("cdcfast.sinks._changelog", ["cdcfast/sinks/_changelog.pyx"], extra_compile_args=["-O3"]),
    Extension("cdcfast.sinks._scalars", ["cdcfast/sinks/_scalars.pyx"], extra_compile_args=["-O3"]),
    Extension("cdcfast.sinks._state", ["cdcfast/sinks/_state.pyx"], extra_compile_args=["-O3"]),
    Extension("cdcfast.sinks._merge", ["cdcfast/sinks/_merge.pyx"], extra_compile_args=["-O3"]),
    Extension("cdcfast.sinks._chnative", ["cdcfast/sinks/_chnative.pyx"], extra_compile_args=["-O3"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
