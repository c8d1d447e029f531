"""msgspec Struct fields read by their slot, from compiled loops.

From Cython, ``obj.field`` goes through the type's generic attribute lookup (about 15 ns). A
msgspec Struct keeps each field in a slot at a fixed offset (a member descriptor), so the writers'
compiled loops read the fields of the structs they go over (``events.ChangeEvent``,
``events.Cell``, ``sinks.state.Version``) straight from the slot when an object is exactly of that
type (about 1 ns), and through ``getattr`` otherwise.

    cdef Field CELL_TS = field_of(Cell, "ts")   # once, at import
    ts = read(cell, CELL_TS)                     # in the loop
"""

from cpython.object cimport Py_TYPE, PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF


cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset

    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member


cdef struct Field:
    PyTypeObject* owner  # the struct type whose slot this is (its subclasses: getattr)
    Py_ssize_t offset
    PyObject* name  # for getattr


cdef inline Field field_of(object owner, str name) except *:
    """Where ``owner``'s (a type's) field ``name`` lives; refuses a field that is not a slot."""
    descriptor = owner.__dict__.get(name) if isinstance(owner, type) else None
    if type(descriptor).__name__ != "member_descriptor":
        raise TypeError(f"{owner!r}.{name} is not a slot")
    cdef Field field
    field.owner = <PyTypeObject*>owner
    field.offset = (<PyMemberDescrObject*>descriptor).d_member.offset
    Py_INCREF(owner)  # both live as long as the module: the type and the name are never released
    Py_INCREF(name)
    field.name = <PyObject*>name
    return field


cdef inline object read(object obj, Field field):
    """``getattr(obj, name)``, from the slot when ``obj`` is exactly of the field's type."""
    cdef PyObject* value
    if Py_TYPE(obj) == field.owner:
        value = (<PyObject**>((<char*><PyObject*>obj) + field.offset))[0]
        if value != NULL:
            return <object>value
    return getattr(obj, <object>field.name)
