"""Noise-resistant loss (Eqs. 4-6) and classifier training (tiny random model, toy corpus)."""
import copy
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dcls_core.config import ClassifierConfig
from dcls_core.losses import contrastive_loss, noise_resistant_loss, positive_contrastive_loss
from dcls_core import training
from dcls_core.training import (FitResult, batch_plan, evaluate, fit_classifier, make_loader, predict,
                                train_proxy)

LABELS = ["negative", "positive"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The test machine's cores are shared: one intra-op thread is much faster than two here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- losses

def brute_force_lc(h, labels, is_original, tau):
    """(1/K) log sum_i sum_{j in N_i} exp(cos(h_i, h_j)/tau), originals only, plain Python."""
    rows = [i for i in range(len(labels)) if is_original[i]]
    k = len(rows)
    total = 0.0
    pairs = 0
    for i in rows:
        for j in rows:
            if labels[j] != labels[i]:
                a, b = h[i], h[j]
                cos = float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))
                total += math.exp(cos / tau)
                pairs += 1
    return 0.0 if pairs == 0 else math.log(total) / k


def test_contrastive_matches_brute_force_double_loop():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(12, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,), generator=g)
    is_original = torch.tensor([True, False, True, True, False, True, True, True, False, True, True, False])
    for tau in (0.1, 0.5, 2.0):
        got = contrastive_loss(h, labels, is_original, tau).item()
        want = brute_force_lc(h, labels.tolist(), is_original.tolist(), tau)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_contrastive_gradient_is_exactly_zero_for_pseudo_rows():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(8, 5, generator=g, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 2, 0, 1, 2])
    is_original = torch.tensor([True, True, False, True, False, True, False, True])
    contrastive_loss(h, labels, is_original, tau=0.1).backward()
    assert torch.equal(h.grad[~is_original], torch.zeros_like(h.grad[~is_original]))
    assert (h.grad[is_original].abs().sum(dim=1) > 0).all()


def test_pseudo_rows_do_not_change_the_value():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    only = contrastive_loss(h[:4], labels[:4], torch.ones(4, dtype=torch.bool), 0.2)
    mixed = contrastive_loss(h, labels, torch.tensor([True] * 4 + [False] * 2), 0.2)
    assert mixed.item() == pytest.approx(only.item(), rel=1e-6)
    h2 = h.clone()
    h2[4:] = 100 * torch.randn(2, 4, generator=g)  # arbitrary pseudo representations
    again = contrastive_loss(h2, labels, torch.tensor([True] * 4 + [False] * 2), 0.2)
    assert again.item() == pytest.approx(only.item(), rel=1e-6)


def test_contrastive_zero_without_negative_pairs():
    h = torch.randn(4, 3, requires_grad=True)
    same = contrastive_loss(h, torch.tensor([1, 1, 1, 0]), torch.tensor([True, True, True, False]), 0.1)
    assert same.item() == 0.0
    one = contrastive_loss(h, torch.tensor([0, 1, 0, 1]), torch.tensor([True, False, False, False]), 0.1)
    assert one.item() == 0.0
    same.backward()
    assert torch.equal(h.grad, torch.zeros_like(h.grad))


def test_contrastive_lower_when_classes_clustered_than_mixed():
    e1 = torch.tensor([1.0, 0.0])
    e2 = torch.tensor([0.0, 1.0])
    labels = torch.tensor([0, 0, 1, 1])
    orig = torch.ones(4, dtype=torch.bool)
    together = torch.stack([e1, e1 + 0.05 * e2, -e1, -e1 + 0.05 * e2])  # same class close, classes apart
    apart = torch.stack([e1, -e1, e1 + 0.05 * e2, -e1 + 0.05 * e2])  # each class split across both poles
    lt = contrastive_loss(together, labels, orig, 0.1).item()
    la = contrastive_loss(apart, labels, orig, 0.1).item()
    assert lt < la


def test_contrastive_stable_at_small_tau():
    h = torch.randn(16, 8)
    lc = contrastive_loss(h, torch.arange(16) % 2, torch.ones(16, dtype=torch.bool), tau=1e-4)
    assert torch.isfinite(lc)


def test_positive_contrastive_matches_brute_force_supcon_with_own_pseudo_positives():
    torch.manual_seed(0)
    h = torch.randn(6, 5)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    is_original = torch.tensor([True, True, True, True, False, False])
    source = torch.tensor([0, 1, 2, 3, 0, 2])  # row 4 is a pseudo sample of 0, row 5 of 2
    tau = 0.5
    z = F.normalize(h, dim=-1)
    total, anchors = 0.0, 0
    for i in range(4):
        cands = [j for j in range(6) if j != i and (is_original[j] or source[j] == source[i])]
        pos = [j for j in cands if (is_original[j] and labels[j] == labels[i]) or source[j] == source[i]]
        denom = math.log(sum(math.exp(float(z[i] @ z[a]) / tau) for a in cands))
        total += -sum(float(z[i] @ z[p]) / tau - denom for p in pos) / len(pos)
        anchors += 1
    got = positive_contrastive_loss(h, labels, is_original, source, tau).item()
    assert got == pytest.approx(total / anchors, rel=1e-5)


def test_positive_contrastive_pulls_a_pseudo_sample_only_towards_its_source():
    torch.manual_seed(1)
    h = torch.randn(6, 5, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    is_original = torch.tensor([True, True, True, True, False, False])
    source = torch.tensor([0, 1, 2, 3, 0, 2])
    positive_contrastive_loss(h, labels, is_original, source, 0.5).backward()
    z0 = F.normalize(h[0].detach(), dim=-1)
    # a small step against the gradient brings pseudo row 4 closer to its source (row 0)
    moved = h[4].detach() - 0.1 * h.grad[4]
    assert float(F.normalize(moved, dim=-1) @ z0) > float(F.normalize(h[4].detach(), dim=-1) @ z0)
    # a pseudo sample whose source is not in the batch gets no gradient at all
    h2 = h.detach().clone().requires_grad_(True)
    positive_contrastive_loss(h2, labels, is_original, torch.tensor([0, 1, 2, 3, 0, 9]), 0.5).backward()
    assert torch.count_nonzero(h2.grad[5]) == 0


def test_noise_resistant_loss_positives_needs_sources():
    logits, h = torch.randn(4, 2), torch.randn(4, 3)
    labels, orig = torch.tensor([0, 1, 0, 1]), torch.ones(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="source"):
        noise_resistant_loss(logits, h, labels, orig, 1.0, 0.1, contrastive="positives")
    loss, parts = noise_resistant_loss(logits, h, labels, orig, 1.0, 0.1, source=torch.arange(4),
                                       contrastive="positives")
    assert parts["contrastive"] == pytest.approx(positive_contrastive_loss(h, labels, orig, torch.arange(4), 0.1).item())


def test_alpha_zero_is_plain_cross_entropy_and_alpha_adds_lc():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 3, generator=g)
    h = torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    orig = torch.tensor([True, True, True, False, False, True])
    ce = F.cross_entropy(logits, labels)
    loss0, parts0 = noise_resistant_loss(logits, h, labels, orig, alpha=0.0, tau=0.1)
    assert torch.equal(loss0, ce)
    assert parts0["ce"] == pytest.approx(ce.item()) and parts0["loss"] == pytest.approx(ce.item())
    lc = contrastive_loss(h, labels, orig, 0.1)
    assert parts0["contrastive"] == pytest.approx(lc.item())  # still reported
    loss2, parts2 = noise_resistant_loss(logits, h, labels, orig, alpha=2.0, tau=0.1)
    assert loss2.item() == pytest.approx(ce.item() + 2.0 * lc.item(), rel=1e-6)
    # L_e covers pseudo rows too: changing a pseudo row's logits changes the loss
    logits_b = logits.clone()
    logits_b[3] += torch.tensor([5.0, -5.0, 0.0])
    loss_b, _ = noise_resistant_loss(logits_b, h, labels, orig, alpha=0.0, tau=0.1)
    assert loss_b.item() != pytest.approx(loss0.item())


# ----------------------------------------------------------------------------- toy data

POS = ["great", "good", "excellent", "wonderful", "lovely"]
NEG = ["bad", "awful", "terrible", "horrible", "poor"]
NOUNS = ["movie", "food", "service", "book", "hotel", "show", "phone", "game"]


def toy_frame(n: int, seed: int, split: str, prefix: str) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % 2]
        adj = rng.choice(POS if label == "positive" else NEG)
        text = f"the {rng.choice(NOUNS)} was {adj}" if rng.random() < 0.5 else f"{adj} {rng.choice(NOUNS)}"
        rows.append({"id": f"{prefix}{i}", "text": text, "label": label, "split": split})
    return pd.DataFrame(rows)


def toy_pseudo(frame: pd.DataFrame, tag: str = "p") -> pd.DataFrame:
    rows = []
    for _, r in frame.iterrows():
        rows.append({"id": f"{r['id']}-{tag}", "text": r["text"] + " indeed", "label": r["label"],
                     "split": "train", "is_pseudo": True, "source_id": r["id"], "step": 13,
                     "mask_ratio": 0.4, "changed_ratio": 0.2})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy():
    return toy_frame(40, 0, "train", "tr"), toy_frame(20, 1, "dev", "dv")


_BASE = {}


def fresh_model(tiny_model_cfg, seed: int = 0):
    """load_classifier once per seed, then copies (loading re-reads the tokenizer: slow here)."""
    from dcls_core.models import load_classifier

    if seed not in _BASE:
        _BASE[seed] = load_classifier(tiny_model_cfg, num_labels=len(LABELS), seed=seed)
    return copy.deepcopy(_BASE[seed])


def cfg(**kw) -> ClassifierConfig:
    base = dict(epochs=2, min_steps=0, lr=2e-3, batch_size=8, alpha=1.0, tau=0.1, eval_every=1,
                head_init="random")
    base.update(kw)
    return ClassifierConfig(**base)


# ----------------------------------------------------------------------------- training

def test_make_loader_batches(tokenizer, toy):
    train, _ = toy
    frame = training.combine_frames(train.head(6), toy_pseudo(train.head(2)))
    loader = make_loader(frame, tokenizer, LABELS, max_length=16, batch_size=4, shuffle=False)
    batches = list(loader)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4]
    b0, b1 = batches
    assert set(b0) == {"input_ids", "attention_mask", "labels", "is_original"}
    assert b0["labels"].tolist() == [LABELS.index(x) for x in frame["label"][:4]]
    assert b0["is_original"].tolist() == [True] * 4 and b1["is_original"].tolist() == [True, True, False, False]
    assert b0["input_ids"].shape == b0["attention_mask"].shape
    assert (b0["input_ids"][b0["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    order = lambda s: [b["labels"].tolist() + b["input_ids"][:, 1].tolist()
                       for b in make_loader(train, tokenizer, LABELS, 16, 4, shuffle=True, seed=s)]
    assert order(5) == order(5)
    with pytest.raises(ValueError, match="not in label_names"):
        make_loader(train.assign(label="neutral"), tokenizer, LABELS, 16, 4, shuffle=False)


def test_alpha_really_changes_the_update(tiny_model_cfg, tokenizer, toy):
    """The authors' code computed L_c and dropped it: alpha must change the update."""
    train, _ = toy
    params = []
    for alpha in (0.0, 1.0):
        res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, train.head(8), None, LABELS,
                             cfg(alpha=alpha), max_length=16, seed=0, steps=2)
        assert res.history[-1]["contrastive"] > 0 and math.isfinite(res.history[-1]["loss"])
        params.append(res.model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone())
    assert not torch.equal(params[0], params[1])


def test_fit_learns_toy_corpus_and_restores_best_dev(tiny_model_cfg, tokenizer, toy):
    train, dev = toy
    model = fresh_model(tiny_model_cfg)
    res = fit_classifier(model, tokenizer, train, dev, LABELS, cfg(epochs=5, lr=5e-3, eval_every=5),
                         max_length=16, seed=0, pseudo_df=toy_pseudo(train))
    assert isinstance(res, FitResult) and res.steps == 25  # 5 epochs x ceil(40 / 8)
    assert [r["step"] for r in res.history] == [0, 5, 10, 15, 20, 25]
    assert res.history[1]["n_pseudo"] == 40 and res.history[1]["rows_per_step"] == 16  # 8 originals + 8 pseudo
    assert res.best_dev_metrics["accuracy"] >= 0.9
    f1s = [r["dev_macro_f1"] for r in res.history]
    assert res.best_step == res.history[int(np.argmax(f1s))]["step"]  # first best evaluation
    again = evaluate(res.model, dev, tokenizer, LABELS, 16)
    assert again["macro_f1"] == pytest.approx(res.best_dev_metrics["macro_f1"])
    pred, probs = predict(res.model, dev, tokenizer, LABELS, 16, batch_size=7)
    assert pred.shape == (20,) and probs.shape == (20, 2)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_predict_batches_by_length_but_returns_frame_order(tiny_model_cfg, tokenizer):
    # rows of very different lengths, interleaved: batched by length inside, frame order outside
    texts = ["good " * n for n in (12, 1, 7, 2, 15, 3, 9, 1)]
    frame = pd.DataFrame({"text": texts})
    model = fresh_model(tiny_model_cfg)
    pred, probs = predict(model, frame, tokenizer, LABELS, 32, batch_size=3)
    one_by_one = np.concatenate([predict(model, frame.iloc[[i]], tokenizer, LABELS, 32)[1] for i in range(len(frame))])
    assert np.allclose(probs, one_by_one, atol=1e-5)
    assert (pred == one_by_one.argmax(axis=1)).all()
    assert model.training  # the train/eval mode is restored
    empty_pred, empty_probs = predict(model, frame.iloc[:0], tokenizer, LABELS, 32)
    assert empty_pred.shape == (0,) and empty_probs.shape == (0, 2)


def test_the_proxy_learns_a_toy_task(tiny_model_cfg, tokenizer, toy):
    train, dev = toy
    start = evaluate(fresh_model(tiny_model_cfg), dev, tokenizer, LABELS, 16)["accuracy"]
    res = train_proxy(fresh_model(tiny_model_cfg), tokenizer, train, dev, LABELS,
                      cfg(epochs=4, lr=5e-3, eval_every=5), max_length=16, seed=0)
    assert res.best_dev_metrics["accuracy"] >= 0.9 > start


def test_arms_take_equal_steps_over_the_same_originals_with_equal_k(tiny_model_cfg, tokenizer, toy, monkeypatch):
    """With or without pseudo samples: same step count, same originals per step (so L_c's K is
    equal), and each pseudo sample sits in the batch of its own source."""
    train, _ = toy
    real = training.noise_resistant_loss
    seen = []

    def spy(logits, h, labels, is_original, alpha, tau, **kw):
        seen[-1].append((int(is_original.sum()), int((~is_original).sum()), labels[is_original].tolist()))
        return real(logits, h, labels, is_original, alpha, tau, **kw)

    monkeypatch.setattr(training, "noise_resistant_loss", spy)
    small = train.head(12)
    pseudo = pd.concat([toy_pseudo(small, "a"), toy_pseudo(small, "b")], ignore_index=True)
    results = []
    for pseudo_df in (None, pseudo):
        seen.append([])
        results.append(fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, None, LABELS,
                                      cfg(epochs=3, batch_size=5, pseudo_per_step=1), 16, 0, pseudo_df=pseudo_df))
    plain, augmented = seen
    assert len(plain) == len(augmented) == results[0].steps == results[1].steps == 9  # 3 x ceil(12 / 5)
    assert [p[0] for p in plain] == [a[0] for a in augmented] == [5] * 9  # K originals per step
    assert [p[2] for p in plain] == [a[2] for a in augmented]  # the same originals, in the same order
    assert all(p[1] == 0 for p in plain) and all(a[1] == 5 for a in augmented)  # one pseudo per original


def test_pseudo_samples_ride_with_their_source():
    from dcls_core.training import _PseudoPool

    pool = _PseudoPool([{"i": 1}, {"i": 2}, {"i": 3}], ["a", "a", "b"], per_step=1, seed=0)
    firsts = [pool.take("a")[0]["i"] for _ in range(4)]
    assert sorted(firsts[:2]) == [1, 2] and firsts[2:] == firsts[:2]  # rotates through its own samples
    assert [x["i"] for x in pool.take("b")] == [3] and pool.take("zzz") == []
    everything = _PseudoPool([{"i": 1}, {"i": 2}], ["a", "a"], per_step=0, seed=0)
    assert sorted(x["i"] for x in everything.take("a")) == [1, 2]


def test_step_budget_has_a_floor_and_batches_cover_every_original():
    c = ClassifierConfig(epochs=2, min_steps=7, batch_size=8)
    assert c.steps_for(8) == 7 and c.steps_for(40) == 10 and c.steps_for(3) == 7
    plan = batch_plan(10, 4, 5, seed=3)
    assert all(len(b) == 4 for b in plan)
    flat = [i for b in plan for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert plan == batch_plan(10, 4, 5, seed=3) and plan != batch_plan(10, 4, 5, seed=4)


def test_fit_is_deterministic_for_a_seed(tiny_model_cfg, tokenizer, toy):
    train, dev = toy
    small = train.head(16)
    out = []
    for _ in range(2):
        res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, dev, LABELS, cfg(epochs=2),
                             max_length=16, seed=7, pseudo_df=toy_pseudo(small), schedule="linear",
                             warmup_ratio=0.2)
        pred, probs = predict(res.model, dev, tokenizer, LABELS, 16)
        out.append((pred, probs, [r.get("loss") for r in res.history]))
    assert np.array_equal(out[0][0], out[1][0])
    assert np.array_equal(out[0][1], out[1][1])
    assert out[0][2] == out[1][2]


def test_fit_depends_on_the_rows_not_their_order(tiny_model_cfg, tokenizer, toy):
    """A sampler's order and a Parquet stage's id order must train one classifier (the benchmark
    runners and the pipeline's stages hand the same rows over in different orders)."""
    train, dev = toy
    small, pseudo = train.head(16), toy_pseudo(train.head(16))
    shuffled = small.sample(frac=1.0, random_state=3)
    assert list(shuffled["id"]) != list(small["id"])
    runs = []
    for rows, extra in ((small, pseudo), (shuffled, pseudo.sample(frac=1.0, random_state=4))):
        res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, rows, dev, LABELS, cfg(epochs=2),
                             max_length=16, seed=7, pseudo_df=extra)
        runs.append((predict(res.model, dev, tokenizer, LABELS, 16)[1], [r.get("loss") for r in res.history]))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_model_selection_reads_dev_only(tiny_model_cfg, tokenizer, toy, monkeypatch):
    train, dev = toy
    seen = []
    real = training.evaluate

    def spy(model, frame, *a, **k):
        seen.append(set(frame["id"]))
        return real(model, frame, *a, **k)

    monkeypatch.setattr(training, "evaluate", spy)
    fit_classifier(fresh_model(tiny_model_cfg), tokenizer, train.head(8), dev, LABELS, cfg(epochs=2),
                   max_length=16, seed=0)
    assert seen and all(ids == set(dev["id"]) for ids in seen)
    test = toy_frame(10, 3, "test", "te")
    with pytest.raises(ValueError, match="test split"):
        fit_classifier(fresh_model(tiny_model_cfg), tokenizer, train.head(8), test, LABELS, cfg(),
                       max_length=16, seed=0)


def test_reflective_regenerates_every_r_epochs_static_never(tiny_model_cfg, tokenizer, toy):
    train, dev = toy
    small = train.head(8)  # one batch of 8: one step per epoch
    calls = []

    def regenerate(model):
        assert isinstance(model, torch.nn.Module)
        calls.append(len(calls))
        return toy_pseudo(small.head(2 + len(calls)), tag=f"r{len(calls)}")

    res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, dev.head(6), LABELS, cfg(epochs=5),
                         max_length=16, seed=0, mode="reflective", regenerate=regenerate, regenerate_every=2)
    assert len(calls) == 3  # before steps (epochs) 1, 3, 5
    assert [r["n_pseudo"] for r in res.history] == [0, 3, 3, 4, 4, 5]
    assert len(res.pseudo_df) == 5

    calls.clear()
    fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, dev.head(6), LABELS, cfg(epochs=5),
                   max_length=16, seed=0, pseudo_df=toy_pseudo(small.head(1)), mode="reflective",
                   regenerate=regenerate, regenerate_every=2)
    assert len(calls) == 2  # the given pseudo_df serves epochs 1-2; then before 3 and 5

    calls.clear()
    res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, dev.head(6), LABELS, cfg(epochs=3),
                         max_length=16, seed=0, pseudo_df=toy_pseudo(small), mode="static",
                         regenerate=regenerate)
    assert calls == [] and [r["n_pseudo"] for r in res.history] == [8, 8, 8, 8]
    with pytest.raises(ValueError, match="regenerate"):
        fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, dev, LABELS, cfg(), 16, 0,
                       mode="reflective")


def test_empty_pseudo_samples_never_reach_a_batch_static_or_reflective(tiny_model_cfg, tokenizer, toy):
    train, dev = toy
    small = train.head(8)

    def with_empties(tag):
        pseudo = toy_pseudo(small, tag=tag)
        pseudo.loc[[0, 3], "text"] = ["", "\u200b \u200b"]  # cut to nothing / zero-width only
        return pseudo

    res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, dev.head(6), LABELS, cfg(epochs=2),
                         max_length=16, seed=0, pseudo_df=with_empties("s"), mode="static")
    assert [r["n_pseudo"] for r in res.history[1:]] == [6, 6]
    res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, small, dev.head(6), LABELS, cfg(epochs=2),
                         max_length=16, seed=0, mode="reflective", regenerate=lambda model: with_empties("r"))
    assert [r["n_pseudo"] for r in res.history[1:]] == [6, 6]


def test_train_proxy_plain_ce_on_originals_with_its_own_recipe(tiny_model_cfg, tokenizer, toy, monkeypatch):
    train, dev = toy
    alphas = []
    real = training.noise_resistant_loss

    def spy(logits, h, labels, is_original, alpha, tau, **kw):
        alphas.append((alpha, bool(is_original.all())))
        return real(logits, h, labels, is_original, alpha, tau, **kw)

    monkeypatch.setattr(training, "noise_resistant_loss", spy)
    mixed = training.combine_frames(train.head(8), toy_pseudo(train.head(4)))
    res = train_proxy(fresh_model(tiny_model_cfg), tokenizer, mixed, dev.head(6), LABELS,
                      cfg(epochs=5, proxy_epochs=3, proxy_lr=1e-3), max_length=16, seed=0)
    assert res.steps == 3 and alphas == [(0.0, True)] * 3
    assert res.history[-1]["lr"] == 1e-3 and all(r["n_pseudo"] == 0 for r in res.history)


def test_best_dev_step_weights_are_restored(tiny_model_cfg, tokenizer, toy, monkeypatch):
    train, dev = toy
    scripted = iter([0.1, 0.2, 0.9, 0.5, 0.9])  # steps 0..4: best at step 2; the tie at 4 keeps 2

    def fake_evaluate(model, frame, *a, **k):
        f1 = next(scripted)
        return {"accuracy": f1, "macro_f1": f1, "per_class": {}, "confusion": []}

    monkeypatch.setattr(training, "evaluate", fake_evaluate)
    snapshots, records = [], []

    def on_eval(record, model):
        records.append(record)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    res = fit_classifier(fresh_model(tiny_model_cfg), tokenizer, train.head(8), dev, LABELS, cfg(epochs=4),
                         max_length=16, seed=0, on_eval=on_eval)
    assert res.best_step == 2 and res.best_dev_metrics["macro_f1"] == 0.9
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4] and records == res.history
    final = res.model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[4][k]) for k in final)
