"""One exception hierarchy for cdcfast. Every error says where: file and offset, or table and column."""

from __future__ import annotations


class CdcfastError(Exception):
    """Base of every error cdcfast raises on purpose."""


class ConfigError(CdcfastError):
    """A configuration file or command line option is wrong."""


class SinkUnreachable(CdcfastError):
    """A sink did not answer a one-shot command (``status``, ``dlq``) in time."""


class SchemaError(CdcfastError):
    """A schema could not be loaded or does not describe what the commit log holds."""


class SegmentError(CdcfastError):
    """A commit log segment cannot be read; always names the file and the offset."""

    def __init__(self, path: str, offset: int, message: str) -> None:
        super().__init__(f"{path} at offset {offset}: {message}")
        self.path = path
        self.offset = offset
        self.reason = message


class EncryptedSegmentError(SegmentError):
    """Transparent-data-encryption segments are detected and refused: cdcfast holds no keys."""
