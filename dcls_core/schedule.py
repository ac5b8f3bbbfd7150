"""Label-aware noise schedule of DiffusionCLS (paper Eqs. 2-3).

The forward (noising) process is absorbing-state masking over T steps. The probability that
text token i is still *unmasked* at step t is

    q_t^i = clip(1 - t/T - lam * sin(pi * t / T) * w_i, 0, 1)

where w_i is the token's importance (Eq. 1, ``dcls_core.importance``). Tokens that matter
most for the label lose their identity earlier in the forward process and are therefore
rebuilt last in the reverse process.

We follow the paper's *marginal* schedule (see METHOD.md): one uniform u_i ~ U(0, 1) is
drawn per token and token i is masked at step t iff ``u_i >= q_t^i``. Because the clipped
q_t^i is non-increasing in t for every ``lam * w_i >= 0`` (where the unclipped curve rises
again near t = T it is negative, so the clip holds it at 0), masks built from the same
u are nested across steps: a token masked at step t stays masked at every later step. The
authors' code instead applied ``1 - q_t`` as a per-step masking rate, which masks 97-100 %
of tokens at the steps they used; that variant is deliberately not implemented here.

Positions that are not ``maskable`` (special tokens, the label prompt, padding) are never
masked.
"""
from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Union

import torch

log = logging.getLogger(__name__)

Steps = Union[int, Sequence[int], torch.Tensor]


def keep_probability(importance: torch.Tensor, t: Union[int, float, torch.Tensor], T: int,
                     lam: float) -> torch.Tensor:
    """q_t (Eq. 3): probability that a token is still unmasked at step ``t``, elementwise.

    ``t`` may be a number or a tensor broadcastable against ``importance`` (e.g. ``t[:, None]``
    for one step per row, or ``t[:, None, None]`` against ``importance[None]`` for a stack of
    steps). With ``lam = 0`` this is the plain linear schedule ``1 - t/T``.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    w = importance.float()
    if not torch.is_tensor(t):
        t = torch.tensor(float(t), device=w.device)
    frac = t.to(device=w.device, dtype=torch.float32) / float(T)
    # sin(pi x) evaluated as sin(pi min(x, 1 - x)): exactly 0 at t = T in float32 (plain
    # sin(pi) is -8.7e-8 there and would leave q_T slightly above 0)
    sine = torch.sin(math.pi * torch.minimum(frac, 1.0 - frac))
    q = 1.0 - frac - lam * sine * w
    return q.clamp(0.0, 1.0)


def _as_steps(steps: Steps, device: torch.device) -> torch.Tensor:
    if torch.is_tensor(steps):
        out = steps.to(device=device, dtype=torch.long).reshape(-1)
    elif isinstance(steps, int):
        out = torch.tensor([steps], dtype=torch.long, device=device)
    else:
        out = torch.tensor(list(steps), dtype=torch.long, device=device)
    return out


def _uniforms(shape: torch.Size, generator: Optional[torch.Generator],
              device: torch.device) -> torch.Tensor:
    """U(0, 1) draws from the (CPU or same-device) seeded generator, moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def forward_masks(importance: torch.Tensor, maskable: torch.Tensor, steps: Steps, T: int,
                  lam: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Masks of the forward process at several steps at once: bool [S, B, L].

    One uniform per token is shared by all steps, so ``masks[a]`` is a subset of
    ``masks[b]`` whenever ``steps[a] <= steps[b]`` (nested, absorbing). ``maskable`` (bool
    [B, L]) is False on special tokens, the label prompt and padding: those are never
    masked.
    """
    if importance.shape != maskable.shape:
        raise ValueError(f"importance {tuple(importance.shape)} and maskable "
                         f"{tuple(maskable.shape)} must have the same shape")
    device = importance.device
    t = _as_steps(steps, device)
    u = _uniforms(importance.shape, generator, device)
    q = keep_probability(importance.unsqueeze(0), t.view(-1, *([1] * importance.dim())), T, lam)
    return (u.unsqueeze(0) >= q) & maskable.bool().unsqueeze(0)


def sample_t(batch_size: int, T: int, generator: Optional[torch.Generator],
             device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """One diffusion step per example, uniform over 1..T (LongTensor [B])."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    t = torch.randint(1, T + 1, (batch_size,), generator=generator, device=gen_device)
    return t.to(device)


def training_mask(importance: torch.Tensor, maskable: torch.Tensor, t: torch.Tensor, T: int,
                  lam: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Mask for one training batch, each row at its own step ``t[b]``: bool [B, L].

    A row can end up with no masked position (short text at a small t: q_t is close to 1).
    That is expected and harmless: such a row simply contributes nothing to the
    masked-token cross-entropy (``diffusion.diffusion_loss`` counts these rows in its stats).
    """
    if t.dim() != 1 or t.shape[0] != importance.shape[0]:
        raise ValueError(f"t must be a 1-D tensor with one step per row, got {tuple(t.shape)}")
    device = importance.device
    u = _uniforms(importance.shape, generator, device)
    q = keep_probability(importance, t.to(device).view(-1, *([1] * (importance.dim() - 1))), T, lam)
    return (u >= q) & maskable.bool()


def group_steps(T: int, group_size: int, group_index: int) -> List[int]:
    """Steps of a 1-based step group: T=32, size 4, index 4 -> [13, 14, 15, 16].

    The paper splits T into T/size groups of consecutive steps and draws one pseudo sample
    per step of the chosen group (the 4th group of 8 works best).
    """
    if group_size < 1 or T % group_size != 0:
        raise ValueError(f"group_size={group_size} must be >= 1 and divide T={T}")
    if not 1 <= group_index <= T // group_size:
        raise ValueError(f"group_index={group_index} must be in 1..{T // group_size}")
    start = (group_index - 1) * group_size + 1
    return list(range(start, start + group_size))
