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

Built in: ``none`` (here), ``diffusion`` (``diffusion_augmenter``), the baselines ``eda``,
``aeda``, ``mlm``, ``resample``, ``backtranslation`` (``baselines``) and ``retrieval`` (``retrieval``:
proxy-labelled sentences of an unlabelled corpus); their modules are imported on the first lookup. ``augmenter_from_config(cfg)`` builds the configured one with the run's configs.
"""
from __future__ import annotations

import logging
import importlib
from typing import Any, Callable, Dict, List, Protocol, TypeVar, runtime_checkable

import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["PSEUDO_COLUMNS", "Augmenter", "NoAugmenter", "empty_pseudo_frame", "register_augmenter",
           "get_augmenter", "available_augmenters", "augmenter_from_config", "uses_masked_lm", "uses_proxy"]

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
# modules whose import registers the built-in augmenters (imported lazily: they import this module)
_BUILTIN_MODULES = ("dcls_core.diffusion_augmenter", "dcls_core.baselines", "dcls_core.retrieval")
# methods that start from the run's (warmed-up) masked LM, so the pipeline runs the warm-up for them
_MASKED_LM_METHODS = ("diffusion", "mlm")


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def uses_masked_lm(method: str) -> bool:
    return method in _MASKED_LM_METHODS


def uses_proxy(augment_cfg: Any) -> bool:
    """Whether a baseline reads the run's proxy (the raw arm): the pipeline passes it its checkpoint."""
    return augment_cfg.method == "retrieval" and augment_cfg.retrieval.proxy == "raw"


def register_augmenter(name: str) -> Callable[[T], T]:
    """Class (or factory) decorator: ``get_augmenter(name, **kwargs)`` will call it with kwargs."""
    def decorator(factory: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"an augmenter named {name!r} is already registered")
        _REGISTRY[name] = factory  # type: ignore[assignment]
        return factory
    return decorator


def available_augmenters() -> List[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_augmenter(name: str, **kwargs: Any) -> Augmenter:
    """Build the augmenter registered under ``name`` (KeyError listing the known names)."""
    _load_builtins()
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


def augmenter_from_config(cfg: Any, **runtime: Any) -> Augmenter:
    """The augmenter ``cfg.augment.method`` names, given the run's configs (a ``Config``) as keywords:
    ``model_cfg, generator_cfg, augment_cfg, classifier_cfg, max_length, data_root, dataset_cfg``;
    ``runtime`` adds or overrides (``cache_dir``, ``dev_df``, ``exclude_texts``, ``checkpoint``, ``proxy``).
    Every augmenter accepts these keywords and ignores the ones it does not use."""
    kwargs: Dict[str, Any] = {"model_cfg": cfg.model, "generator_cfg": cfg.generator, "augment_cfg": cfg.augment,
                              "classifier_cfg": cfg.classifier, "max_length": cfg.data.max_length,
                              "data_root": cfg.data.resolved_root(), "dataset_cfg": cfg.dataset}
    kwargs.update(runtime)
    return get_augmenter(cfg.augment.method, **kwargs)
