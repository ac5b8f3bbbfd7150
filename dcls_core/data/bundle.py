"""The loaded dataset: train/dev/test frames in the schema, the label vocab, dropped rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import pandas as pd

from .schema import COLUMNS, SPLITS
from .vocab import LabelVocab


@dataclass
class DatasetBundle:
    """``frames`` has exactly the keys train, dev, test (schema columns, RangeIndex);
    ``dropped`` lists ``{"split", "reason", "rows"}`` for every group of rows the loader
    left out (``split`` is the source split, ``all`` for a single-file source); ``pseudo`` holds
    the pseudo samples of an earlier augmentation found in the source (``dataset.pseudo_column``),
    set aside with their columns; ``warnings`` the loader's warnings about the labels."""

    name: str
    frames: Dict[str, pd.DataFrame]
    vocab: LabelVocab
    dropped: List[Dict[str, Any]] = field(default_factory=list)
    pseudo: Optional[pd.DataFrame] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def train(self) -> pd.DataFrame:
        return self.frames["train"]

    @property
    def dev(self) -> pd.DataFrame:
        return self.frames["dev"]

    @property
    def test(self) -> pd.DataFrame:
        return self.frames["test"]

    def to_frame(self) -> pd.DataFrame:
        """All splits in one frame (train, dev, test order)."""
        return pd.concat([self.frames[s][list(COLUMNS)] for s in SPLITS], ignore_index=True)

    def describe(self) -> Dict[str, Any]:
        """``{"dataset", "splits": {split: {"rows", "labels": {name: n}}}, "dropped", "warnings"}``;
        every vocab label is listed (in vocab order) with its count, zero included."""
        splits = {}
        for split in SPLITS:
            frame = self.frames[split]
            counts = frame["label"].value_counts()
            splits[split] = {
                "rows": int(len(frame)),
                "labels": {name: int(counts.get(name, 0)) for name in self.vocab.names},
            }
        dropped = [{"split": str(d["split"]), "reason": str(d["reason"]), "rows": int(d["rows"])}
                   for d in self.dropped]
        return {"dataset": self.name, "splits": splits, "dropped": dropped, "warnings": list(self.warnings)}
