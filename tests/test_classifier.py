"""PooledClassifier: pooling chosen from the checkpoint, probe-initialised head, folders; importance
for mean-pooling classifiers and its normalisation; pseudo samples spliced into the original text."""
import json

import numpy as np
import pytest
import torch

from dcls_core.classifier import PooledClassifier, checkpoint_pooling, fit_probe, init_head_from_probe, mean_pool
from dcls_core.config import ModelConfig
from dcls_core.importance import normalise_importance, token_importance
from dcls_core.models import classifier_pooling, embedded_model_path, load_classifier


def test_pooling_is_read_from_the_checkpoint(tmp_path):
    # the embedded MiniLM is a sentence-transformers model trained for normalised mean pooling
    assert checkpoint_pooling(str(embedded_model_path())) == ("mean", True)
    assert classifier_pooling(ModelConfig(name="minilm")) == ("mean", True)
    # a plain checkpoint (no modules.json) and the random tiny model read the first token
    assert checkpoint_pooling(str(tmp_path)) == ("cls", False)
    assert classifier_pooling(ModelConfig(name="tiny")) == ("cls", False)
    # a sentence-transformers folder that declares CLS pooling, without Normalize
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                   "pooling_mode_mean_tokens": False}))
    assert checkpoint_pooling(str(tmp_path)) == ("cls", False)
    # the user's choice wins
    assert classifier_pooling(ModelConfig(name="tiny", pooling="mean")) == ("mean", False)
    assert load_classifier(ModelConfig(name="tiny", pooling="mean"), 2).pooling == "mean"


def test_mean_pooling_ignores_padding(tiny_model_cfg, tokenizer):
    model = load_classifier(ModelConfig(name="tiny", pooling="mean"), 3, seed=0).eval()
    one = tokenizer(["a fine day"], return_tensors="pt")
    padded = tokenizer(["a fine day", "a much longer sentence with many more words in it"], padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        alone = model(**one).pooled[0]
        batched = model(**padded).pooled[0]
    assert torch.allclose(alone, batched, atol=1e-5)
    h = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    assert mean_pool(h, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 2.0]]


def test_probe_head_reproduces_logistic_regression(tiny_model_cfg, tokenizer):
    from sklearn.linear_model import LogisticRegression

    texts = ["good film", "great film", "fine acting", "bad film", "awful plot", "poor acting", "meh", "ok"]
    labels = [1, 1, 1, 0, 0, 0, 2, 2]
    model = load_classifier(tiny_model_cfg, 3, seed=0)
    init_head_from_probe(model, tokenizer, texts, labels, max_length=16, C=1.0)
    x = model.embed(tokenizer, texts, 16).numpy()
    want = LogisticRegression(C=1.0, max_iter=2000).fit(x, labels).predict_proba(x)
    with torch.no_grad():
        got = torch.softmax(model.head(torch.as_tensor(x)), -1).numpy()
    assert np.allclose(got, want, atol=1e-4)
    # binary: the single decision function is split over two rows, same probabilities
    w, b = fit_probe(x[:6], np.array(labels[:6]), 2)
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x[:6], labels[:6])
    p = torch.softmax(torch.as_tensor(x[:6] @ w.T + b), -1).numpy()
    assert np.allclose(p, lr.predict_proba(x[:6]), atol=1e-4)


def test_checkpoint_round_trip_keeps_pooling_and_logits(tiny_model_cfg, tokenizer, tmp_path):
    model = load_classifier(ModelConfig(name="tiny", pooling="mean"), 2, seed=3).eval()
    enc = tokenizer(["keep every weight", "and the pooling"], padding=True, return_tensors="pt")
    model.save_pretrained(tmp_path / "ckpt", label_names=["neg", "pos"])
    again = PooledClassifier.from_pretrained(tmp_path / "ckpt")
    assert again.pooling == "mean" and checkpoint_pooling(str(tmp_path / "ckpt")) == ("mean", False)
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, again(**enc).logits, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not a dcls classifier"):
        PooledClassifier.from_pretrained(tmp_path)


def test_importance_of_a_mean_pooling_classifier(tokenizer):
    model = load_classifier(ModelConfig(name="tiny", pooling="mean"), 2, seed=0).eval()
    enc = tokenizer(["short one", "a somewhat longer sentence here"], padding=True, return_tensors="pt",
                    return_special_tokens_mask=True)
    w = token_importance(model, enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"].bool())
    assert (w[enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)] == 0).all()
    assert (w >= 0).all() and (w.sum(1) <= 1 + 1e-5).all()
    with torch.no_grad():  # by hand: last-layer attention, mean over heads and attended queries
        att = model(enc["input_ids"], enc["attention_mask"], output_attentions=True).attentions[-1].mean(1)
    row = att[0, : int(enc["attention_mask"][0].sum())].mean(0)
    keep = ~enc["special_tokens_mask"][0].bool() & enc["attention_mask"][0].bool()
    assert torch.allclose(w[0][keep], row[keep], atol=1e-6)


def test_importance_normalisation():
    w = [0.02, 0.08, 0.04]
    assert normalise_importance(w, "raw") == w
    assert normalise_importance(w, "max") == pytest.approx([0.25, 1.0, 0.5])
    assert normalise_importance(w, "rank") == pytest.approx([1 / 3, 1.0, 2 / 3])
    assert normalise_importance([0.0, 0.0], "max") == [0.0, 0.0] and normalise_importance(None, "max") is None
    with pytest.raises(ValueError, match="normalisation"):
        normalise_importance(w, "softmax")


def test_negative_lambda_protects_important_tokens_and_keeps_masks_nested():
    from dcls_core.schedule import forward_masks, keep_probability

    w = torch.tensor([[1.0, 0.0]])
    protect = keep_probability(w, 8, 32, -0.5)
    target = keep_probability(w, 8, 32, 0.5)
    assert protect[0, 0] > protect[0, 1] and target[0, 0] < target[0, 1]
    g = torch.Generator().manual_seed(0)
    imp = torch.rand(4, 30, generator=g)
    masks = forward_masks(imp, torch.ones(4, 30, dtype=torch.bool), list(range(1, 33)), 32, -0.8, g)
    assert all(bool((masks[t] <= masks[t + 1]).all()) for t in range(31))  # nested across steps


def test_splice_keeps_untouched_text_exactly(tokenizer):
    from dcls_core.generation import splice_text

    text = "@User  Loved the NEW film!! 😀 #Cinema"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    same, spans = splice_text(tokenizer, text, ids, 64)
    assert same == text and spans == []
    words = tokenizer(text, add_special_tokens=False).word_ids()
    film = tokenizer.convert_tokens_to_ids("film")
    pos = tokenizer.convert_ids_to_tokens(ids).index("film")
    changed = list(ids)
    changed[pos] = tokenizer.convert_tokens_to_ids("movie")
    out, spans = splice_text(tokenizer, text, changed, 64)
    assert out == "@User  Loved the NEW movie!! 😀 #Cinema" and film != changed[pos]
    assert [out[a:b] for a, b in spans] == ["movie"]
    assert words[pos] is not None
    # a prefix (truncated text) keeps the untouched tail
    out, _ = splice_text(tokenizer, text, changed[: pos + 1], 64)
    assert out.endswith("movie!! 😀 #Cinema")
