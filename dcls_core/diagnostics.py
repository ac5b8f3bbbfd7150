"""Quality diagnostics of pseudo samples: label consistency, diversity, duplicates.

* **Consistency** (needs a judge, e.g. a classifier trained on originals, whose class
  probabilities ``judge_probs[N, C]`` are aligned with the rows of ``pseudo_df``): the
  share of pseudo samples whose judge argmax equals the inherited label, and the mean
  judge probability of the inherited label.
* **Diversity**: mean ``changed_ratio`` / ``mask_ratio`` (when the columns exist) and
  distinct-2 (distinct word bigrams / all word bigrams over the corpus, Li et al. 2016)
  of the pseudo texts, with the originals' distinct-2 for comparison. Words are
  lower-cased ``\\w+`` runs and punctuation marks; CJK characters count one word each
  (Chinese text has no spaces).
* **Duplicates**: a pseudo row is an exact duplicate when its text equals its source's
  text or the text of an *earlier* pseudo row (so ``1 - duplicate_rate`` is the share of
  rows that add a new text).

``filter_by_confidence`` is an optional judge filter, off by default (the paper has none).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

__all__ = ["tokenize_words", "distinct_n", "pseudo_diagnostics", "filter_by_confidence",
           "inherited_label_probs", "HEADLINE"]

# The figures of ``pseudo_diagnostics`` that reports and suite tables show, with their labels.
HEADLINE = {"label_consistency": "judge predicts the inherited label", "mean_changed_ratio": "tokens changed",
            "distinct_2": "distinct-2", "distinct_2_original": "distinct-2 of the originals",
            "duplicate_rate": "duplicates (of the source or an earlier pseudo sample)"}

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


def tokenize_words(text: str) -> List[str]:
    """Lower-cased words, punctuation marks and single CJK characters."""
    return _WORD.findall(str(text).lower())


def distinct_n(texts: Sequence[str], n: int = 2,
               tokenize: Callable[[str], List[str]] = tokenize_words) -> float:
    """Distinct n-grams / total n-grams over all texts (n-grams never cross texts); 0 if none."""
    total = 0
    seen = set()
    for text in texts:
        words = tokenize(text)
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def inherited_label_probs(pseudo_df: pd.DataFrame, judge_probs: Any,
                          label_names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(judge probability of each row's inherited label [N], judge argmax == label [N] bool)."""
    probs = np.asarray(judge_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != len(pseudo_df) or probs.shape[1] != len(label_names):
        raise ValueError(f"judge_probs must be [{len(pseudo_df)}, {len(label_names)}], got {probs.shape}")
    index = {name: i for i, name in enumerate(label_names)}
    labels = pseudo_df["label"].astype(str).tolist()
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in label_names {list(label_names)}")
    ids = np.array([index[x] for x in labels], dtype=np.int64)
    rows = np.arange(len(ids))
    return probs[rows, ids], probs.argmax(axis=1) == ids


def _mean(frame: pd.DataFrame, column: str) -> Optional[float]:
    if column not in frame.columns or len(frame) == 0:
        return None
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def pseudo_diagnostics(pseudo_df: pd.DataFrame, original_df: Optional[pd.DataFrame] = None,
                       judge_probs: Optional[Any] = None,
                       label_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """A JSON-serialisable summary of a pseudo-sample set (see the module docstring)."""
    texts = pseudo_df["text"].astype(str).tolist() if len(pseudo_df) else []
    n = len(texts)
    out: Dict[str, Any] = {
        "n_pseudo": n,
        "counts_per_label": {str(k): int(v) for k, v in pseudo_df["label"].astype(str).value_counts()
                             .sort_index().items()} if n else {},
        "mean_changed_ratio": _mean(pseudo_df, "changed_ratio"),
        "mean_mask_ratio": _mean(pseudo_df, "mask_ratio"),
        "distinct_2": distinct_n(texts, 2),
    }

    # duplicates: identical to the source, or to an earlier pseudo row
    source_text: Dict[str, str] = {}
    if original_df is not None and len(original_df):
        source_text = dict(zip(original_df["id"].astype(str), original_df["text"].astype(str)))
    sources = pseudo_df["source_id"].astype(str).tolist() if "source_id" in pseudo_df.columns else [None] * n
    same_source = np.array([s is not None and s in source_text and source_text[s] == t
                            for s, t in zip(sources, texts)], dtype=bool)
    repeat = pd.Series(texts, dtype=object).duplicated(keep="first").to_numpy(dtype=bool) if n else \
        np.zeros(0, dtype=bool)
    out["same_as_source_rate"] = float(same_source.mean()) if n and source_text else None
    out["pseudo_duplicate_rate"] = float(repeat.mean()) if n else 0.0
    out["duplicate_rate"] = float((same_source | repeat).mean()) if n else 0.0

    if original_df is not None:
        orig_texts = original_df["text"].astype(str).tolist()
        out["distinct_2_original"] = distinct_n(orig_texts, 2)
        out["counts_per_label_original"] = {str(k): int(v) for k, v in original_df["label"].astype(str)
                                            .value_counts().sort_index().items()}

    if judge_probs is not None:
        if label_names is None:
            raise ValueError("judge_probs needs label_names (the column order of the probabilities)")
        p_label, agree = inherited_label_probs(pseudo_df, judge_probs, label_names)
        out["label_consistency"] = float(agree.mean()) if n else None
        out["mean_label_prob"] = float(p_label.mean()) if n else None
        labels = pseudo_df["label"].astype(str).to_numpy()
        out["label_consistency_per_label"] = {
            str(name): float(agree[labels == name].mean()) for name in label_names if (labels == name).any()
        }
    return out


def filter_by_confidence(pseudo_df: pd.DataFrame, judge_probs: Any, label_names: Sequence[str],
                         min_confidence: float) -> Tuple[pd.DataFrame, int]:
    """Keep the pseudo rows whose judge probability of the inherited label is >= ``min_confidence``.

    Returns (kept rows with an added ``consistency`` column = that probability, number dropped).
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    p_label, _ = inherited_label_probs(pseudo_df, judge_probs, label_names)
    keep = p_label >= min_confidence
    kept = pseudo_df.loc[keep].copy()
    kept["consistency"] = p_label[keep]
    return kept, int((~keep).sum())
