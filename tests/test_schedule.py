"""Label-aware noise schedule (Eqs. 2-3): marginals, nesting, never-masked positions."""
import math

import pytest
import torch

from dcls_core.config import GeneratorConfig
from dcls_core.schedule import (forward_masks, group_steps, keep_probability, sample_t,
                                training_mask)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_keep_probability_matches_equation():
    w = torch.tensor([0.0, 0.25, 1.0])
    T, lam = 32, 0.5
    for t in (0, 5, 16, 31, 32):
        expected = [min(1.0, max(0.0, 1 - t / T - lam * math.sin(math.pi * t / T) * x))
                    for x in w.tolist()]
        assert keep_probability(w, t, T, lam).tolist() == pytest.approx(expected, abs=1e-6)
    # t as a tensor broadcast against importance: one step per row
    imp = torch.full((2, 3), 0.5)
    q = keep_probability(imp, torch.tensor([8, 24])[:, None], T, lam)
    assert q[0].tolist() == pytest.approx([1 - 0.25 - 0.25 * math.sin(math.pi / 4)] * 3, abs=1e-6)
    assert q[1].tolist() == pytest.approx([max(0.0, 1 - 0.75 - 0.25 * math.sin(3 * math.pi / 4))] * 3,
                                          abs=1e-6)


def test_lambda_zero_is_plain_linear_schedule():
    w = torch.rand(50, generator=_gen(1))
    for t in range(0, 33):
        assert torch.allclose(keep_probability(w, t, 32, 0.0), torch.full((50,), 1 - t / 32))


def test_importance_lowers_keep_probability_and_clips():
    q = keep_probability(torch.tensor([0.0, 0.5, 1.0]), 16, 32, 0.5)
    assert q[0] > q[1] > q[2]
    q_big = keep_probability(torch.tensor([5.0]), 16, 32, 1.0)
    assert float(q_big) == 0.0  # clipped, never negative
    assert float(keep_probability(torch.tensor([0.3]), 0, 32, 0.5)) == 1.0
    assert float(keep_probability(torch.tensor([0.3]), 32, 32, 0.5)) == 0.0


def test_keep_probability_non_increasing_in_t_for_any_importance():
    # the property that makes shared-uniform masks nested, incl. lam*w*pi > 1
    w = torch.linspace(0, 3, 61)
    for lam in (0.0, 0.5, 1.0, 2.0):
        q = torch.stack([keep_probability(w, t, 32, lam) for t in range(33)])
        assert bool((q[1:] <= q[:-1] + 1e-7).all()), lam


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.5])
def test_empirical_keep_frequency_matches_keep_probability(lam):
    n, T = 20000, 32
    w = torch.tensor([0.0, 0.1, 0.4, 0.9])
    importance = w.expand(n, 4).contiguous()
    maskable = torch.ones(n, 4, dtype=torch.bool)
    steps = [3, 10, 16, 22, 29]
    masks = forward_masks(importance, maskable, steps, T, lam, _gen(2))
    assert masks.shape == (len(steps), n, 4)
    for s, t in enumerate(steps):
        q = keep_probability(w, t, T, lam)
        freq = (~masks[s]).float().mean(0)
        sigma = torch.sqrt(q * (1 - q) / n).clamp(min=1e-4)
        assert bool(((freq - q).abs() <= 5 * sigma + 1e-3).all()), (t, freq, q)
    # the same marginals from training_mask with per-row t
    t_rows = torch.tensor([16] * n)
    kept = (~training_mask(importance, maskable, t_rows, T, lam, _gen(3))).float().mean(0)
    q = keep_probability(w, 16, T, lam)
    assert bool(((kept - q).abs() <= 5 * torch.sqrt(q * (1 - q) / n) + 1e-3).all())


def test_important_tokens_are_masked_first():
    n = 5000
    importance = torch.tensor([[0.0, 0.8]]).expand(n, 2).contiguous()
    masks = forward_masks(importance, torch.ones(n, 2, dtype=torch.bool), [8], 32, 0.5, _gen(4))
    rate = masks[0].float().mean(0)
    assert rate[1] > rate[0] + 0.2


def test_masks_are_nested_across_steps_and_absorbing():
    g = _gen(5)
    importance = torch.rand(64, 20, generator=g)
    maskable = torch.rand(64, 20, generator=g) > 0.2
    steps = list(range(0, 33))
    masks = forward_masks(importance, maskable, steps, 32, 0.5, _gen(6))
    for a in range(len(steps) - 1):
        assert bool((masks[a] <= masks[a + 1]).all())  # masked stays masked
    assert not bool(masks[0].any())  # t = 0: nothing masked
    assert torch.equal(masks[-1], maskable)  # t = T: every maskable token masked
    # steps given in any order are still consistent with the shared uniforms
    shuffled = forward_masks(importance, maskable, [20, 4], 32, 0.5, _gen(6))
    assert torch.equal(shuffled[0], masks[20]) and torch.equal(shuffled[1], masks[4])


def test_non_maskable_positions_never_masked():
    # layout [CLS] <label> [SEP] x x x [SEP] [PAD] [PAD]
    maskable = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool).expand(100, 9)
    importance = torch.ones(100, 9)  # even huge importance on specials/pads must not matter
    masks = forward_masks(importance, maskable, list(range(1, 33)), 32, 2.0, _gen(7))
    assert not bool(masks[:, ~maskable].any())
    tm = training_mask(importance, maskable, torch.full((100,), 32), 32, 2.0, _gen(8))
    assert torch.equal(tm, maskable)


def test_forward_masks_deterministic_for_seed():
    imp = torch.rand(4, 10, generator=_gen(9))
    mk = torch.ones(4, 10, dtype=torch.bool)
    a = forward_masks(imp, mk, [5, 15], 32, 0.5, _gen(10))
    b = forward_masks(imp, mk, [5, 15], 32, 0.5, _gen(10))
    c = forward_masks(imp, mk, [5, 15], 32, 0.5, _gen(11))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_forward_masks_shape_mismatch_raises():
    with pytest.raises(ValueError):
        forward_masks(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool), [1], 32, 0.5, _gen())


def test_group_steps_matches_paper_and_config():
    assert group_steps(32, 4, 4) == [13, 14, 15, 16]
    assert group_steps(32, 4, 1) == [1, 2, 3, 4]
    assert group_steps(32, 4, 8) == [29, 30, 31, 32]
    cfg = GeneratorConfig(T=32, group_size=4, group_index=4)
    assert group_steps(cfg.T, cfg.group_size, cfg.group_index) == cfg.group_steps()
    with pytest.raises(ValueError):
        group_steps(32, 4, 9)
    with pytest.raises(ValueError):
        group_steps(32, 5, 1)


def test_sample_t_uniform_over_one_to_T():
    t = sample_t(32000, 32, _gen(12))
    assert int(t.min()) == 1 and int(t.max()) == 32
    counts = torch.bincount(t, minlength=33)[1:].float()
    assert float(counts.min()) > 800 and float(counts.max()) < 1200  # ~1000 each
    assert torch.equal(sample_t(10, 32, _gen(13)), sample_t(10, 32, _gen(13)))


def test_training_mask_uses_each_rows_own_step():
    n = 4000
    importance = torch.zeros(n, 10)
    maskable = torch.ones(n, 10, dtype=torch.bool)
    t = torch.tensor([4, 28]).repeat(n // 2)
    m = training_mask(importance, maskable, t, 32, 0.5, _gen(14))
    rate_low = m[t == 4].float().mean()
    rate_high = m[t == 28].float().mean()
    assert abs(float(rate_low) - 4 / 32) < 0.02
    assert abs(float(rate_high) - 28 / 32) < 0.02
    with pytest.raises(ValueError):
        training_mask(importance, maskable, torch.tensor([1, 2]), 32, 0.5, _gen())
