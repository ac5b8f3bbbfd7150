"""The generator: a time-agnostic, label-prompted masked-LM trained as a discrete diffusion LM.

Training (paper Sec. 3, component 5): for each example sample t ~ U{1..T}, mask its text
tokens with the label-aware schedule (``schedule.training_mask``, Eqs. 2-3, driven by the
token importance of Eq. 1), and predict the original tokens at the masked positions
(cross-entropy on masked positions only). There is no timestep input: the masking level is
visible to the model through the number of mask tokens. The label prompt is never masked
and never in the loss.

The per-batch pieces (``GeneratorCollator``, ``diffusion_loss``, ``generator_step``) are
separate from the loop (``train_generator``) so that a distributed trainer (Ray Train)
can reuse them with its own data sharding.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dcls_core.config import GeneratorConfig
from dcls_core.models import masked_lm_logits
from dcls_core.prompting import encode_prompted, place_importance
from dcls_core.schedule import sample_t, training_mask

log = logging.getLogger(__name__)

ImportanceLike = Union[None, Mapping[str, Sequence[float]], Sequence[Optional[Sequence[float]]],
                       pd.Series]


def importance_for_frame(frame: pd.DataFrame, importance: ImportanceLike
                         ) -> List[Optional[List[float]]]:
    """Per-row importance lists for ``frame`` (one list of per-text-token floats per row).

    Accepts None (no importance: the plain linear schedule), a mapping ``id -> list``
    (rows whose id is missing get None), a pandas Series indexed like ``frame`` or by id,
    or a sequence aligned with the rows of ``frame`` by position.
    """
    n = len(frame)
    if importance is None:
        return [None] * n
    ids = frame["id"].astype(str).tolist()
    if isinstance(importance, pd.Series):
        if importance.index.equals(frame.index):
            values = importance.tolist()
        else:
            importance = importance.to_dict()
            values = [importance.get(i) for i in ids]
    elif isinstance(importance, Mapping):
        values = [importance.get(i) for i in ids]
    else:
        values = list(importance)
        if len(values) != n:
            raise ValueError(f"importance has {len(values)} rows, the frame {n}")
    return [None if v is None else [float(x) for x in v] for v in values]


class GeneratorDataset(Dataset):
    """Rows of a schema frame (``text``, ``label``) with their optional importance lists."""

    def __init__(self, frame: pd.DataFrame, importance: ImportanceLike = None) -> None:
        self.texts = frame["text"].astype(str).tolist()
        self.labels = frame["label"].astype(str).tolist()
        self.importance = importance_for_frame(frame, importance)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return {"text": self.texts[idx], "label": self.labels[idx],
                "importance": self.importance[idx]}


class GeneratorCollator:
    """Items -> a prompted batch: ``input_ids``, ``attention_mask``, ``maskable``,
    ``importance`` (float, aligned to the prompted layout) and ``mask_token_id`` (int)."""

    def __init__(self, tokenizer, label_token_ids: Mapping[str, int], max_length: int) -> None:
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token; a masked-LM tokenizer is needed")
        self.tokenizer = tokenizer
        self.label_token_ids = dict(label_token_ids)
        self.max_length = max_length

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        batch = encode_prompted(self.tokenizer, [it["text"] for it in items],
                                [it["label"] for it in items], self.label_token_ids,
                                self.max_length)
        per_text = [it.get("importance") for it in items]
        batch["importance"] = place_importance(per_text, batch)
        batch["mask_token_id"] = int(self.tokenizer.mask_token_id)
        return batch


def batch_to(batch: Mapping[str, Any], device: Union[str, torch.device]) -> Dict[str, Any]:
    """Move the tensors of a batch to ``device`` (other values are kept as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def corrupt_batch(batch: Mapping[str, Any], T: int, lam: float,
                  generator: Optional[torch.Generator],
                  t: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward process on a training batch: ``(noisy_ids, masked, t)``.

    ``t`` (one step per row) is sampled uniformly from 1..T unless given. Importance
    missing from the batch means zeros (the plain linear schedule ``1 - t/T``).
    """
    input_ids = batch["input_ids"]
    maskable = batch["maskable"].bool()
    importance = batch.get("importance")
    if importance is None:
        importance = torch.zeros(maskable.shape, dtype=torch.float32, device=maskable.device)
    if t is None:
        t = sample_t(input_ids.shape[0], T, generator, device=input_ids.device)
    masked = training_mask(importance.to(input_ids.device), maskable, t, T, lam, generator)
    noisy = input_ids.masked_fill(masked, int(batch["mask_token_id"]))
    return noisy, masked, t


def diffusion_loss(model: nn.Module, batch: Mapping[str, Any], T: int, lam: float,
                   generator: Optional[torch.Generator],
                   logits_fn: Optional[Callable[..., torch.Tensor]] = None,
                   ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Masked-token cross-entropy of one batch at per-example steps t ~ U{1..T}.

    Only masked positions are projected to the vocabulary (``models.masked_lm_logits``),
    which is most of the cost saving on CPU; the loss is the mean over masked tokens of
    the batch. Rows left without any masked position (short text, small t) contribute
    nothing; if the whole batch has none, the loss is a differentiable zero so that every
    data-parallel worker still runs a backward pass. ``logits_fn(ids, attention_mask,
    positions)`` replaces ``masked_lm_logits(model, ...)`` when the model is wrapped (DDP,
    DeepSpeed) and its MLM head cannot be reached through the wrapper.
    """
    noisy, masked, t = corrupt_batch(batch, T, lam, generator)
    if logits_fn is None:
        logits = masked_lm_logits(model, noisy, batch["attention_mask"], masked)
    else:
        logits = logits_fn(noisy, batch["attention_mask"], masked)
    targets = batch["input_ids"][masked]
    n_masked = int(masked.sum())
    if n_masked == 0:
        loss = logits.sum() * 0.0
    else:
        loss = nn.functional.cross_entropy(logits.float(), targets)
    n_maskable = int(batch["maskable"].sum())
    stats = {"loss": float(loss.detach()), "n_masked": float(n_masked),
             "mask_ratio": n_masked / max(n_maskable, 1),
             "rows_without_mask": float(int((masked.sum(1) == 0).sum())),
             "t_mean": float(t.float().mean())}
    return loss, stats


def generator_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Mapping[str, Any],
                   T: int, lam: float, generator: Optional[torch.Generator],
                   max_grad_norm: Optional[float] = 1.0) -> Dict[str, float]:
    """One optimisation step on one batch (already on the model's device): loss, backward,
    clip, step. Kept apart from the loop so Ray Train workers can call it."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, stats = diffusion_loss(model, batch, T, lam, generator)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return stats


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """AdamW (paper: weight decay 0.01); no decay on biases and LayerNorm weights (the
    classifier's parameter groups and optimiser: ``dcls_core.training``)."""
    from dcls_core.training import adamw, optimizer_groups

    return adamw(optimizer_groups(model, weight_decay), lr=lr)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_generator(model: nn.Module, tokenizer, frame: pd.DataFrame, importance: ImportanceLike,
                    label_token_ids: Mapping[str, int], cfg: GeneratorConfig, seed: int,
                    epochs: Optional[int] = None, max_steps: Optional[int] = None,
                    log_every: int = 50, max_length: int = 128,
                    weight_decay: float = 0.01) -> Dict[str, Any]:
    """Train the diffusion LM on ``frame`` (a plain single-process loop, AdamW, lr ``cfg.lr``).

    ``importance`` is per-text-token importance of each row (see ``importance_for_frame``);
    None trains with the plain linear schedule. Shuffling and masking are drawn from
    generators seeded by ``seed``. Returns ``epoch_losses`` (mean batch loss per epoch),
    ``steps``, ``examples`` and ``seconds``. The model is left in eval mode.
    """
    if len(frame) == 0:
        raise ValueError("cannot train the generator on an empty frame")
    device = _device(model)
    dataset = GeneratorDataset(frame, importance)
    collator = GeneratorCollator(tokenizer, label_token_ids, max_length)
    shuffle_gen = torch.Generator().manual_seed(seed)
    mask_gen = torch.Generator().manual_seed(seed + 7919)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=shuffle_gen,
                        collate_fn=collator)
    epochs = cfg.epochs_for(len(loader)) if epochs is None else epochs
    optimizer = make_optimizer(model, cfg.lr, weight_decay)
    start = time.monotonic()
    epoch_losses: List[float] = []
    steps = 0
    done = False
    for epoch in range(epochs):
        losses: List[float] = []
        for batch in loader:
            stats = generator_step(model, optimizer, batch_to(batch, device), cfg.T, cfg.lam,
                                   mask_gen)
            losses.append(stats["loss"])
            steps += 1
            if log_every and steps % log_every == 0:
                log.info("generator step %d (epoch %d): loss %.4f, mask ratio %.2f",
                         steps, epoch + 1, stats["loss"], stats["mask_ratio"])
            if max_steps is not None and steps >= max_steps:
                done = True
                break
        epoch_losses.append(float(sum(losses) / max(len(losses), 1)))
        log.info("generator epoch %d/%d: mean loss %.4f", epoch + 1, epochs, epoch_losses[-1])
        if done:
            break
    model.eval()
    return {"epoch_losses": epoch_losses, "steps": steps, "examples": len(dataset),
            "seconds": time.monotonic() - start}
