"""Classifier training with the noise-resistant objective (proxy and final classifier).

The pieces (``make_loader``, ``train_epoch``, ``predict``, ``evaluate``) are plain PyTorch
so a Ray Train loop can reuse them (``ray.train.torch.prepare_data_loader`` /
``prepare_model`` wrap what ``make_loader`` and ``load_classifier`` return);
``fit_classifier`` is the single-process loop built from them.

Frames follow the project schema ``id, text, label, split`` (label = class name) and,
for pseudo samples, ``is_pseudo`` (+ provenance columns, ignored here). Label names are
a plain ``list[str]`` in id order (``LabelVocab``'s order).

Modes of ``fit_classifier``:

* ``static``: originals + ``pseudo_df`` (generated once, beforehand) every epoch;
* ``reflective``: every ``regenerate_every`` (R) epochs, ``regenerate(model)`` is called
  with the classifier being trained and returns a fresh ``pseudo_df`` (the caller
  recomputes token importance with that classifier and regenerates); it is also called
  before the first epoch when no ``pseudo_df`` is given. So with ``pseudo_df=None`` it
  runs before epochs 1, R+1, 2R+1, ... and with a given ``pseudo_df`` before R+1, 2R+1, ...

Model selection looks at the dev frame's macro-F1 only (a frame with ``split == "test"``
rows is refused as dev data); the best-dev weights are restored at the end.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from dcls_core.config import ClassifierConfig
from dcls_core.evaluation import classification_metrics
from dcls_core.losses import first_token_representation, noise_resistant_loss

log = logging.getLogger(__name__)

__all__ = [
    "set_seed", "encode", "make_loader", "train_epoch", "predict", "evaluate",
    "FitResult", "fit_classifier", "train_proxy", "combine_frames",
]

Regenerate = Callable[[nn.Module], pd.DataFrame]
OnEpoch = Callable[[Dict[str, Any], nn.Module], None]


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _is_original(frame: pd.DataFrame) -> np.ndarray:
    if "is_pseudo" not in frame.columns:
        return np.ones(len(frame), dtype=bool)
    pseudo = frame["is_pseudo"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return ~pseudo


def encode(frame: pd.DataFrame, tokenizer, label_names: Sequence[str], max_length: int,
           with_labels: bool = True) -> List[Dict[str, Any]]:
    """Tokenise a frame into examples {input_ids, labels, is_original} (unpadded lists).

    Labels are mapped through ``label_names`` (ValueError on an unknown name); with
    ``with_labels=False`` the label column is not read (labels = -1).
    """
    texts = frame["text"].astype(str).tolist()
    if with_labels:
        index = {name: i for i, name in enumerate(label_names)}
        names = frame["label"].astype(str).tolist()
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not in label_names {list(label_names)}")
        label_ids = [index[n] for n in names]
    else:
        label_ids = [-1] * len(texts)
    original = _is_original(frame)
    if not texts:
        return []
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return [
        {"input_ids": list(ids), "labels": lab, "is_original": bool(orig)}
        for ids, lab, orig in zip(enc["input_ids"], label_ids, original)
    ]


def _collate(pad_id: int) -> Callable[[List[Dict[str, Any]]], Dict[str, torch.Tensor]]:
    def collate(examples: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[row, :n] = torch.tensor(e["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
            "is_original": torch.tensor([e["is_original"] for e in examples], dtype=torch.bool),
        }
    return collate


def make_loader(frame: pd.DataFrame, tokenizer, label_names: Sequence[str], max_length: int,
                batch_size: int, shuffle: bool, seed: int = 0, with_labels: bool = True) -> DataLoader:
    """A DataLoader of padded batches {input_ids, attention_mask, labels, is_original}.

    Shuffling draws from a generator seeded with ``seed``, so the batch order (across all
    epochs iterated on the same loader) is a function of the seed only.
    """
    examples = encode(frame, tokenizer, label_names, max_length, with_labels=with_labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(examples, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=_collate(pad_id), num_workers=0)


def _forward(model: nn.Module, batch: Dict[str, torch.Tensor], hidden: bool):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 output_hidden_states=hidden, return_dict=True)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                alpha: float, tau: float, scheduler: Optional[Any] = None,
                max_grad_norm: Optional[float] = 1.0, progress_seconds: float = 60.0) -> Dict[str, float]:
    """One pass over ``loader`` minimising L_e + alpha * L_c; returns mean {loss, ce, contrastive}
    (weighted by batch size) and ``batches``. Logs progress every ``progress_seconds``."""
    model.train()
    device = _model_device(model)
    sums = {"loss": 0.0, "ce": 0.0, "contrastive": 0.0}
    seen = 0
    batches = 0
    started = last_log = time.monotonic()
    for batch in loader:
        if time.monotonic() - last_log >= progress_seconds:  # long epochs (a judge on 67k rows) show progress
            last_log = time.monotonic()
            log.info("batch %d/%d (%.0fs), loss %.4f", batches, len(loader), last_log - started,
                     sums["loss"] / max(1, seen))
        batch = {k: v.to(device) for k, v in batch.items()}
        out = _forward(model, batch, hidden=True)
        h = first_token_representation(out)
        loss, parts = noise_resistant_loss(out.logits, h, batch["labels"], batch["is_original"],
                                           alpha=alpha, tau=tau)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = int(batch["labels"].shape[0])
        for key in sums:
            sums[key] += parts[key] * n
        seen += n
        batches += 1
    if seen == 0:
        raise ValueError("train_epoch got an empty loader")
    result = {k: v / seen for k, v in sums.items()}
    result["batches"] = batches
    return result


@torch.no_grad()
def predict(model: nn.Module, frame: pd.DataFrame, tokenizer, label_names: Sequence[str],
            max_length: int, batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """(predicted ids int64 [N], class probabilities float32 [N, C]) in frame order.

    Only the ``text`` column is read. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = _model_device(model)
    loader = make_loader(frame, tokenizer, label_names, max_length, batch_size, shuffle=False,
                         with_labels=False)
    probs: List[np.ndarray] = []
    try:
        for batch in loader:
            out = model(input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device), return_dict=True)
            probs.append(torch.softmax(out.logits.float(), dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(label_names)), dtype=np.float32)
    p = np.concatenate(probs).astype(np.float32)
    return p.argmax(axis=1).astype(np.int64), p


def evaluate(model: nn.Module, frame: pd.DataFrame, tokenizer, label_names: Sequence[str],
             max_length: int, batch_size: int = 64) -> Dict[str, Any]:
    """``classification_metrics`` of the model's predictions on ``frame``."""
    pred, _ = predict(model, frame, tokenizer, label_names, max_length, batch_size)
    return classification_metrics(frame["label"].astype(str).tolist(), pred.tolist(), list(label_names))


@dataclass
class FitResult:
    model: nn.Module  # best-dev weights restored
    history: List[Dict[str, Any]]
    best_epoch: int  # 1-based; 0 if no dev evaluation ran
    best_dev_metrics: Optional[Dict[str, Any]]
    pseudo_df: Optional[pd.DataFrame] = field(default=None, repr=False)  # last pseudo set used


def combine_frames(train_df: pd.DataFrame, pseudo_df: Optional[pd.DataFrame]) -> pd.DataFrame:
    """Originals + pseudo samples in one frame (pseudo rows get ``is_pseudo=True``)."""
    base = train_df.copy()
    if "is_pseudo" not in base.columns:
        base["is_pseudo"] = False
    if pseudo_df is None or len(pseudo_df) == 0:
        return base.reset_index(drop=True)
    pseudo = pseudo_df.copy()
    pseudo["is_pseudo"] = True
    return pd.concat([base, pseudo], ignore_index=True, sort=False)


def _check_dev(dev_df: Optional[pd.DataFrame]) -> None:
    if dev_df is None:
        return
    if "split" in dev_df.columns and (dev_df["split"].astype(str) == "test").any():
        raise ValueError("dev_df holds rows of the test split: model selection must use dev data only")


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return max(0.0, (total_steps - step) / span)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit_classifier(model: nn.Module, tokenizer, train_df: pd.DataFrame,
                   dev_df: Optional[pd.DataFrame], label_names: Sequence[str],
                   cfg: ClassifierConfig, max_length: int, seed: int,
                   pseudo_df: Optional[pd.DataFrame] = None, mode: str = "static",
                   regenerate: Optional[Regenerate] = None, regenerate_every: int = 1,
                   epochs: Optional[int] = None, lr: Optional[float] = None,
                   on_epoch: Optional[OnEpoch] = None, alpha: Optional[float] = None,
                   tau: Optional[float] = None, schedule: str = "constant",
                   warmup_ratio: float = 0.0, max_grad_norm: Optional[float] = 1.0,
                   eval_batch_size: int = 64) -> FitResult:
    """Train ``model`` on originals (+ pseudo samples) with L_e + alpha * L_c; select on dev macro-F1.

    ``alpha``/``tau``/``epochs``/``lr`` default to ``cfg``. ``schedule``: ``constant`` or
    ``linear`` (warm-up over ``warmup_ratio`` of the steps, then linear decay to 0).
    ``on_epoch(record, model)`` is called after each epoch with the history record (for
    Ray Train/Tune reporting). Dev is evaluated every ``cfg.eval_every`` epochs and after
    the last; ties keep the earlier epoch. Without ``dev_df`` the last weights are kept.
    """
    if mode not in ("static", "reflective"):
        raise ValueError(f"mode must be 'static' or 'reflective', got {mode!r}")
    if mode == "reflective" and regenerate is None:
        raise ValueError("reflective mode needs a regenerate(model) -> pseudo_df callback")
    if regenerate_every < 1:
        raise ValueError(f"regenerate_every must be >= 1, got {regenerate_every}")
    if schedule not in ("constant", "linear"):
        raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    _check_dev(dev_df)
    if dev_df is not None and len(dev_df) == 0:
        dev_df = None
    if dev_df is None:
        log.warning("fit_classifier without dev data: no model selection, the last epoch is kept")
    n_epochs = int(epochs if epochs is not None else cfg.epochs)
    if n_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {n_epochs}")
    lr_ = float(lr if lr is not None else cfg.lr)
    alpha_ = float(cfg.alpha if alpha is None else alpha)
    tau_ = float(cfg.tau if tau is None else tau)
    eval_every = max(1, int(getattr(cfg, "eval_every", 1)))
    names = list(label_names)

    set_seed(seed)
    optimizer = _optimizer(model, lr_, cfg.weight_decay)
    scheduler = None
    current_pseudo = pseudo_df
    loader: Optional[DataLoader] = None
    history: List[Dict[str, Any]] = []
    best_f1 = -math.inf
    best_epoch = 0
    best_metrics: Optional[Dict[str, Any]] = None
    best_state: Optional[Dict[str, torch.Tensor]] = None

    for epoch in range(1, n_epochs + 1):
        regenerated = False
        if mode == "reflective" and (epoch - 1) % regenerate_every == 0 and (
                epoch > 1 or pseudo_df is None):
            log.info("epoch %d: regenerating pseudo samples with the current classifier", epoch)
            current_pseudo = regenerate(model)
            regenerated = True
            loader = None
        if loader is None:
            frame = combine_frames(train_df, current_pseudo)
            loader = make_loader(frame, tokenizer, names, max_length, cfg.batch_size, shuffle=True,
                                 seed=seed + epoch)
            n_train = len(frame)
            n_pseudo = int((~_is_original(frame)).sum())
        if schedule == "linear" and scheduler is None:
            total = len(loader) * n_epochs
            scheduler = _linear_schedule(optimizer, int(round(warmup_ratio * total)), total)
        stats = train_epoch(model, loader, optimizer, alpha_, tau_, scheduler=scheduler,
                            max_grad_norm=max_grad_norm)
        record: Dict[str, Any] = {
            "epoch": epoch, "loss": stats["loss"], "ce": stats["ce"], "contrastive": stats["contrastive"],
            "n_train": n_train, "n_pseudo": n_pseudo, "regenerated": regenerated,
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        if dev_df is not None and (epoch % eval_every == 0 or epoch == n_epochs):
            metrics = evaluate(model, dev_df, tokenizer, names, max_length, eval_batch_size)
            record["dev_accuracy"] = metrics["accuracy"]
            record["dev_macro_f1"] = metrics["macro_f1"]
            if metrics["macro_f1"] > best_f1:
                best_f1 = metrics["macro_f1"]
                best_epoch = epoch
                best_metrics = metrics
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        log.info("epoch %d/%d loss=%.4f ce=%.4f lc=%.4f%s", epoch, n_epochs, stats["loss"], stats["ce"],
                 stats["contrastive"],
                 f" dev_macro_f1={record['dev_macro_f1']:.4f}" if "dev_macro_f1" in record else "")
        history.append(record)
        if on_epoch is not None:
            on_epoch(copy.deepcopy(record), model)

    if best_state is not None:
        model.load_state_dict(best_state)
        log.info("restored best-dev weights of epoch %d (macro-F1 %.4f)", best_epoch, best_f1)
    else:
        best_epoch = n_epochs if dev_df is None else 0
    model.eval()
    return FitResult(model=model, history=history, best_epoch=best_epoch,
                     best_dev_metrics=best_metrics, pseudo_df=current_pseudo)


def train_proxy(model: nn.Module, tokenizer, train_df: pd.DataFrame, dev_df: Optional[pd.DataFrame],
                label_names: Sequence[str], cfg: ClassifierConfig, max_length: int, seed: int,
                on_epoch: Optional[OnEpoch] = None) -> FitResult:
    """The proxy classifier: plain cross-entropy (alpha = 0) on originals only,
    ``cfg.proxy_epochs`` epochs at ``cfg.proxy_lr``."""
    originals = train_df[_is_original(train_df)]
    if len(originals) < len(train_df):
        log.info("train_proxy: ignoring %d pseudo rows", len(train_df) - len(originals))
    return fit_classifier(model, tokenizer, originals, dev_df, label_names, cfg, max_length, seed,
                          pseudo_df=None, mode="static", epochs=cfg.proxy_epochs, lr=cfg.proxy_lr,
                          alpha=0.0, on_epoch=on_epoch)
