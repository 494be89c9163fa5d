"""Durable consensus storage on disk (the embedded default): see :mod:`grenex.storage.disk`."""

from grenex.storage.disk import CorruptStorageError, DiskStorage, StorageError

__all__ = ["CorruptStorageError", "DiskStorage", "StorageError"]
