"""The one error type of the data layer."""
from __future__ import annotations


class DataError(ValueError):
    """Input data cannot be turned into the schema; the message names the file, column,
    label or split at fault and, where there is one, the setting that fixes it."""
