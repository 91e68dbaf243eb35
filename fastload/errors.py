"""Exception hierarchy of fastload.

Every error fastload raises derives from :class:`FastloadError` and, where one
fits, from the builtin a caller would naturally catch (``KeyError`` for a
missing key, ``FileNotFoundError`` for a missing store, ``ValueError`` for bad
values).  Messages name the file, the split and the field, and say what to do.
"""

__all__ = [
    "CacheError",
    "CacheFullError",
    "ConfigError",
    "CorruptStoreError",
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "FastloadError",
    "FeedAccessError",
    "FeedClosedError",
    "FeedConfigError",
    "FeedError",
    "FeedNotFoundError",
    "FieldNotFoundError",
    "IncompleteStoreError",
    "NonFiniteError",
    "RaggedBoundError",
    "SchemaError",
    "SourceError",
    "SourceFileError",
    "SourceKeyError",
    "SplitNotFoundError",
    "StoreChangedError",
    "StoreError",
    "StoreExistsError",
    "StoreNotFoundError",
    "StoreWriteError",
    "UnsupportedFormatError",
    "VerificationError",
    "WorkerError",
]


class FastloadError(Exception):
    """Base class of every fastload error."""


# --- store format -----------------------------------------------------------
class StoreError(FastloadError):
    """A store on disk is missing, incomplete, of an unknown format or corrupt."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No store exists at the given path."""


class StoreExistsError(StoreError, FileExistsError):
    """A complete store already exists where a new one would be written."""


class StoreWriteError(StoreError, OSError):
    """The output location of a store cannot be written."""


class IncompleteStoreError(StoreError):
    """The store was not finished (an interrupted write) and must be rewritten."""


class UnsupportedFormatError(StoreError):
    """The store's format version is not one this fastload reads."""


class CorruptStoreError(StoreError):
    """The store's arrays disagree with its schema (lengths, shapes, dtypes)."""


class StoreChangedError(StoreError):
    """The store was replaced or removed on disk while it was being read."""


class CacheError(StoreError):
    """The local chunk cache of a remote store (``cache_dir``) cannot be used."""


class CacheFullError(CacheError, OSError):
    """The disk holding the chunk cache is full; free space, shrink ``cache_bytes`` or move it."""


class SplitNotFoundError(StoreError, KeyError):
    """The requested split is not in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FieldNotFoundError(FastloadError, KeyError):
    """The requested field is not in the store or source."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- writing / input validation --------------------------------------------
class SchemaError(FastloadError, ValueError):
    """Data handed to a writer do not match the declared or first-seen schema."""


class RaggedBoundError(SchemaError):
    """A transform returned more rows of a ragged field than the bound its output_spec declared."""


class NonFiniteError(SchemaError):
    """A float field holds NaN or inf and ``allow_nonfinite`` was not set."""


class EmptyDatasetError(SchemaError):
    """A store or split would hold no samples."""


class SourceError(FastloadError):
    """An original input file is missing, unreadable or lacks a key."""


class SourceFileError(SourceError, OSError):
    """An input file is missing, truncated or not of the expected format."""


class SourceKeyError(SourceError, KeyError):
    """An input file lacks a dataset, column, key or branch."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class VerificationError(FastloadError):
    """A written store does not read back equal to its source."""


# --- loading ---------------------------------------------------------------
class ConfigError(FastloadError, ValueError):
    """A loader, mix or transform was configured inconsistently."""


class WorkerError(FastloadError, RuntimeError):
    """A prefetch worker died or raised; carries the worker's traceback."""


class DatasetNotFoundError(FastloadError, FileNotFoundError):
    """Neither a converted store nor the original files were found for a dataset."""


# --- feeds (one decode, several consumers) ----------------------------------
class FeedError(FastloadError):
    """A feed cannot be started, attached to or read from."""


class FeedNotFoundError(FeedError, FileNotFoundError):
    """No feed of that name is running for this user."""


class FeedConfigError(FeedError, ConfigError):
    """A consumer asked a feed for a configuration that differs from the feed's."""


class FeedAccessError(FeedError, PermissionError):
    """The feed belongs to another user: feeds are private to the user that started them."""


class FeedClosedError(FeedError, RuntimeError):
    """The feed closed or died while a consumer was attached."""
