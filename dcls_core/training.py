"""The one classifier training loop (proxy, raw / no-augmentation / augmented arms, judge).

``fit_classifier`` counts optimiser steps, not epochs: ``cfg.steps_for(n_originals)`` (epochs
over the originals with a floor of ``cfg.min_steps``: a 10-shot set is one or two batches an
epoch, and a few dozen steps teach a classifier nothing). Every step draws ``batch_size``
originals (seeded permutations, epoch after epoch) and each original brings
``pseudo_per_step`` of its own pseudo samples (rotating through them) into the same batch.
So the arms with and without augmentation take the same number of steps over the same
originals, in the same order, and L_c (over originals only) sees the same K per batch; the
augmented arm's batches are just larger.

The head starts as a logistic-regression probe (``cfg.head_init="probe"``, see
``dcls_core.classifier``); dev macro-F1 is measured at step 0 (the probe), every
``cfg.eval_every`` steps and at the end, and the best-dev weights are restored (ties keep the
earlier step). A dev frame with ``split == "test"`` rows is refused.

``Stepper`` hides where the optimiser runs: ``LocalStepper`` in one process (``dcls augment``,
tests, benchmarks), ``jobs.ray_train.Engine`` under Ray Train (DDP / DeepSpeed); both build
their optimiser from ``optimizer_groups`` (no weight decay on biases and LayerNorm weights).
With ``world > 1`` each rank trains on its strided share of every global batch.

Modes: ``static`` (``pseudo_df`` fixed) or ``reflective`` (``regenerate(model)`` returns a fresh
``pseudo_df`` every ``regenerate_every`` epochs' worth of steps, and before step 1 when no
``pseudo_df`` is given).
"""
from __future__ import annotations

import copy
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from dcls_core.artifacts import sort_rows
from dcls_core.config import ClassifierConfig
from dcls_core.evaluation import classification_metrics
from dcls_core.losses import noise_resistant_loss

log = logging.getLogger(__name__)

__all__ = [
    "set_seed", "encode", "make_loader", "predict", "evaluate", "optimizer_groups", "adamw", "LocalStepper",
    "FitResult", "fit_classifier", "train_proxy", "combine_frames", "batch_plan", "probe_frame",
]

Regenerate = Callable[[nn.Module], pd.DataFrame]
OnEval = Callable[[Dict[str, Any], nn.Module], None]


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
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
            "is_original": torch.tensor([e["is_original"] for e in examples], dtype=torch.bool),
        }
        if all("source" in e for e in examples):  # each row's original (its index in the batch plan)
            batch["source"] = torch.tensor([e["source"] for e in examples], dtype=torch.long)
        return batch
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


def predict(model: nn.Module, frame: pd.DataFrame, tokenizer, label_names: Sequence[str],
            max_length: int, batch_size: int = 64, features: bool = False) -> Tuple[np.ndarray, ...]:
    """(predicted ids int64 [N], class probabilities float32 [N, C]) in frame order; with
    ``features`` also the pooled features float32 [N, H] the head read (one forward pass for both).

    Only the ``text`` column is read. Rows are batched by token length (then put back in frame
    order), so a batch pads to about its own length: dev evaluations run every few steps, and
    random batches of tweets padded to their longest member cost ~1.5x as much. The model's
    train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = _model_device(model)
    examples = encode(frame, tokenizer, label_names, max_length, with_labels=False)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    collate = _collate(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    probs = np.zeros((len(examples), len(label_names)), dtype=np.float32)
    pooled: Optional[np.ndarray] = None
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = collate([examples[i] for i in rows])
                out = model(input_ids=batch["input_ids"].to(device),
                            attention_mask=batch["attention_mask"].to(device), return_dict=True)
                probs[rows] = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
                if features:
                    if pooled is None:
                        pooled = np.zeros((len(examples), out.pooled.shape[-1]), dtype=np.float32)
                    pooled[rows] = out.pooled.float().cpu().numpy()
    finally:
        model.train(was_training)
    pred = probs.argmax(axis=1).astype(np.int64)
    if features:
        return pred, probs, pooled if pooled is not None else np.zeros((0, 0), dtype=np.float32)
    return pred, probs


def evaluate(model: nn.Module, frame: pd.DataFrame, tokenizer, label_names: Sequence[str],
             max_length: int, batch_size: int = 64, keep_predictions: bool = False) -> Dict[str, Any]:
    """``classification_metrics`` of the model's predictions on ``frame`` (plus the predicted
    label ids in frame order under ``predictions`` if asked: ``select_arm`` compares arms row by row)."""
    pred, _ = predict(model, frame, tokenizer, label_names, max_length, batch_size)
    metrics = classification_metrics(frame["label"].astype(str).tolist(), pred.tolist(), list(label_names))
    if keep_predictions:
        metrics["predictions"] = pred.tolist()
    return metrics


@dataclass
class FitResult:
    model: nn.Module  # best-dev weights restored
    history: List[Dict[str, Any]]  # one record per dev evaluation (step 0 included)
    best_step: int  # 0: the initial model (the probe) was best on dev, or no dev data and no steps
    best_dev_metrics: Optional[Dict[str, Any]]
    steps: int = 0
    pseudo_df: Optional[pd.DataFrame] = field(default=None, repr=False)  # last pseudo set used
    best_state: Optional[Dict[str, torch.Tensor]] = field(default=None, repr=False)


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


def probe_frame(train_df: pd.DataFrame, pseudo_df: Optional[pd.DataFrame], cfg: ClassifierConfig) -> pd.DataFrame:
    """The rows the probe head is fitted on (``text``, ``label``): the originals of ``train_df``, plus
    the non-empty pseudo samples with ``cfg.probe_rows == "all"``."""
    rows = train_df[_is_original(train_df)][["text", "label"]]
    if cfg.probe_rows == "all" and pseudo_df is not None and len(pseudo_df):
        from dcls_core.data import blank_text

        pseudo = pseudo_df[~blank_text(pseudo_df["text"])][["text", "label"]]
        rows = pd.concat([rows, pseudo], ignore_index=True)
    return rows.reset_index(drop=True)


def _check_dev(dev_df: Optional[pd.DataFrame]) -> None:
    if dev_df is None:
        return
    if "split" in dev_df.columns and (dev_df["split"].astype(str) == "test").any():
        raise ValueError("dev_df holds rows of the test split: model selection must use dev data only")


def optimizer_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW parameter groups: decay on weight matrices, none on biases and norm weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(groups: List[Dict[str, Any]], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel for every parameter (CPU and CUDA floats): the same
    update, one kernel per step instead of a Python loop over tensors (on one CPU thread a MiniLM
    step's optimiser update drops from ~0.23 s to ~0.03 s, a quarter of the step)."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, fused=fused, **kwargs)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return max(0.0, (total_steps - step) / span)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class LocalStepper:
    """The optimiser in this process: AdamW over ``optimizer_groups``, gradient clipping,
    an optional LR schedule. ``jobs.ray_train.Engine`` offers the same methods."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, max_grad_norm: Optional[float] = 1.0,
                 schedule: str = "constant", warmup_steps: int = 0, total_steps: int = 1):
        if schedule not in ("constant", "linear"):
            raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
        self.model = model
        self.unwrapped = model
        self.optimizer = adamw(optimizer_groups(model, weight_decay), lr=lr)
        self.scheduler = _linear_schedule(self.optimizer, warmup_steps, total_steps) if schedule == "linear" else None
        self.max_grad_norm = max_grad_norm

    @property
    def device(self) -> torch.device:
        return _model_device(self.model)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def snapshot(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def restore(self, state: Dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def batch_plan(n_originals: int, batch_size: int, steps: int, seed: int) -> List[List[int]]:
    """Original row indices of each step: consecutive seeded permutations cut into batches
    (a batch may span two epochs, so every step has ``min(batch_size, n)`` originals)."""
    rng = np.random.default_rng(seed)
    size = min(batch_size, n_originals)
    order: List[int] = []
    plan = []
    for _ in range(steps):
        while len(order) < size:
            order.extend(rng.permutation(n_originals).tolist())
        plan.append(order[:size])
        order = order[size:]
    return plan


class _PseudoPool:
    """Each source's pseudo samples (encoded), handed out ``per_step`` at a time, rotating."""

    def __init__(self, examples: List[Dict[str, Any]], sources: Sequence[str], per_step: int, seed: int):
        self.by_source: Dict[str, List[Dict[str, Any]]] = {}
        for ex, src in zip(examples, sources):
            self.by_source.setdefault(str(src), []).append(ex)
        rng = np.random.default_rng(seed)
        for src, items in self.by_source.items():  # a seeded order per source, then round-robin
            self.by_source[src] = [items[i] for i in rng.permutation(len(items))]
        self.cursor: Dict[str, int] = {}
        self.per_step = per_step

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_source.values())

    def take(self, source: str) -> List[Dict[str, Any]]:
        items = self.by_source.get(str(source), [])
        if not items:
            return []
        k = len(items) if self.per_step == 0 else min(self.per_step, len(items))
        start = self.cursor.get(source, 0)
        self.cursor[source] = start + k
        return [items[(start + j) % len(items)] for j in range(k)]


def _pseudo_sources(pseudo_df: pd.DataFrame) -> List[str]:
    if "source_id" not in pseudo_df.columns:
        raise ValueError("pseudo samples need a source_id column (the id of the original they came from)")
    return pseudo_df["source_id"].astype(str).tolist()


def fit_classifier(model: nn.Module, tokenizer, train_df: pd.DataFrame,
                   dev_df: Optional[pd.DataFrame], label_names: Sequence[str],
                   cfg: ClassifierConfig, max_length: int, seed: int,
                   pseudo_df: Optional[pd.DataFrame] = None, mode: str = "static",
                   regenerate: Optional[Regenerate] = None, regenerate_every: int = 1,
                   steps: Optional[int] = None, on_eval: Optional[OnEval] = None,
                   stepper: Optional[Any] = None, rank: int = 0, world: int = 1,
                   init_head: bool = True, schedule: str = "constant", warmup_ratio: float = 0.0,
                   max_grad_norm: Optional[float] = 1.0, eval_batch_size: int = 64) -> FitResult:
    """Train ``model`` on originals (+ their pseudo samples) with L_e + cfg.alpha * L_c.

    ``steps`` overrides ``cfg.steps_for(len(originals))``. ``init_head``: set the head to the
    probe first when ``cfg.head_init == "probe"`` (Ray loops do it before wrapping the model and
    pass False). ``on_eval(record, model)`` is called after every dev evaluation (on every rank:
    Ray Train reports are collective). Without ``dev_df`` the last weights are kept.
    """
    if mode not in ("static", "reflective"):
        raise ValueError(f"mode must be 'static' or 'reflective', got {mode!r}")
    if mode == "reflective" and regenerate is None:
        raise ValueError("reflective mode needs a regenerate(model) -> pseudo_df callback")
    if regenerate_every < 1:
        raise ValueError(f"regenerate_every must be >= 1, got {regenerate_every}")
    _check_dev(dev_df)
    if dev_df is not None and len(dev_df) == 0:
        dev_df = None
    if dev_df is None:
        log.warning("fit_classifier without dev data: no model selection, the last step is kept")
    names = list(label_names)
    # id order: the batches (and so the classifier) depend on which rows were given, not on the
    # order a caller happened to hold them in (a sampler's order, Parquet's, Ray Data's)
    originals = sort_rows(train_df[_is_original(train_df)]).reset_index(drop=True)
    if len(originals) < len(train_df):
        log.info("fit_classifier: %d pseudo rows in train_df are ignored (pass them as pseudo_df)",
                 len(train_df) - len(originals))
    if len(originals) == 0:
        raise ValueError("fit_classifier got no original training rows")
    total = int(steps if steps is not None else cfg.steps_for(len(originals)))
    if total < 0:
        raise ValueError(f"steps must be >= 0, got {total}")
    per_epoch = max(1, -(-len(originals) // cfg.batch_size))

    set_seed(seed)
    if init_head and cfg.head_init == "probe" and hasattr(model, "head"):
        from dcls_core.classifier import init_head_from_frame

        init_head_from_frame(model, tokenizer, probe_frame(originals, pseudo_df, cfg), names, max_length, cfg.probe_C)
    if stepper is None:
        stepper = LocalStepper(model, cfg.lr, cfg.weight_decay, max_grad_norm, schedule,
                               int(round(warmup_ratio * total)), total)
    device = stepper.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    collate = _collate(pad_id)
    orig_examples = encode(originals, tokenizer, names, max_length)
    orig_ids = originals["id"].astype(str).tolist() if "id" in originals.columns else \
        [str(i) for i in range(len(originals))]

    def pool_of(frame: Optional[pd.DataFrame], version: int) -> Optional[_PseudoPool]:
        if frame is not None and len(frame):
            # an empty pseudo sample (a source cut to nothing) teaches nothing: every mode and
            # every augmenter's rows pass here, reflective regenerations included
            from dcls_core.data import blank_text

            empty = blank_text(frame["text"])
            if empty.any():
                log.warning("training without %d empty pseudo sample(s)", int(empty.sum()))
                frame = frame[~empty]
        if frame is None or len(frame) == 0:
            return None
        frame = sort_rows(frame.assign(is_pseudo=True))
        return _PseudoPool(encode(frame, tokenizer, names, max_length), _pseudo_sources(frame),
                           cfg.pseudo_per_step, seed + 7919 * (version + 1))

    current_pseudo = pseudo_df
    pool = pool_of(current_pseudo, 0)
    plan = batch_plan(len(originals), cfg.batch_size, total, seed)
    history: List[Dict[str, Any]] = []
    best = {"f1": -math.inf, "step": 0, "metrics": None, "state": None}
    sums = {"loss": 0.0, "ce": 0.0, "contrastive": 0.0, "rows": 0.0, "n": 0}
    regenerations = 0

    def evaluate_now(step: int) -> None:
        record: Dict[str, Any] = {"step": step, "epoch": round(step / per_epoch, 3),
                                  "n_pseudo": len(pool) if pool is not None else 0, "lr": stepper.lr()}
        if sums["n"]:
            record.update({k: sums[k] / sums["n"] for k in ("loss", "ce", "contrastive")})
            record["rows_per_step"] = sums["rows"] / sums["n"]
            for k in sums:
                sums[k] = 0.0 if k != "n" else 0
        if dev_df is not None:
            metrics = evaluate(stepper.model, dev_df, tokenizer, names, max_length, eval_batch_size)
            record["dev_accuracy"] = metrics["accuracy"]
            record["dev_macro_f1"] = metrics["macro_f1"]
            if metrics["macro_f1"] > best["f1"]:
                best.update(f1=metrics["macro_f1"], step=step, metrics=metrics, state=stepper.snapshot())
        log.info("step %d/%d%s%s", step, total,
                 f" loss={record['loss']:.4f}" if "loss" in record else "",
                 f" dev_macro_f1={record['dev_macro_f1']:.4f}" if "dev_macro_f1" in record else "")
        history.append(record)
        if on_eval is not None:
            on_eval(copy.deepcopy(record), stepper.unwrapped)

    evaluate_now(0)
    for step in range(1, total + 1):
        if mode == "reflective" and (step - 1) % (regenerate_every * per_epoch) == 0 and (
                step > 1 or pseudo_df is None):
            log.info("step %d: regenerating pseudo samples with the classifier being trained", step)
            current_pseudo = regenerate(stepper.unwrapped)
            regenerations += 1
            pool = pool_of(current_pseudo, regenerations)
        rows = plan[step - 1][rank::world] if world > 1 else plan[step - 1]
        examples = []
        for r in rows:
            examples.append({**orig_examples[r], "source": r})
            if pool is not None:
                examples.extend({**ex, "source": r} for ex in pool.take(orig_ids[r]))
        batch = {k: v.to(device) for k, v in collate(examples).items()}
        stepper.model.train()
        out = stepper.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss, parts = noise_resistant_loss(out.logits, out.pooled, batch["labels"], batch["is_original"],
                                           alpha=cfg.alpha, tau=cfg.tau, source=batch["source"],
                                           contrastive=cfg.contrastive)
        stepper.backward(loss)
        stepper.step()
        for key in ("loss", "ce", "contrastive"):
            sums[key] += parts[key]
        sums["rows"] += len(examples)
        sums["n"] += 1
        if step % cfg.eval_every == 0 or step == total:
            evaluate_now(step)

    if best["state"] is not None:
        stepper.restore(best["state"])
        log.info("restored best-dev weights of step %d (macro-F1 %.4f)", best["step"], best["f1"])
    else:
        best["step"] = total
    stepper.unwrapped.eval()
    return FitResult(model=stepper.unwrapped, history=history, best_step=int(best["step"]),
                     best_dev_metrics=best["metrics"], steps=total, pseudo_df=current_pseudo,
                     best_state=best["state"])


def train_proxy(model: nn.Module, tokenizer, train_df: pd.DataFrame, dev_df: Optional[pd.DataFrame],
                label_names: Sequence[str], cfg: ClassifierConfig, max_length: int, seed: int,
                on_eval: Optional[OnEval] = None) -> FitResult:
    """The proxy: cross-entropy only (alpha = 0) on originals, with ``cfg.proxy()``'s recipe
    (the raw arm's, unless a preset gives the proxy its own epochs / lr)."""
    return fit_classifier(model, tokenizer, train_df[_is_original(train_df)], dev_df, label_names,
                          cfg.proxy(), max_length, seed, on_eval=on_eval)
