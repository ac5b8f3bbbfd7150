"""Seeded, stratified low-resource protocols.

Every function draws per class, visiting classes in sorted-name order with one
``numpy.random.default_rng(seed)``, and returns rows in their original order. So the same
frame and seed always give the same rows, and a different seed gives (almost surely)
different ones. The test split is never sampled from.

Per-class sizes: ``stratified_split``/``carve_dev``/``fraction`` take ``floor(n_c * size)``
rows of a class of ``n_c`` rows, but at least one when the class has two or more rows
(``fraction``: at least one always), so no class disappears from either side by rounding.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..config import ConfigError, DataConfig
from .errors import DataError

log = logging.getLogger(__name__)

_EPS = 1e-9  # 0.3 * 10 is 3.0000000000000004 in floating point; floor should still give 3


def _positions_by_class(frame: pd.DataFrame) -> List[Tuple[str, np.ndarray]]:
    labels = frame["label"].to_numpy(dtype=object)
    return [(label, np.flatnonzero(labels == label)) for label in sorted(set(labels))]


def _select(frame: pd.DataFrame, counts: Dict[str, int], seed: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """``counts[label]`` random rows of each class -> (selected, rest), original order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label, positions in _positions_by_class(frame):
        chosen.append(rng.permutation(positions)[: counts.get(label, 0)])
    picked = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)
    mask = np.zeros(len(frame), dtype=bool)
    mask[picked] = True
    return frame.iloc[mask], frame.iloc[~mask]


def stratified_split(frame: pd.DataFrame, size: float, seed: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``size`` of each class: returns (rest, held_out). A class of ``n_c`` rows gives
    ``floor(n_c * size)`` held-out rows (at least 1 when ``n_c >= 2``, so both sides see it)."""
    if not 0 < size < 1:
        raise DataError(f"stratified split size must be in (0, 1), got {size}")
    counts = {}
    for label, positions in _positions_by_class(frame):
        n = len(positions)
        counts[label] = min(n - 1, max(1, math.floor(n * size + _EPS))) if n >= 2 else 0
    held, rest = _select(frame, counts, seed)
    return rest, held


def carve_dev(train: pd.DataFrame, dev_size: float, seed: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Split a dev set off ``train`` (stratified, ``dev_size`` per class): (train, dev)."""
    rest, dev = stratified_split(train, dev_size, seed)
    dev = dev.copy()
    dev["split"] = "dev"
    return rest, dev


def k_shot(frame: pd.DataFrame, k: int, seed: int, where: str = "train",
           classes: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Exactly ``k`` random rows of every class of ``frame`` (or of every name in ``classes``,
    so that a class absent from ``frame`` counts as 0 rows); raises :class:`DataError` naming
    each class with fewer than ``k`` rows (``where`` names the frame in that message)."""
    if k < 1:
        raise ConfigError(f"k={k!r} is invalid: must be >= 1")
    sizes = {label: len(pos) for label, pos in _positions_by_class(frame)}
    wanted = sorted(set(sizes) | set(classes or ()))
    small = {label: sizes.get(label, 0) for label in wanted if sizes.get(label, 0) < k}
    if small:
        detail = ", ".join(f"class {label!r} has only {n}" for label, n in small.items())
        raise DataError(f"k_shot: k={k} rows per class requested from {where}, but {detail}; "
                        f"lower k or use data.protocol=fraction")
    selected, _ = _select(frame, {label: k for label in sizes}, seed)
    return selected


def fraction(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """``share`` of each class of ``frame`` (floor, at least one row per class)."""
    if not 0 < share <= 1:
        raise ConfigError(f"data.fraction={share!r} is invalid: must be in (0, 1]")
    if share == 1:
        return frame
    counts = {label: max(1, math.floor(len(pos) * share + _EPS)) for label, pos in _positions_by_class(frame)}
    selected, _ = _select(frame, counts, seed)
    return selected


def apply_protocol(frames: Dict[str, pd.DataFrame], data_cfg: DataConfig) -> Dict[str, pd.DataFrame]:
    """Source splits (train, test and maybe dev) -> the protocol's train/dev/test.

    * ``full``: everything; dev is the source dev, else carved from train (``data.dev_size``).
    * ``fraction``: dev as in ``full`` (carved from the whole train first), then
      ``data.fraction`` of the remaining train, stratified.
    * ``k_shot``: ``data.k`` rows per class for train; dev has ``data.dev_k`` (default ``k``)
      per class, drawn from the source dev or, without one, from the train rows the k-shot
      draw left over.

    Test is passed through untouched; dev is never taken from test.
    """
    train, test = frames["train"], frames["test"]
    dev: Optional[pd.DataFrame] = frames.get("dev")
    seed = data_cfg.seed
    protocol = data_cfg.protocol
    if protocol == "k_shot":
        dev_k = data_cfg.k if data_cfg.dev_k is None else data_cfg.dev_k
        if dev_k < 1:
            raise ConfigError(f"data.dev_k={dev_k!r} is invalid: must be >= 1")
        classes = sorted(set(train["label"]))
        new_train = k_shot(train, data_cfg.k, seed, where="train (data.k)")
        if dev is not None:
            new_dev = k_shot(dev, dev_k, seed, where="the source dev split (data.dev_k)", classes=classes)
        else:
            rest = train.iloc[~train.index.isin(new_train.index)]
            new_dev = k_shot(rest, dev_k, seed, classes=classes,
                             where=f"the train rows left after the {data_cfg.k}-shot draw (data.dev_k)").copy()
            new_dev["split"] = "dev"
        train, dev = new_train, new_dev
    elif protocol in ("full", "fraction"):
        if dev is None:
            train, dev = carve_dev(train, data_cfg.dev_size, seed)
            log.info("no dev split in the source: carved %d dev rows from train (data.dev_size=%s)",
                     len(dev), data_cfg.dev_size)
        if protocol == "fraction":
            train = fraction(train, data_cfg.fraction, seed)
    else:  # DataConfig validates this already
        raise ConfigError(f"data.protocol={protocol!r} is invalid")
    return {name: frame.reset_index(drop=True) for name, frame in
            (("train", train), ("dev", dev), ("test", test))}
