"""Generator training (masked-token loss) and the reverse process / pseudo-sample generation."""
import copy

import pandas as pd
import pytest
import torch

import dcls_core.diffusion as diffusion
import dcls_core.generation as generation
from dcls_core.config import GeneratorConfig
from dcls_core.diffusion import (GeneratorCollator, GeneratorDataset, corrupt_batch,
                                 diffusion_loss, importance_for_frame, train_generator)
from dcls_core.generation import (PSEUDO_COLUMNS, forbidden_token_ids, generate_pseudo_samples,
                                  number_plan, plan_balance, plan_per_sample, reverse_fill,
                                  source_masks)
from dcls_core.models import load_masked_lm
from dcls_core.prompting import add_label_tokens, encode_prompted, place_importance

LABELS = ["positive", "negative"]


@pytest.fixture(scope="module")
def base_model(tiny_model_cfg):
    """The tiny masked LM, loaded once per module (tests deep-copy it)."""
    return load_masked_lm(tiny_model_cfg, seed=0)


@pytest.fixture(scope="module")
def setup(tokenizer, base_model):
    """Private tokenizer copy + tiny masked LM, both with the label tokens added."""
    tok = copy.deepcopy(tokenizer)
    model = copy.deepcopy(base_model)
    ids = add_label_tokens(tok, model, LABELS)
    model.eval()
    return tok, model, ids


def _frame(n_pos=3, n_neg=2):
    texts = ["the film was great and the cast was superb", "a wonderful little story",
             "i loved every minute of it", "the plot was dull and the acting awful",
             "boring", "a terrible waste of two hours", "nothing happens at all"]
    rows = []
    for i in range(n_pos):
        rows.append({"id": f"s{i}", "text": texts[i % 3], "label": "positive", "split": "train"})
    for j in range(n_neg):
        rows.append({"id": f"s{n_pos + j}", "text": texts[3 + j % 4], "label": "negative",
                     "split": "train"})
    return pd.DataFrame(rows)


def _batch(tok, ids, frame, importance=None, max_length=32):
    ds = GeneratorDataset(frame, importance)
    return GeneratorCollator(tok, ids, max_length)([ds[i] for i in range(len(ds))])


# ----------------------------------------------------------------------------- training loss

def test_corrupt_batch_masks_text_only_and_uses_mask_token(setup):
    tok, _, ids = setup
    batch = _batch(tok, ids, _frame())
    b = batch["input_ids"].shape[0]
    noisy, masked, t = corrupt_batch(batch, 32, 0.5, torch.Generator().manual_seed(0),
                                     t=torch.full((b,), 32))
    assert torch.equal(masked, batch["maskable"])  # t = T: every text token, nothing else
    assert bool((noisy[masked] == tok.mask_token_id).all())
    assert torch.equal(noisy[~masked], batch["input_ids"][~masked])
    assert bool((noisy[:, 1] == batch["input_ids"][:, 1]).all())  # the prompt stays


def test_diffusion_loss_only_on_masked_text_positions(setup, monkeypatch):
    tok, model, ids = setup
    frame = _frame()
    importance = [[0.9] + [0.0] * 20 for _ in range(len(frame))]
    batch = _batch(tok, ids, frame, importance)
    assert float(batch["importance"][batch["maskable"]].max()) == pytest.approx(0.9)
    assert not bool(batch["importance"][~batch["maskable"]].any())
    seen = []
    real = diffusion.masked_lm_logits

    def spy(m, input_ids, attention_mask, positions):
        seen.append(positions.clone())
        return real(m, input_ids, attention_mask, positions)

    monkeypatch.setattr(diffusion, "masked_lm_logits", spy)
    for seed in range(5):
        loss, stats = diffusion_loss(model, batch, 32, 0.5, torch.Generator().manual_seed(seed))
        assert torch.isfinite(loss) and stats["n_masked"] > 0
    for pos in seen:
        assert not bool((pos & ~batch["maskable"]).any())  # never prompt/special/padding
        assert not bool(pos[batch["prompt_mask"]].any())


def test_diffusion_loss_is_cross_entropy_at_masked_positions(setup):
    tok, model, ids = setup
    batch = _batch(tok, ids, _frame())
    loss, stats = diffusion_loss(model, batch, 32, 0.5, torch.Generator().manual_seed(3))
    noisy, masked, _ = corrupt_batch(batch, 32, 0.5, torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(input_ids=noisy, attention_mask=batch["attention_mask"]).logits
    expected = torch.nn.functional.cross_entropy(logits[masked], batch["input_ids"][masked])
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-4)
    assert stats["n_masked"] == int(masked.sum())
    assert stats["mask_ratio"] == pytest.approx(int(masked.sum()) / int(batch["maskable"].sum()))


def test_diffusion_loss_without_masked_positions_is_zero_and_differentiable(setup):
    tok, model, ids = setup
    batch = _batch(tok, ids, _frame())
    batch = dict(batch, maskable=torch.zeros_like(batch["maskable"]))
    loss, stats = diffusion_loss(model, batch, 32, 0.5, torch.Generator().manual_seed(0))
    assert float(loss.detach()) == 0.0 and stats["rows_without_mask"] == len(_frame())
    loss.backward()
    model.zero_grad(set_to_none=True)


def test_importance_for_frame_accepts_mapping_series_and_sequence():
    frame = _frame(2, 1)
    seq = [[0.1], [0.2], [0.3]]
    assert importance_for_frame(frame, seq) == seq
    assert importance_for_frame(frame, {"s1": [0.5]}) == [None, [0.5], None]
    assert importance_for_frame(frame, pd.Series(seq, index=frame.index)) == seq
    assert importance_for_frame(frame, None) == [None] * 3
    with pytest.raises(ValueError):
        importance_for_frame(frame, [[0.1]])


# ----------------------------------------------------------------------------- reverse process

def _masked_batch(tok, ids, frame, step=16, seed=0):
    batch = encode_prompted(tok, frame["text"].tolist(), frame["label"].tolist(), ids, 32)
    imp = place_importance(None, batch)
    masked = source_masks(imp, batch["maskable"], batch["attention_mask"],
                          frame["id"].tolist(), [step] * len(frame), 32, 0.5, seed)
    return batch, masked, batch["input_ids"].masked_fill(masked, tok.mask_token_id)


@pytest.mark.parametrize("steps", [1, 3])
def test_reverse_fill_fills_every_mask_and_never_emits_forbidden(setup, steps):
    tok, model, ids = setup
    evil = copy.deepcopy(model)
    forbidden = forbidden_token_ids(tok, ids, evil.get_output_embeddings().weight.shape[0])
    assert {tok.mask_token_id, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id} <= set(forbidden)
    assert set(ids.values()) <= set(forbidden)
    with torch.no_grad():  # make the forbidden tokens overwhelmingly likely
        evil.cls.predictions.bias[torch.tensor(forbidden)] = 1e4
    batch, masked, noisy = _masked_batch(tok, ids, _frame(), step=20)
    assert int(masked.sum()) > 5
    out = reverse_fill(evil, noisy, batch["attention_mask"], masked, steps=steps, top_p=0.9,
                       forbidden_ids=forbidden, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[~masked], noisy[~masked])  # only masked positions change
    assert not bool(torch.isin(out[masked], torch.tensor(forbidden)).any())
    assert not bool((out == tok.mask_token_id).any())
    # the rigged model really prefers them: without the forbidden list they are emitted
    loose = reverse_fill(evil, noisy, batch["attention_mask"], masked, steps=steps,
                         generator=torch.Generator().manual_seed(0))
    assert bool(torch.isin(loose[masked], torch.tensor(forbidden)).all())


def test_reverse_fill_commits_most_confident_share_per_iteration(setup, monkeypatch):
    tok, model, ids = setup
    batch, masked, noisy = _masked_batch(tok, ids, _frame(1, 0), step=32)
    n = int(masked.sum())
    counts = []
    real = generation.masked_lm_logits

    def spy(m, input_ids, attention_mask, positions):
        counts.append(int(positions.sum()))
        return real(m, input_ids, attention_mask, positions)

    monkeypatch.setattr(generation, "masked_lm_logits", spy)
    reverse_fill(model, noisy, batch["attention_mask"], masked, steps=3,
                 forbidden_ids=forbidden_token_ids(tok, ids),
                 generator=torch.Generator().manual_seed(0))
    expected, left = [], n
    for it in range(3):
        expected.append(left)
        left -= -(-left // (3 - it))  # ceil(remaining / iterations left)
    assert counts == expected  # e.g. 9 -> 9, 6, 3


def test_reverse_fill_greedy_and_deterministic(setup):
    tok, model, ids = setup
    forbidden = forbidden_token_ids(tok, ids)
    batch, masked, noisy = _masked_batch(tok, ids, _frame())
    am = batch["attention_mask"]
    a = reverse_fill(model, noisy, am, masked, steps=2, generator=torch.Generator().manual_seed(5),
                     forbidden_ids=forbidden)
    b = reverse_fill(model, noisy, am, masked, steps=2, generator=torch.Generator().manual_seed(5),
                     forbidden_ids=forbidden)
    c = reverse_fill(model, noisy, am, masked, steps=2, generator=torch.Generator().manual_seed(6),
                     forbidden_ids=forbidden)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # top_k = 1 with one pass is the argmax over allowed tokens
    greedy = reverse_fill(model, noisy, am, masked, steps=1, top_k=1, forbidden_ids=forbidden,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=noisy, attention_mask=am).logits
    logits[..., torch.tensor(forbidden)] = float("-inf")
    assert torch.equal(greedy[masked], logits.argmax(-1)[masked])


# ----------------------------------------------------------------------------- plans

def test_plan_per_sample_one_per_step_of_the_group():
    frame = _frame(3, 2)
    plan = plan_per_sample(frame, 4, [13, 14, 15, 16])
    assert len(plan) == 4 * len(frame)
    for i in range(len(frame)):
        assert sorted(s for r, s in plan if r == i) == [13, 14, 15, 16]
    assert len(plan_per_sample(frame, 6, [13, 14, 15, 16])) == 30
    assert plan_per_sample(frame, 0, [13]) == []


def test_number_plan_counts_items_per_row():
    assert number_plan([(0, 13), (1, 13), (0, 14), (0, 15)]) == [
        (0, 13, 0), (1, 13, 0), (0, 14, 1), (0, 15, 2)]
    assert number_plan([(0, 13, 5), (0, 14)]) == [(0, 13, 5), (0, 14, 6)]


def test_plan_balance_reaches_majority_count():
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(13)], "text": ["x"] * 13,
                          "label": ["a"] * 7 + ["b"] * 5 + ["c"] * 1, "split": "train"})
    steps = [13, 14, 15, 16]
    plan = plan_balance(frame, steps, seed=0)
    labels = frame["label"].tolist()
    after = pd.Series(labels + [labels[r] for r, _ in plan]).value_counts()
    assert set(after.tolist()) == {7}  # every class at the majority count
    assert len(plan) == 2 + 6
    assert all(s in steps for _, s in plan)
    b_rows = [r for r, _ in plan if labels[r] == "b"]
    assert len(set(b_rows)) == 2  # round-robin: distinct sources before any repeats
    c_steps = [s for r, s in plan if labels[r] == "c"]
    assert sorted(c_steps[:4]) == steps  # one source reused: its steps rotate
    assert plan_balance(frame, steps, seed=0) == plan
    balanced = pd.concat([frame[frame["label"] == "a"].head(5), frame[frame["label"] == "b"]])
    assert plan_balance(balanced, steps, seed=0) == []


# ----------------------------------------------------------------------------- generation

def test_source_masks_nested_across_steps_of_a_source(setup):
    tok, _, ids = setup
    frame = pd.DataFrame({"id": ["a"] * 32, "text": ["one two three four five six seven eight"] * 32,
                          "label": ["positive"] * 32})
    batch = encode_prompted(tok, frame["text"].tolist(), frame["label"].tolist(), ids, 32)
    imp = place_importance([[0.05 * k for k in range(8)]] * 32, batch)
    m = source_masks(imp, batch["maskable"], batch["attention_mask"], frame["id"].tolist(),
                     list(range(1, 33)), 32, 0.5, seed=3)
    for a in range(31):
        assert bool((m[a] <= m[a + 1]).all())
    assert torch.equal(m[-1], batch["maskable"][-1])  # t = T: all text tokens


def test_generate_pseudo_samples_schema_and_determinism(setup):
    tok, model, ids = setup
    frame = _frame(2, 1)
    cfg = GeneratorConfig(reverse_steps=2)  # T=32, 4th group of 4 steps, top-p 0.9
    steps = cfg.group_steps()
    plan = plan_per_sample(frame, 4, steps)
    importance = [[0.3] * 12 for _ in range(len(frame))]
    out = generate_pseudo_samples(model, tok, frame, importance, ids, cfg, plan, seed=7,
                                  batch_size=8)
    assert list(out.columns) == PSEUDO_COLUMNS and len(out) == len(plan)
    assert out["id"].is_unique
    assert out["id"].tolist()[:4] == ["s0~p0", "s0~p1", "s0~p2", "s0~p3"]
    assert out["label"].tolist() == [frame["label"][r] for r, _ in plan]
    assert out["source_id"].tolist() == [frame["id"][r] for r, _ in plan]
    assert out["step"].tolist() == [s for _, s in plan]
    assert (out["split"] == "train").all() and out["is_pseudo"].all()
    assert ((out["mask_ratio"] >= 0) & (out["mask_ratio"] <= 1)).all()
    assert (out["changed_ratio"] <= out["mask_ratio"] + 1e-9).all()  # only masks change
    assert (out["mask_ratio"] > 0).any() and (out["changed_ratio"] > 0).any()
    assert not out["text"].str.contains(r"\[MASK\]|\[CLS\]|\[SEP\]|<label:").any()
    # nested masks: per source, more masking at later steps
    for _, grp in out.groupby("source_id"):
        ratios = grp.sort_values("step")["mask_ratio"].tolist()
        assert ratios == sorted(ratios)
    # same seed, other batching, the plan numbered and split across two calls (as Ray Data
    # workers would see it): the same rows
    numbered = number_plan(plan)
    halves = [generate_pseudo_samples(model, tok, frame, importance, ids, cfg, part, seed=7,
                                      batch_size=bs) for part, bs in ((numbered[:5], 3),
                                                                      (numbered[5:], 32))]
    pd.testing.assert_frame_equal(pd.concat(halves, ignore_index=True), out)
    other = generate_pseudo_samples(model, tok, frame, importance, ids, cfg, plan[:4], seed=8)
    assert other["text"].tolist() != out["text"].tolist()[:4]


def test_generate_pseudo_samples_empty_plan(setup):
    tok, model, ids = setup
    out = generate_pseudo_samples(model, tok, _frame(), None, ids, GeneratorConfig(), [], seed=0)
    assert list(out.columns) == PSEUDO_COLUMNS and len(out) == 0


# ----------------------------------------------------------------------------- learning

POS = ["great", "wonderful", "superb", "excellent", "brilliant"]
NEG = ["awful", "terrible", "boring", "dreadful", "horrible"]
TEMPLATES = ["the film was {}", "a {} movie", "{}", "it is {}"]


@pytest.fixture()
def one_thread():
    """The box is shared: one intra-op thread is faster than two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_generator_learns_label_conditional_fills(tokenizer, base_model, one_thread):
    tok = copy.deepcopy(tokenizer)
    model = copy.deepcopy(base_model)
    ids = add_label_tokens(tok, model, LABELS)
    rows = [{"id": f"{lab[0]}{ti}{w}", "text": tpl.format(w), "label": lab, "split": "train"}
            for ti, tpl in enumerate(TEMPLATES)
            for lab, words in (("positive", POS), ("negative", NEG)) for w in words]
    frame = pd.DataFrame(rows)
    cfg = GeneratorConfig(lr=3e-3, batch_size=len(frame), epochs=300)
    stats = train_generator(model, tok, frame, None, ids, cfg, seed=0, log_every=0, max_length=16)
    assert stats["steps"] == 300
    assert stats["epoch_losses"][-1] < stats["epoch_losses"][0] / 5
    assert not model.training

    # mask only the sentiment slot of every template and let the prompt decide the word
    forbidden = forbidden_token_ids(tok, ids)
    for label, words, placeholder in (("positive", POS, "awful"), ("negative", NEG, "great")):
        texts = [tpl.format(placeholder) for tpl in TEMPLATES] * 10
        batch = encode_prompted(tok, texts, [label] * len(texts), ids, 16)
        slot = batch["input_ids"] == tok.convert_tokens_to_ids(placeholder)
        assert int(slot.sum()) == len(texts)
        noisy = batch["input_ids"].masked_fill(slot, tok.mask_token_id)
        out = reverse_fill(model, noisy, batch["attention_mask"], slot, steps=1,
                           forbidden_ids=forbidden, generator=torch.Generator().manual_seed(1))
        fills = tok.convert_ids_to_tokens(out[slot].tolist())
        share = sum(f in words for f in fills) / len(fills)
        assert share >= 0.8, (label, share, fills)


def _strict_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Reference in float64 by a full sort: keep a token when the mass of the tokens strictly
    more probable than it is <= top_p."""
    p = probs.double()
    asc, _ = p.sort(dim=-1)
    upto = asc.cumsum(dim=-1)  # mass of the tokens <= each sorted value
    at = torch.searchsorted(asc, p, right=True) - 1
    above = upto[:, -1:] - upto.gather(-1, at)
    return (above <= top_p) & (p > 0)


@pytest.mark.parametrize("sharpness", [0.01, 1.0, 8.0])
def test_nucleus_mask_keeps_the_full_sort_nucleus(sharpness):
    """Bucketing the mass by bit pattern and sorting only the boundary bucket keeps exactly the
    nucleus of a float64 full sort, ties at the boundary included, forbidden (p = 0) ids never."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 3000, generator=g) * sharpness
    logits[:5] *= 20  # a few very peaked rows in the same batch as flat ones
    logits[5:10, 100:140] = logits[5:10, 99:100]  # runs of tied probabilities
    logits[:, :7] = float("-inf")  # forbidden ids
    probs = torch.softmax(logits, dim=-1)
    for top_p in (0.5, 0.9):
        kept = generation.nucleus_mask(probs, top_p)
        assert torch.equal(kept, _strict_nucleus(probs, top_p))
        assert not kept[:, :7].any()


def test_nucleus_sampling_draws_the_nucleus_distribution_on_both_paths():
    """Inverse-CDF draws over a grid of M uniforms give each nucleus token M * p / P(nucleus)
    draws (+-1) and the rest none, whether a row draws from its sorted top-k (peaked) or in
    vocabulary order from the threshold (flat): the two paths sample the same distribution."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 200, generator=g) * torch.tensor([[0.3], [1.5], [6.0], [0.3]])
    logits[3, 17] = 5.0  # one likely token over a flat rest: a top-8 is tried and falls short
    probs = torch.softmax(logits, dim=-1)
    m = 4000
    u = (torch.arange(m, dtype=torch.float32) + 0.5) / m
    rows = probs.repeat_interleave(m, dim=0)
    grid = u.repeat(4)
    nucleus = _strict_nucleus(probs, 0.9)
    want = m * torch.where(nucleus, probs.double(), 0) / torch.where(nucleus, probs.double(), 0).sum(-1, keepdim=True)
    for widths in ((8,), (200,)):  # (8,): the threshold path for the flat rows; (200,): sorted only
        tokens = generation._nucleus_sample(rows, grid, 0.9, widths=widths).view(4, m)
        counts = torch.zeros(4, 200, dtype=torch.float64).scatter_add_(1, tokens, torch.ones(4, m, dtype=torch.float64))
        assert float((counts - want).abs().max()) <= 1.0 + 1e-6, widths
        assert not bool((counts[~nucleus] > 0).any())

def test_inverse_cdf_never_draws_a_zero_weight_column_even_at_u_0_and_1():
    w = torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1e-12, 0.0, 0.0]])
    for u in (0.0, 1.0, 0.5):
        picks = generation._inverse_cdf(w, torch.full((3,), u))
        assert bool((w.gather(-1, picks.unsqueeze(-1)) > 0).all()), (u, picks)
    assert generation._inverse_cdf(w, torch.ones(3)).tolist() == [2, 2, 1]  # the last column the cdf rises at
