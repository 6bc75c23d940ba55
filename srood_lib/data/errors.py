"""The ways loading data can fail, each with a message that names the fix."""
from __future__ import annotations


class DatasetMissingError(FileNotFoundError):
    """A dataset (or one split of it) is in none of the places looked at.

    The message names the dataset, every place looked (cache, each local layout, previous download, whether a
    download was allowed) and the setting that provides it. Nothing is ever substituted for missing data.
    """


class CorruptDataError(ValueError):
    """A file exists but cannot be read (corrupt, truncated, wrong format); ``.path`` names it."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class ImageTooSmallError(ValueError):
    """An image is smaller than the resolution it would be scored at (upsampling would invent its detail)."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path
