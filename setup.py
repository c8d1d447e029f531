"""Builds the Cython commit log decoder (cdcfast/_commitlog.pyx) and change-event builder
(cdcfast/_events.pyx) on `pip install -e .`."""

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
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
