"""The label-consistency judge (dcls_core.judge) on the tiny random model: fast, CPU only."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcls_core.config import ClassifierConfig
from dcls_core.judge import judge_probs, label_consistency, train_judge

NAMES = ["neg", "pos"]
POS = ["great", "wonderful", "brilliant", "lovely"]
NEG = ["awful", "boring", "dull", "terrible"]
SUBJECTS = ["the film", "this movie", "the story", "the acting", "the script"]


def _frame(words_pos, words_neg, subjects):
    rows = [(f"{s} is {w}", "pos") for s in subjects for w in words_pos]
    rows += [(f"{s} is {w}", "neg") for s in subjects for w in words_neg]
    return pd.DataFrame({"id": [str(i) for i in range(len(rows))], "text": [t for t, _ in rows],
                         "label": [y for _, y in rows]})


@pytest.mark.parametrize("kind", ["embedding", "finetune"])
def test_judge_learns_labels_and_is_cached(tmp_path: Path, tiny_model_cfg, kind):
    train = _frame(POS, NEG, SUBJECTS[:4])
    held = _frame(POS, NEG, SUBJECTS[4:])  # a subject it never saw with these words
    cfg = ClassifierConfig(epochs=15, lr=3e-3, batch_size=8)
    judge = train_judge(tiny_model_cfg, train, held, NAMES, seed=0, epochs=15, cache_dir=tmp_path,
                        kind=kind, max_length=16, classifier_cfg=cfg)
    assert judge.stats["kind"] == kind and judge.stats["train_rows"] == len(train)
    assert judge.stats["dev_accuracy"] >= 0.9  # the sentiment word decides

    probs = judge_probs(judge, None, held["text"])
    assert probs.shape == (len(held), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # flipped labels: the judge disagrees with (nearly) all of them
    flipped = held["label"].map({"pos": "neg", "neg": "pos"})
    assert label_consistency(judge, None, held["text"], held["label"])["consistency"] >= 0.9
    assert label_consistency(judge, None, held["text"], flipped)["consistency"] <= 0.1

    again = train_judge(tiny_model_cfg, train, held, NAMES, seed=0, epochs=15, cache_dir=tmp_path,
                        kind=kind, max_length=16, classifier_cfg=cfg)
    assert again.stats.get("cached") is True
    assert np.allclose(judge_probs(again, None, held["text"]), probs, atol=1e-5)
    # other training data: another cache entry
    other = train_judge(tiny_model_cfg, train.iloc[::-1], None, NAMES, seed=0, epochs=15, cache_dir=tmp_path,
                        kind=kind, max_length=16, classifier_cfg=cfg)
    assert not other.stats.get("cached") and other.stats["key"] != judge.stats["key"]


def test_judge_rejects_unknown_kind_and_labels(tiny_model_cfg):
    train = _frame(POS, NEG, SUBJECTS[:1])
    with pytest.raises(ValueError, match="judge kind"):
        train_judge(tiny_model_cfg, train, None, NAMES, kind="vote")
    judge = train_judge(tiny_model_cfg, train, None, NAMES, kind="embedding", max_length=16)
    assert label_consistency(judge, None, [], [])["n"] == 0
    with pytest.raises(ValueError, match="neutral"):
        label_consistency(judge, None, ["the film is great"], ["neutral"])
