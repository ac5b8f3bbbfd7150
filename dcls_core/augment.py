"""The augmenter interface: DiffusionCLS and every baseline produce pseudo rows the same way.

An augmenter has a ``name`` and ``augment(train_df, label_names, seed) -> pseudo_df``,
where ``pseudo_df`` follows the pseudo schema (``PSEUDO_COLUMNS``): ``id, text, label,
split, is_pseudo, source_id, step, mask_ratio, changed_ratio, changed_spans`` (label = the inherited
class name). Implementations register under a name so ``augment.method=<name>`` selects
them::

    @register_augmenter("eda")
    class EDAAugmenter:
        name = "eda"
        def __init__(self, n: int = 4): ...
        def augment(self, train_df, label_names, seed): ...

    aug = get_augmenter("eda", n=4)
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Protocol, TypeVar, runtime_checkable

import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["PSEUDO_COLUMNS", "Augmenter", "NoAugmenter", "empty_pseudo_frame", "register_augmenter",
           "get_augmenter", "available_augmenters"]

PSEUDO_COLUMNS: List[str] = ["id", "text", "label", "split", "is_pseudo", "source_id", "step",
                             "mask_ratio", "changed_ratio", "changed_spans"]


@runtime_checkable
class Augmenter(Protocol):
    name: str

    def augment(self, train_df: pd.DataFrame, label_names: List[str], seed: int) -> pd.DataFrame:
        """Pseudo rows (``PSEUDO_COLUMNS``) for ``train_df``; deterministic for a given seed."""
        ...


def empty_pseudo_frame() -> pd.DataFrame:
    """A zero-row frame with the pseudo schema and its dtypes."""
    return pd.DataFrame({
        "id": pd.Series([], dtype=object), "text": pd.Series([], dtype=object),
        "label": pd.Series([], dtype=object), "split": pd.Series([], dtype=object),
        "is_pseudo": pd.Series([], dtype=bool), "source_id": pd.Series([], dtype=object),
        "step": pd.Series([], dtype="int64"), "mask_ratio": pd.Series([], dtype="float64"),
        "changed_ratio": pd.Series([], dtype="float64"),
        "changed_spans": pd.Series([], dtype="object"),
    })


_REGISTRY: Dict[str, Callable[..., Augmenter]] = {}
T = TypeVar("T")


def register_augmenter(name: str) -> Callable[[T], T]:
    """Class (or factory) decorator: ``get_augmenter(name, **kwargs)`` will call it with kwargs."""
    def decorator(factory: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"an augmenter named {name!r} is already registered")
        _REGISTRY[name] = factory  # type: ignore[assignment]
        return factory
    return decorator


def available_augmenters() -> List[str]:
    return sorted(_REGISTRY)


def get_augmenter(name: str, **kwargs: Any) -> Augmenter:
    """Build the augmenter registered under ``name`` (KeyError listing the known names)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown augmenter {name!r}; registered: {available_augmenters()}")
    return _REGISTRY[name](**kwargs)


@register_augmenter("none")
class NoAugmenter:
    """No augmentation: zero pseudo rows (the 'plain PLM' baseline)."""

    name = "none"

    def __init__(self, **_: Any) -> None:
        pass

    def augment(self, train_df: pd.DataFrame, label_names: List[str], seed: int) -> pd.DataFrame:
        return empty_pseudo_frame()
