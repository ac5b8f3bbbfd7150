"""Metrics, pseudo-sample diagnostics, the confidence filter and the augmenter registry."""
import json

import numpy as np
import pandas as pd
import pytest

from dcls_core.augment import (PSEUDO_COLUMNS, Augmenter, NoAugmenter, available_augmenters,
                               get_augmenter, register_augmenter)
from dcls_core.diagnostics import distinct_n, filter_by_confidence, pseudo_diagnostics, tokenize_words
from dcls_core.evaluation import bootstrap_win_rate, classification_metrics, select_arm

NAMES = ["neg", "neu", "pos"]


# ----------------------------------------------------------------------------- metrics

def test_metrics_hand_checked_with_a_class_never_predicted():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 0]  # "pos" is never predicted
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert m["accuracy"] == pytest.approx(0.5)
    neg, neu, pos = (m["per_class"][n] for n in NAMES)
    assert (neg["precision"], neg["recall"], neg["f1"], neg["support"]) == pytest.approx((1 / 3, 0.5, 0.4, 2))
    assert (neu["precision"], neu["recall"], neu["f1"], neu["support"]) == pytest.approx((2 / 3, 1.0, 0.8, 2))
    assert (pos["precision"], pos["recall"], pos["f1"], pos["support"]) == (0.0, 0.0, 0.0, 2)
    assert m["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    json.dumps(m)  # serialisable
    # names give the same result as ids
    named = classification_metrics([NAMES[i] for i in y_true], [NAMES[i] for i in y_pred], NAMES)
    assert named == m


def test_macro_f1_counts_absent_classes_and_perfect_is_one():
    m = classification_metrics([0, 1, 0, 1], [0, 1, 0, 1], NAMES)  # "pos" absent and never predicted
    assert m["accuracy"] == 1.0
    assert m["per_class"]["pos"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert classification_metrics([0, 1, 2], [0, 1, 2], NAMES)["macro_f1"] == 1.0
    # predicted-but-absent class: precision 0, and it lowers macro-F1
    m2 = classification_metrics([0, 0, 1], [0, 2, 1], NAMES)
    assert m2["per_class"]["pos"]["precision"] == 0.0 and m2["per_class"]["neg"]["recall"] == 0.5
    assert m2["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError):
        classification_metrics([0, 3], [0, 1], NAMES)
    with pytest.raises(ValueError):
        classification_metrics(["neg", "joy"], ["neg", "neg"], NAMES)
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], NAMES)
    empty = classification_metrics([], [], NAMES)
    assert empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0


def test_bootstrap_win_rate_orders_and_is_symmetric():
    y = [0] * 10 + [1] * 10
    perfect, constant = list(y), [0] * 20
    assert bootstrap_win_rate(y, perfect, constant, ["a", "b"]) == 1.0
    assert bootstrap_win_rate(y, constant, perfect, ["a", "b"]) == 0.0
    assert bootstrap_win_rate(y, perfect, perfect, ["a", "b"]) == 0.5  # identical: ties only
    one_off = list(y)
    one_off[0] = 1  # a single error in 20 rows: better, but not for every resample
    w = bootstrap_win_rate(y, perfect, one_off, ["a", "b"], seed=3)
    assert 0.5 < w < 1.0
    assert bootstrap_win_rate(y, one_off, perfect, ["a", "b"], seed=3) == pytest.approx(1 - w)
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_win_rate(y, perfect[:-1], perfect, ["a", "b"])


def _arm(preds, y):
    m = classification_metrics(y, preds, ["a", "b"])
    return {"dev": {"macro_f1": m["macro_f1"], "predictions": list(preds)}}


def test_select_arm_keeps_raw_unless_another_arm_is_surely_better():
    y = [0] * 10 + [1] * 10
    raw = [0] * 7 + [1] * 3 + [1] * 7 + [0] * 3  # 70 % right
    slightly = list(raw)
    slightly[7] = 0  # one more row right: higher on dev, but within noise
    clearly = list(y)  # every row right
    metrics = {"raw": _arm(raw, y), "no_augmentation": _arm(raw, y), "augmented": _arm(slightly, y)}
    choice = select_arm(metrics, True, y, ["a", "b"], confidence=0.9)
    assert metrics["augmented"]["dev"]["macro_f1"] > metrics["raw"]["dev"]["macro_f1"]
    assert choice["arm"] == "raw" and "keeping raw" in choice["reason"]
    assert 0.5 < choice["win_rate"]["augmented"] < 0.9
    # the old strict rule (no predictions) would have taken the one-row gain
    legacy = {a: {"dev": {"macro_f1": m["dev"]["macro_f1"]}} for a, m in metrics.items()}
    assert select_arm(legacy, True)["arm"] == "augmented"
    metrics["augmented"] = _arm(clearly, y)
    assert select_arm(metrics, True, y, ["a", "b"], confidence=0.9)["arm"] == "augmented"
    # fallback off: the augmented arm, whatever dev says
    metrics["augmented"] = _arm([0] * 20, y)
    assert select_arm(metrics, False, y, ["a", "b"])["arm"] == "augmented"


# ----------------------------------------------------------------------------- diagnostics

def test_distinct_2_hand_checked():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["one", ""], 2) == 0.0
    assert tokenize_words("Good, movie!") == ["good", ",", "movie", "!"]
    assert tokenize_words("我爱你 ok") == ["我", "爱", "你", "ok"]
    assert distinct_n(["我爱你", "我爱他"], 2) == pytest.approx(3 / 4)


@pytest.fixture
def frames():
    originals = pd.DataFrame({"id": ["o1", "o2"], "text": ["good movie", "bad film"],
                              "label": ["pos", "neg"], "split": "train"})
    pseudo = pd.DataFrame({
        "id": ["p1", "p2", "p3", "p4"],
        "text": ["good movie", "great movie", "great movie", "bad movie"],
        "label": ["pos", "pos", "neg", "neg"],
        "split": "train", "is_pseudo": True,
        "source_id": ["o1", "o1", "o2", "o2"], "step": [13, 14, 13, 14],
        "mask_ratio": [0.5, 0.5, 0.5, 0.5], "changed_ratio": [0.0, 0.5, 1.0, 0.5],
    })
    judge = np.array([[0.1, 0.0, 0.9], [0.2, 0.0, 0.8], [0.6, 0.0, 0.4], [0.3, 0.0, 0.7]])
    return originals, pseudo, judge


def test_pseudo_diagnostics_hand_checked(frames):
    originals, pseudo, judge = frames
    d = pseudo_diagnostics(pseudo, originals, judge_probs=judge, label_names=NAMES)
    assert d["n_pseudo"] == 4 and d["counts_per_label"] == {"neg": 2, "pos": 2}
    assert d["counts_per_label_original"] == {"neg": 1, "pos": 1}
    assert d["mean_changed_ratio"] == pytest.approx(0.5) and d["mean_mask_ratio"] == pytest.approx(0.5)
    assert d["same_as_source_rate"] == pytest.approx(1 / 4)  # p1 == o1
    assert d["pseudo_duplicate_rate"] == pytest.approx(1 / 4)  # p3 repeats p2
    assert d["duplicate_rate"] == pytest.approx(2 / 4)
    # bigrams: (good,movie) (great,movie) (great,movie) (bad,movie) -> 3 distinct of 4
    assert d["distinct_2"] == pytest.approx(3 / 4)
    assert d["distinct_2_original"] == pytest.approx(1.0)
    # labels pos,pos,neg,neg -> ids 2,2,0,0; argmax 2,2,0,2 -> 3 of 4 agree
    assert d["label_consistency"] == pytest.approx(3 / 4)
    assert d["mean_label_prob"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.3) / 4)
    assert d["label_consistency_per_label"] == {"neg": 0.5, "pos": 1.0}
    json.dumps(d)
    bare = pseudo_diagnostics(pseudo)
    assert "label_consistency" not in bare and bare["same_as_source_rate"] is None
    assert bare["duplicate_rate"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        pseudo_diagnostics(pseudo, judge_probs=judge)  # no label_names
    with pytest.raises(ValueError):
        pseudo_diagnostics(pseudo, judge_probs=judge[:3], label_names=NAMES)


def test_filter_keeps_exactly_rows_at_or_above_threshold(frames):
    _, pseudo, judge = frames  # inherited-label probabilities 0.9, 0.8, 0.6, 0.3
    kept, dropped = filter_by_confidence(pseudo, judge, NAMES, 0.7)
    assert kept["id"].tolist() == ["p1", "p2"] and dropped == 2
    assert kept["consistency"].tolist() == pytest.approx([0.9, 0.8])
    kept, dropped = filter_by_confidence(pseudo, judge, NAMES, 0.6)  # at the threshold: kept
    assert kept["id"].tolist() == ["p1", "p2", "p3"] and dropped == 1
    kept, dropped = filter_by_confidence(pseudo, judge, NAMES, 0.0)
    assert len(kept) == 4 and dropped == 0
    with pytest.raises(ValueError):
        filter_by_confidence(pseudo, judge, NAMES, 1.5)


# ----------------------------------------------------------------------------- augmenters

def test_no_augmenter_and_registry(monkeypatch):
    import dcls_core.augment as augment

    monkeypatch.setattr(augment, "_REGISTRY", dict(augment._REGISTRY))
    train = pd.DataFrame({"id": ["a"], "text": ["fine"], "label": ["pos"], "split": "train"})
    none = get_augmenter("none", n=4)
    assert isinstance(none, NoAugmenter) and isinstance(none, Augmenter) and none.name == "none"
    out = none.augment(train, NAMES, seed=0)
    assert len(out) == 0 and list(out.columns) == PSEUDO_COLUMNS

    @register_augmenter("copy")
    class Copy:
        name = "copy"

        def __init__(self, n: int = 1):
            self.n = n

        def augment(self, train_df, label_names, seed):
            rows = [dict(r, id=f"{r['id']}-{k}", is_pseudo=True, source_id=r["id"], step=0,
                         mask_ratio=0.0, changed_ratio=0.0)
                    for r in train_df.to_dict("records") for k in range(self.n)]
            return pd.DataFrame(rows, columns=PSEUDO_COLUMNS)

    assert "copy" in available_augmenters() and "none" in available_augmenters()
    got = get_augmenter("copy", n=3)
    assert isinstance(got, Augmenter) and len(got.augment(train, NAMES, 0)) == 3
    with pytest.raises(KeyError, match="copy"):
        get_augmenter("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_augmenter("copy")(NoAugmenter)
