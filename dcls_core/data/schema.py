"""The one row schema every source is converted to.

Rows are ``id: str, text: str, label: str, split: str`` where ``label`` is the label
*name* (ids come from :class:`~dcls_core.data.vocab.LabelVocab`) and ``split`` is one of
``train``, ``dev``, ``test``.
"""
from __future__ import annotations

import re
from typing import Iterable

import pandas as pd
import pyarrow as pa

from .errors import DataError

COLUMNS = ("id", "text", "label", "split")
SPLITS = ("train", "dev", "test")

SCHEMA = pa.schema([pa.field(name, pa.string(), nullable=False) for name in COLUMNS])


# characters that take no space: a text made only of them is empty to a reader and a tokenizer
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e]")


def blank_text(texts: pd.Series) -> pd.Series:
    """True where a text shows nothing: empty, whitespace or zero-width characters only."""
    return texts.astype(str).str.replace(_ZERO_WIDTH, "", regex=True).str.strip() == ""


def empty_frame() -> pd.DataFrame:
    """A frame with the schema's columns and no rows."""
    return pd.DataFrame({name: pd.Series([], dtype=str) for name in COLUMNS})


def validate_frame(frame: pd.DataFrame, splits: Iterable[str] = SPLITS) -> pd.DataFrame:
    """Check that ``frame`` has the schema's columns (extra columns are allowed), no
    missing values in them and only known split names; returns ``frame``."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"frame lacks schema columns {missing}; it has {list(frame.columns)}")
    for column in COLUMNS:
        if frame[column].isna().any():
            raise DataError(f"column {column!r} has {int(frame[column].isna().sum())} missing values")
    unknown = sorted(set(frame["split"]) - set(splits))
    if unknown:
        raise DataError(f"unknown split names {unknown}; expected {list(splits)}")
    return frame


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The schema columns of ``frame`` as a pyarrow table typed by :data:`SCHEMA`."""
    validate_frame(frame)
    return pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
