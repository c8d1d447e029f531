# Big-endian integers as Cassandra serializes them, for the sinks' compiled modules.
from libc.stdint cimport int64_t, uint8_t, uint64_t


cdef inline int64_t be_int(const uint8_t* p, Py_ssize_t n) noexcept:
    """A big-endian two's complement integer of 1 to 8 bytes."""
    cdef uint64_t v = 0
    cdef Py_ssize_t i
    for i in range(n):
        v = (v << 8) | p[i]
    if n < 8 and (p[0] & 0x80):
        v |= (~<uint64_t>0) << (8 * n)
    return <int64_t>v
