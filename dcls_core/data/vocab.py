"""Label names <-> ids, in a stable order persisted as ``labels.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Sequence, Union

import numpy as np

from .errors import DataError

VOCAB_FILE = "labels.json"


class LabelVocab:
    """The label names of a dataset and their ids.

    Order rule: the names **sorted** (Python string order). Sorting does not depend on
    which rows a sampler kept or on the row order of a file, so the same dataset always
    gives the same ids (SST-2: negative=0, positive=1). ``save``/``load`` persist the
    order verbatim, so a saved vocab is reproduced exactly even if the rule changes.
    """

    def __init__(self, names: Sequence[str]):
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"label vocabulary has duplicate names: {dupes}")
        self._names: List[str] = names
        self._ids = {name: i for i, name in enumerate(names)}

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "LabelVocab":
        """The vocab of the distinct ``labels``, sorted by name."""
        return cls(sorted({str(label) for label in labels}))

    @property
    def names(self) -> List[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and other._names == self._names

    def __repr__(self) -> str:
        return f"LabelVocab({self._names!r})"

    def to_id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise DataError(f"unknown label {name!r}; known labels: {self._names}") from None

    def to_name(self, index: int) -> str:
        if not 0 <= int(index) < len(self._names):
            raise DataError(f"label id {index} out of range 0..{len(self._names) - 1}")
        return self._names[int(index)]

    def encode(self, labels: Iterable[str]) -> np.ndarray:
        """Label names -> int64 ids (raises on an unknown name)."""
        return np.array([self.to_id(label) for label in labels], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.to_name(i) for i in ids]

    def save(self, path: Union[str, Path]) -> Path:
        """Write ``{"labels": [...]}``; ``path`` is a file or a folder (then ``labels.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"labels": self._names}, ensure_ascii=False, indent=2) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "LabelVocab":
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"label vocabulary not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"label vocabulary {path} is not valid JSON: {exc}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("labels"), list):
            raise DataError(f'label vocabulary {path} must be {{"labels": [names...]}}')
        return cls(payload["labels"])
