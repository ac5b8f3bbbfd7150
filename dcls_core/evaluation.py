"""Classification metrics (numpy only, JSON-serialisable output).

Macro-F1 is the unweighted mean of the per-class F1 over *every* class in
``label_names``, including classes that never occur or are never predicted; any
0/0 (precision of a never-predicted class, recall of an absent class, F1 when both are
0) counts as 0, like scikit-learn's ``zero_division=0``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = ["classification_metrics", "to_label_ids", "ARMS", "select_arm", "bootstrap_win_rate"]

# the classifier arms of a run (dcls_core.training trains them alike): cross-entropy only, + L_c,
# + L_c and pseudo samples
ARMS = ("raw", "no_augmentation", "augmented")


def to_label_ids(values: Sequence[Any], label_names: Sequence[str]) -> np.ndarray:
    """Label names or integer ids -> int64 ids in ``label_names`` order (ValueError if unknown)."""
    arr = np.asarray(list(values), dtype=object)
    n = len(label_names)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if all(isinstance(v, str) for v in arr):
        index = {name: i for i, name in enumerate(label_names)}
        unknown = sorted({v for v in arr if v not in index})
        if unknown:
            raise ValueError(f"labels {unknown} are not in label_names {list(label_names)}")
        return np.array([index[v] for v in arr], dtype=np.int64)
    ids = np.asarray([int(v) for v in arr], dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= n)]
    if bad.size:
        raise ValueError(f"label ids {sorted(set(bad.tolist()))} are outside 0..{n - 1}")
    return ids


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(y_true: Sequence[Any], y_pred: Sequence[Any],
                           label_names: Sequence[str]) -> Dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``y_true``/``y_pred`` hold ids (ints, index into ``label_names``) or label names.
    ``confusion[i][j]`` counts rows of true class i predicted as class j.
    """
    names: List[str] = [str(n) for n in label_names]
    if not names:
        raise ValueError("label_names must not be empty")
    t = to_label_ids(y_true, names)
    p = to_label_ids(y_pred, names)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    c = len(names)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = int(confusion.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(names)
        },
        "confusion": confusion.tolist(),
    }


def bootstrap_win_rate(y_true: Sequence[Any], pred_a: Sequence[Any], pred_b: Sequence[Any],
                       label_names: Sequence[str], n_boot: int = 2000, seed: int = 0) -> float:
    """How often ``pred_a`` has the higher macro-F1 than ``pred_b`` over paired bootstrap
    resamples of the rows (ties count half): 0.5 means the rows cannot tell them apart."""
    names = [str(n) for n in label_names]
    t, a, b = (to_label_ids(v, names) for v in (y_true, pred_a, pred_b))
    if not (t.shape == a.shape == b.shape):
        raise ValueError(f"y_true and the predictions differ in length: {t.shape[0]}, {a.shape[0]}, {b.shape[0]}")
    if t.size == 0:
        return 0.5
    idx = np.random.default_rng(seed).integers(0, t.size, size=(n_boot, t.size))
    tt = t[idx]

    def macro_f1(p: np.ndarray) -> np.ndarray:  # [n_boot] macro-F1 of each resample
        pp = p[idx]
        f1 = [_safe_div(2 * ((tt == c) & (pp == c)).sum(1), (tt == c).sum(1) + (pp == c).sum(1))
              for c in range(len(names))]
        return np.mean(f1, axis=0)

    fa, fb = macro_f1(a), macro_f1(b)
    return float(np.mean((fa > fb) + 0.5 * (fa == fb)))


def select_arm(metrics: Dict[str, Any], fallback: bool, dev_labels: Sequence[Any] = None,
               label_names: Sequence[str] = None, confidence: float = 0.9) -> Dict[str, Any]:
    """The arm the run recommends.

    With dev predictions (``metrics[arm]["dev"]["predictions"]``, ``dev_labels`` and
    ``label_names`` given), ``raw``, the simplest arm, is the default; another arm replaces it
    only when it beats raw on dev macro-F1 in at least ``confidence`` of paired bootstrap
    resamples of the dev rows (the best such arm on dev wins). A few-shot dev set (20 rows) swings
    by 5-10 points between equally good classifiers, so "higher on dev" alone picks noise: in the
    quick benchmark the strict rule left raw in 10 of 15 runs, 7 of them worse on test.
    Without predictions (older metrics files): ``augmented`` when strictly better on dev than
    every arm without it. ``fallback`` off: ``augmented`` whenever it was trained."""
    dev = {arm: metrics[arm]["dev"]["macro_f1"] for arm in ARMS if arm in metrics and "dev" in metrics[arm]}
    if not dev:
        return {"arm": "raw", "dev_macro_f1": dev, "reason": "no dev data"}
    if not fallback and "augmented" in dev:
        return {"arm": "augmented", "dev_macro_f1": dev, "reason": "fallback_on_dev is off"}
    preds = {arm: metrics[arm]["dev"].get("predictions") for arm in dev}
    if "raw" in dev and dev_labels is not None and label_names is not None and all(
            p is not None for p in preds.values()):
        wins = {arm: bootstrap_win_rate(dev_labels, preds[arm], preds["raw"], label_names)
                for arm in dev if arm != "raw"}
        sure = [arm for arm, w in wins.items() if w >= confidence]
        shown = ", ".join(f"{a} {dev[a]:.4f} (beats raw in {w:.0%})" for a, w in wins.items())
        if not sure:
            return {"arm": "raw", "dev_macro_f1": dev, "win_rate": wins,
                    "reason": f"no arm beats raw ({dev['raw']:.4f}) on dev in >= {confidence:.0%} of bootstrap "
                              f"resamples: {shown}; keeping raw"}
        arm = max(sure, key=lambda a: (dev[a], a == "augmented"))
        return {"arm": arm, "dev_macro_f1": dev, "win_rate": wins,
                "reason": f"{arm} beats raw ({dev['raw']:.4f}) on dev in >= {confidence:.0%} of bootstrap "
                          f"resamples: {shown}"}
    plain = {a: f for a, f in dev.items() if a != "augmented"}
    if "augmented" not in dev or not plain:
        arm = max(dev, key=lambda a: (dev[a], a == "raw"))
        return {"arm": arm, "dev_macro_f1": dev, "reason": "no augmented arm" if "augmented" not in dev
                else "no arm without augmentation"}
    best_plain = max(plain, key=lambda a: (plain[a], a == "raw"))
    if dev["augmented"] > plain[best_plain]:
        return {"arm": "augmented", "dev_macro_f1": dev,
                "reason": f"augmentation improved dev macro-F1 ({dev['augmented']:.4f} > {plain[best_plain]:.4f})"}
    return {"arm": best_plain, "dev_macro_f1": dev,
            "reason": f"augmentation did not improve dev macro-F1 ({dev['augmented']:.4f} <= "
                      f"{plain[best_plain]:.4f} for {best_plain}): falling back to {best_plain}"}
