"""Read: segment discovery, ``_cdc.idx`` tailing, framing and decoding into columnar batches."""

from cdcfast.commitlog.batch import Batch, ReadIssue
from cdcfast.commitlog.reader import CommitLogReader, ReadRange
from cdcfast.commitlog.schema import Schema, TableDef, load_schema
from cdcfast.commitlog.segment import CdcIndex, SegmentFile, discover, read_cdc_index

__all__ = [
    "Batch",
    "CdcIndex",
    "CommitLogReader",
    "ReadIssue",
    "ReadRange",
    "Schema",
    "SegmentFile",
    "TableDef",
    "discover",
    "load_schema",
    "read_cdc_index",
]
