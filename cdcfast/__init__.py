"""cdcfast: exactly-once change data capture from Cassandra CDC commit logs.

The data path, one way: ``commitlog`` (read, decode) -> ``events`` -> ``transform`` -> ``sinks``
-> ``checkpoint``. The supervisor wires processes and never decodes or writes SQL.
"""

__version__ = "0.1.0"
