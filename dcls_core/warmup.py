"""Generator warm-up: continued masked-LM training before the label-aware diffusion training.

The embedded encoder (all-MiniLM-L6-v2) is a sentence-embedding model without a masked-LM
head: ``load_masked_lm`` gives it a fresh head transform and a decoder tied to the input
embeddings, which predicts noise. This stage trains encoder and head as a masked LM on
unlabeled in-domain text (the training texts plus ``generator.warmup.corpus``) so that the
diffusion generator starts from a competent masked LM. Its output is cached under
``<cache_dir>/warmup-<key>/`` (a normal ``save_pretrained`` folder) keyed by the base model,
the corpus content and the config, so it runs once per corpus and is shared by every run and
Tune trial that uses the same corpus.

What makes it fast on a CPU (see docs/generator.md for the measurements):

* vocabulary logits only at masked positions, and only over the tokens the corpus uses
  (``restrict_vocab``: the decoder weight is sliced in the loss; the saved model keeps its
  full vocabulary, with the bias of unseen tokens left at a low prior);
* the fresh decoder bias starts at the corpus' log unigram frequencies (``prior_bias``),
  which is the best context-free guess and saves the first few hundred steps;
* a higher learning rate for the fresh head than for the pretrained encoder;
* dynamic masking (new masks each time a sentence is drawn), length-bucketed batches
  (little padding) and ``max_length`` truncation;
* masked positions are always replaced by ``[MASK]`` (the generator only ever fills
  ``[MASK]`` tokens), optionally at a per-sentence rate drawn from
  ``U(mask_prob, mask_prob_max)`` so the model also learns the generation noise level.

Training stops at ``max_steps`` or ``max_seconds``, whichever comes first; the learning-rate
schedule (linear rise, linear decay) follows whichever budget is closer to running out.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from dcls_core.config import ModelConfig, WarmupConfig
from dcls_core.models import has_pretrained_mlm_head, load_masked_lm, load_tokenizer, resolve_model

log = logging.getLogger(__name__)

WARMUP_VERSION = 1  # bump when the training recipe changes in a way that invalidates caches
STATS_FILE = "warmup_stats.json"

MaskFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


# --------------------------------------------------------------------------- decisions, keys


def needs_warmup(model_cfg: ModelConfig, warmup_cfg: WarmupConfig) -> bool:
    """``auto``: only when the checkpoint has no trained MLM head; ``true``/``false`` force."""
    mode = str(warmup_cfg.enabled).lower()
    if mode == "true":
        return True
    if mode == "false":
        return False
    return not has_pretrained_mlm_head(model_cfg)


def _texts_digest(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    n = 0
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
        n += 1
    h.update(str(n).encode())
    return h.hexdigest()


def warmup_cache_key(model_cfg: ModelConfig, warmup_cfg: WarmupConfig, texts: Sequence[str]) -> str:
    """Hash of the base model, the corpus content (in order) and the warm-up config.

    ``enabled`` and ``corpus`` (names of sources) are left out: the texts themselves are
    hashed, so the same corpus reached through different names shares one cache entry.
    """
    res = resolve_model(model_cfg)
    model_part = {"name": res.name, "weights": res.weights_source is not None and Path(res.weights_source).name,
                  "tokenizer": Path(res.tokenizer_source).name}
    if res.is_tiny:
        model_part["tiny"] = dataclasses.asdict(model_cfg)
    cfg = {k: v for k, v in dataclasses.asdict(warmup_cfg).items() if k not in ("enabled", "corpus")}
    payload = json.dumps({"v": WARMUP_VERSION, "model": model_part, "cfg": cfg,
                          "texts": _texts_digest(texts)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- corpus


def _read_texts_file(path: Path, text_column: Optional[str] = None) -> List[str]:
    import pandas as pd

    name = path.name.lower()
    if name.endswith(".txt"):
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    if name.endswith((".csv", ".tsv")):
        frame = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", quoting=3 if name.endswith(".tsv") else 0,
                            dtype=str, keep_default_na=False)
    elif name.endswith((".jsonl", ".json")):
        frame = pd.read_json(path, lines=name.endswith(".jsonl"), dtype=False)
    elif name.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"warm-up corpus file {path}: unsupported type (use .txt, .csv, .tsv, .jsonl, .json, .parquet)")
    cols = [text_column] if text_column else ["text", "content", "sentence", "tweet"]
    for col in cols:
        if col in frame.columns:
            return frame[col].astype(str).tolist()
    raise ValueError(f"warm-up corpus file {path}: no text column (looked for {cols}; has {list(frame.columns)})")


def _preset_texts(name: str, data_root: Path) -> List[str]:
    """Training-split texts of a dataset preset (``configs/dataset/<name>.yaml``), labels ignored."""
    from omegaconf import OmegaConf

    from dcls_core.config import DataConfig, DatasetConfig, configs_dir

    preset = configs_dir() / "dataset" / f"{name}.yaml"
    if not preset.exists():
        raise ValueError(f"warm-up corpus entry {name!r} is neither a file nor a dataset preset "
                         f"(no {preset})")
    ds_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), OmegaConf.load(preset)))
    try:
        from dcls_core.data import load_dataset  # the data layer

        bundle = load_dataset(ds_cfg, DataConfig(root=str(data_root), protocol="full"))
        return bundle.frames["train"]["text"].astype(str).tolist()
    except ImportError:  # pragma: no cover - before the data layer existed
        rel = ds_cfg.files.get("train") or ds_cfg.files.get("all")
        path = Path(rel) if Path(rel).is_absolute() else data_root / rel
        return _read_texts_file(path, ds_cfg.text_column)


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def corpus_texts(warmup_cfg: WarmupConfig, train_texts: Sequence[str], data_root: Union[str, Path, None] = None,
                 exclude: Iterable[str] = (), seed: Optional[int] = None) -> List[str]:
    """The warm-up corpus: training texts + ``warmup_cfg.corpus`` sources, labels ignored.

    Corpus entries are files (``.txt`` one text per line; ``.csv/.tsv/.jsonl/.json/.parquet``
    with a ``text``-like column), absolute or relative to ``data_root``/the working directory,
    or dataset preset names (their training split). Texts are whitespace-normalised,
    deduplicated, stripped of anything in ``exclude`` (dev/test texts: never train on them)
    and capped at ``max_sentences``: the training texts always stay, the rest is filled from
    the corpus by ``selection`` (``random`` with ``seed``, or ``longest`` first).
    """
    root = Path(data_root) if data_root is not None else None
    banned = {_clean(t).lower() for t in exclude}
    seen: set = set()

    def keep(texts: Iterable[str]) -> List[str]:
        out = []
        for t in texts:
            c = _clean(t)
            key = c.lower()
            if c and key not in seen and key not in banned:
                seen.add(key)
                out.append(c)
        return out

    base = keep(train_texts)
    extra_raw: List[str] = []
    for entry in warmup_cfg.corpus:
        candidates = [Path(entry).expanduser()]
        if root is not None:
            candidates.append(root / entry)
        path = next((p for p in candidates if p.is_file()), None)
        if path is not None:
            extra_raw.extend(_read_texts_file(path))
        else:
            extra_raw.extend(_preset_texts(entry, root if root is not None else Path(".")))
    extra = keep(extra_raw)
    room = max(0, warmup_cfg.max_sentences - len(base))
    if len(base) > warmup_cfg.max_sentences:
        base = base[: warmup_cfg.max_sentences]
    if len(extra) > room:
        if warmup_cfg.selection == "longest":
            extra = sorted(extra, key=lambda t: -len(t.split()))[:room]
        else:
            rng = random.Random(warmup_cfg.seed if seed is None else seed)
            extra = rng.sample(extra, room)
    return base + extra


def run_corpus(warmup_cfg: WarmupConfig, train_texts: Sequence[str], dev_texts: Sequence[str],
               test_texts: Sequence[str], data_root: Union[str, Path, None] = None) -> List[str]:
    """A run's warm-up corpus: its training texts + the corpus, dev and test texts excluded; with
    ``corpus_only`` the corpus alone minus test texts (one warm-up per corpus, shared by every seed
    and row sample; unlabelled dev texts may be in it)."""
    if warmup_cfg.corpus_only:
        return corpus_texts(warmup_cfg, [], data_root, exclude=list(test_texts))
    return corpus_texts(warmup_cfg, train_texts, data_root, exclude=list(dev_texts) + list(test_texts))


# --------------------------------------------------------------------------- head plumbing


def _split_head(model: nn.Module) -> Tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear, nn.Parameter,
                                           List[nn.Parameter]]:
    """(transform, decoder, decoder bias, fresh-head parameters) for BERT/RoBERTa/DistilBERT MLMs."""
    cls = getattr(model, "cls", None)
    if cls is not None and hasattr(cls, "predictions"):  # BERT-like
        pred = cls.predictions
        bias = pred.decoder.bias if pred.decoder.bias is not None else pred.bias
        return pred.transform, pred.decoder, bias, list(pred.transform.parameters()) + [bias]
    head = getattr(model, "lm_head", None)
    if head is not None and hasattr(head, "dense") and hasattr(head, "decoder"):  # RoBERTa/XLM-R
        import torch.nn.functional as F

        def transform(x: torch.Tensor) -> torch.Tensor:
            return head.layer_norm(F.gelu(head.dense(x)))

        bias = head.decoder.bias if head.decoder.bias is not None else head.bias
        params = list(head.dense.parameters()) + list(head.layer_norm.parameters()) + [bias]
        return transform, head.decoder, bias, params
    if hasattr(model, "vocab_projector"):  # DistilBERT
        def transform(x: torch.Tensor) -> torch.Tensor:
            return model.vocab_layer_norm(model.activation(model.vocab_transform(x)))

        params = list(model.vocab_transform.parameters()) + list(model.vocab_layer_norm.parameters())
        params.append(model.vocab_projector.bias)
        return transform, model.vocab_projector, model.vocab_projector.bias, params
    raise ValueError(f"unsupported masked-LM architecture {type(model).__name__}")


def _encoder(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def _scale_head_output(model: nn.Module, scale: float) -> None:
    """Shrink a fresh head's output LayerNorm gain: its random logits would drown the prior."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.LayerNorm) and name.startswith(("cls.", "lm_head", "vocab_layer_norm")):
            with torch.no_grad():
                mod.weight.mul_(scale)


def _encoder_layers(model: nn.Module) -> Optional[nn.ModuleList]:
    enc = getattr(_encoder(model), "encoder", None)
    layers = getattr(enc, "layer", None)
    if layers is None:  # DistilBERT
        layers = getattr(getattr(_encoder(model), "transformer", None), "layer", None)
    return layers


def _freeze(model: nn.Module, cfg: WarmupConfig) -> List[nn.Parameter]:
    """Freeze what the config keeps fixed; returns the parameters to unfreeze afterwards."""
    frozen: List[nn.Parameter] = []
    emb = model.get_input_embeddings().weight
    if cfg.freeze_embeddings or cfg.train_layers:
        frozen.append(emb)  # the decoder is tied to it: frozen together
    layers = _encoder_layers(model)
    if cfg.train_layers and layers is not None and cfg.train_layers < len(layers):
        emb_module = getattr(_encoder(model), "embeddings", None)
        if emb_module is not None:
            frozen.extend(emb_module.parameters())
        for layer in list(layers)[: len(layers) - cfg.train_layers]:
            frozen.extend(layer.parameters())
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def _encode(tokenizer, texts: Sequence[str], max_length: int) -> List[List[int]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    return enc["input_ids"]


def _special_ids(tokenizer) -> set:
    return set(tokenizer.all_special_ids)


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, : len(s)] = 1
    return ids, att


def _maskable(ids: torch.Tensor, att: torch.Tensor, specials: set) -> torch.Tensor:
    m = att.bool().clone()
    for sid in specials:
        m &= ids != sid
    return m


def random_mask(prob: Union[float, Tuple[float, float]]) -> MaskFn:
    """Mask each maskable token with ``prob`` (or a per-row rate ~ U(lo, hi)); >= 1 per row."""

    def fn(ids: torch.Tensor, maskable: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if isinstance(prob, tuple):
            lo, hi = prob
            rate = lo + (hi - lo) * torch.rand((ids.shape[0], 1), generator=gen)
        else:
            rate = torch.full((ids.shape[0], 1), float(prob))
        mask = (torch.rand(ids.shape, generator=gen) < rate) & maskable
        return ensure_one(mask, maskable, gen)

    return fn


def ensure_one(mask: torch.Tensor, maskable: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rows with maskable tokens but nothing masked get one random maskable token masked."""
    empty = (~mask.any(1)) & maskable.any(1)
    if empty.any():
        scores = torch.rand(mask.shape, generator=gen).masked_fill(~maskable, -1.0)
        pick = scores.argmax(1)
        rows = empty.nonzero().flatten()
        mask = mask.clone()
        mask[rows, pick[rows]] = True
    return mask


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def masked_lm_eval(model: nn.Module, tokenizer, texts: Sequence[str],
                   mask: Union[float, MaskFn] = 0.15, seed: int = 0, max_length: int = 64,
                   batch_size: int = 64) -> Dict[str, float]:
    """Masked-token accuracy and cross-entropy (full vocabulary) on ``texts``.

    ``mask`` is a masking probability or a function ``(input_ids, maskable, generator) ->
    bool mask``; masked tokens are replaced by the mask token. Deterministic for a seed.
    """
    from dcls_core.models import masked_lm_logits

    mask_fn = random_mask(mask) if not callable(mask) else mask
    gen = torch.Generator().manual_seed(seed)
    specials = _special_ids(tokenizer)
    seqs = _encode(tokenizer, texts, max_length)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n, correct, ce_sum = 0, 0, 0.0
    for start in range(0, len(seqs), batch_size):
        ids, att = _pad(seqs[start:start + batch_size], tokenizer.pad_token_id)
        maskable = _maskable(ids, att, specials)
        m = mask_fn(ids, maskable, gen)
        if not m.any():
            continue
        inp = ids.masked_fill(m, tokenizer.mask_token_id)
        logits = masked_lm_logits(model, inp.to(device), att.to(device), m.to(device)).float()
        target = ids[m].to(device)
        ce_sum += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(-1) == target).sum().item()
        n += int(m.sum())
    model.train(was_training)
    return {"accuracy": correct / max(n, 1), "ce": ce_sum / max(n, 1), "n_masked": n}


# --------------------------------------------------------------------------- training


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> Iterable[List[int]]:
    """Endless length-bucketed batches: shuffle, sort within mega-batches, shuffle the batches."""
    idx = list(range(len(lengths)))
    while True:
        rng.shuffle(idx)
        mega = batch_size * 50
        batches = []
        for s in range(0, len(idx), mega):
            chunk = sorted(idx[s:s + mega], key=lambda i: lengths[i])
            batches.extend(chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size))
        rng.shuffle(batches)
        yield from batches


class WarmupObjective(nn.Module):
    """The warm-up's forward pass as one module (what DDP or DeepSpeed wraps): masked input ->
    vocabulary logits at the masked positions, over the corpus' tokens only with ``vocab_ids``.

    With frozen word embeddings, ``mask_vec`` is the [MASK] input row learned on its own (the
    row never occurs in sentence-embedding training)."""

    def __init__(self, model: nn.Module, mask_token_id: int, vocab_ids: Optional[torch.Tensor],
                 mask_vec: Optional[nn.Parameter]):
        super().__init__()
        self.model = model
        self.mask_token_id = int(mask_token_id)
        self.mask_vec = mask_vec
        self.register_buffer("vocab_ids", vocab_ids, persistent=False)
        self._head = _split_head(model)[:3]  # a tuple: not registered twice as submodules

    def forward(self, ids: torch.Tensor, att: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        transform, decoder, bias = self._head
        encoder = _encoder(self.model)
        if self.mask_vec is not None:
            embeds = self.model.get_input_embeddings().weight.detach()[ids]
            embeds = torch.where(masked.unsqueeze(-1), self.mask_vec.to(embeds.dtype), embeds)
            hidden = encoder(inputs_embeds=embeds, attention_mask=att).last_hidden_state[masked]
        else:
            hidden = encoder(input_ids=ids.masked_fill(masked, self.mask_token_id),
                             attention_mask=att).last_hidden_state[masked]
        h = transform(hidden)
        if self.vocab_ids is not None:
            return h @ decoder.weight[self.vocab_ids].t() + bias[self.vocab_ids]
        return decoder(h)


class WarmupRun:
    """One warm-up's state, step by step, for any trainer: the in-process loop
    (``warmup_masked_lm``) and the Ray Train loop (``jobs.train_loops.warmup_loop``).

    Every rank draws the same global batch and the same masks (one seeded stream) and trains on
    its rows of it (``next_batch(rank, world)``), with the loss scaled by the global count of
    masked tokens: gradients averaged over the ranks equal the one-process gradient. ``state()``
    and ``restore()`` carry what a resumed run needs beyond the weights and the optimiser: the
    step, the seconds spent, the mask stream, the torch RNG (dropout), the history; the batch
    order is replayed from the seed.
    """

    def __init__(self, model: nn.Module, tokenizer, texts: Sequence[str], cfg: WarmupConfig,
                 seed: Optional[int] = None):
        self.cfg, self.tokenizer, self.model = cfg, tokenizer, model
        self.seed = cfg.seed if seed is None else seed
        torch.manual_seed(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.specials = _special_ids(tokenizer)
        self.seqs = [s for s in _encode(tokenizer, texts, cfg.max_length) if len(s) > 2]
        if not self.seqs:
            raise ValueError("warm-up corpus is empty after tokenisation")
        self.stats: Dict = {"sentences": len(self.seqs), "corpus_tokens": int(sum(len(s) - 2 for s in self.seqs))}

        _, decoder, bias, head_params = _split_head(model)
        counts = Counter(t for s in self.seqs for t in s if t not in self.specials)
        vocab_ids = torch.tensor(sorted(counts), dtype=torch.long)
        self.stats["vocab_seen"] = len(vocab_ids)
        fresh_bias = bool(torch.all(bias.detach() == 0))
        if cfg.prior_bias and fresh_bias:
            total = sum(counts.values())
            with torch.no_grad():
                prior = torch.full_like(bias, math.log(0.5 / total))  # unseen: below any seen token
                freq = torch.tensor([counts[int(i)] for i in vocab_ids], dtype=torch.float)
                prior[vocab_ids.to(prior.device)] = torch.log(freq / total).to(prior)
                bias.copy_(prior)
            self.stats["prior_bias"] = True
        if fresh_bias and cfg.head_init_scale != 1.0:
            _scale_head_output(model, cfg.head_init_scale)
        self.remap = None
        if cfg.restrict_vocab:
            self.remap = torch.full((int(decoder.weight.shape[0]),), -1, dtype=torch.long)
            self.remap[vocab_ids] = torch.arange(len(vocab_ids))
        device = next(model.parameters()).device

        emb = model.get_input_embeddings().weight
        self.frozen = _freeze(model, cfg)
        mask_vec = None
        if not emb.requires_grad and cfg.train_mask_embedding:
            mask_vec = nn.Parameter(emb.detach()[tokenizer.mask_token_id].clone())
            head_params = head_params + [mask_vec]
        self.objective = WarmupObjective(model, tokenizer.mask_token_id,
                                         vocab_ids.to(device) if cfg.restrict_vocab else None, mask_vec)
        head_ids = {id(p) for p in head_params}
        enc_decay, enc_nodecay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad or id(p) in head_ids:
                continue
            (enc_nodecay if (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name) else enc_decay).append(p)
        head_decay = [p for p in head_params if p.requires_grad and p.ndim >= 2]
        head_nodecay = [p for p in head_params if p.requires_grad and p.ndim < 2]
        groups = [
            {"params": enc_decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
            {"params": enc_nodecay, "lr": cfg.lr, "weight_decay": 0.0, "base_lr": cfg.lr},
            {"params": head_decay, "lr": cfg.head_lr, "weight_decay": cfg.weight_decay, "base_lr": cfg.head_lr},
            {"params": head_nodecay, "lr": cfg.head_lr, "weight_decay": 0.0, "base_lr": cfg.head_lr},
        ]
        self.param_groups = [g for g in groups if g["params"]]
        self.mask_fn = random_mask((cfg.mask_prob, cfg.mask_prob_max) if cfg.mask_prob_max else cfg.mask_prob)
        self.lengths = [len(s) for s in self.seqs]
        self.batches = _batches(self.lengths, cfg.batch_size, random.Random(self.seed))
        self.step, self.tokens_seen, self.history, self.last = 0, 0, [], {}
        self._run = [0.0, 0.0, 0]  # loss, accuracy, steps since the last log line

    # ---- the budget
    def lr_factor(self, elapsed: float) -> float:
        """Linear rise then linear decay over whichever budget (steps or seconds) is closer to its end."""
        cfg = self.cfg
        progress = max(self.step / max(cfg.max_steps, 1), elapsed / cfg.max_seconds if cfg.max_seconds else 0.0)
        if progress < cfg.lr_warmup:
            return max(progress / cfg.lr_warmup, 0.02)
        return max((1.0 - progress) / (1.0 - cfg.lr_warmup), 0.02)

    def done(self, elapsed: float) -> bool:
        return self.step >= self.cfg.max_steps or bool(self.cfg.max_seconds and elapsed >= self.cfg.max_seconds)

    def set_lr(self, optimizer: torch.optim.Optimizer, elapsed: float) -> float:
        factor = self.lr_factor(elapsed)
        for group, own in zip(optimizer.param_groups, self.param_groups):
            group["lr"] = own["base_lr"] * factor
        return factor

    # ---- one step
    def next_batch(self, rank: int = 0, world: int = 1) -> Dict[str, Any]:
        """The next global batch (rows, masks) and this rank's share of its rows: ids, attention,
        masked positions (bool), targets (restricted ids), the global masked count."""
        batch = [self.seqs[i] for i in next(self.batches)]
        ids, att = _pad(batch, self.tokenizer.pad_token_id)
        masked = self.mask_fn(ids, _maskable(ids, att, self.specials), self.gen)
        n_global = int(masked.sum())
        self.tokens_seen += int(att.sum())
        if world > 1:
            rows = torch.arange(rank, len(batch), world)
            width = max([int(att[r].sum()) for r in rows.tolist()] or [1])
            ids, att, masked = ids[rows, :width], att[rows, :width], masked[rows, :width]
        target = ids[masked]
        if self.remap is not None:
            target = self.remap[target]
        return {"ids": ids, "att": att, "masked": masked, "target": target, "n_global": n_global}

    def loss(self, logits: torch.Tensor, batch: Dict[str, Any], world: int = 1) -> torch.Tensor:
        """Cross-entropy summed over this rank's masked tokens / the global count x ``world``
        (ranks' gradients are averaged: their mean is the whole batch's mean-token gradient)."""
        target = batch["target"].to(logits.device)
        total = torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum")
        with torch.no_grad():
            n = max(int(target.numel()), 1)
            self._run[0] += float(total) / n
            self._run[1] += float((logits.argmax(-1) == target).float().sum()) / n
            self._run[2] += 1
        return total * world / max(batch["n_global"], 1)

    def end_step(self, elapsed: float, factor: float, log_every: int = 50,
                 on_log: Optional[Callable[[Dict], None]] = None) -> None:
        self.step += 1
        if self.step % log_every == 0 or self.step == self.cfg.max_steps:
            loss, acc, n = self._run
            self.last = {"step": self.step, "seconds": round(elapsed, 1), "loss": loss / max(n, 1),
                         "acc": acc / max(n, 1), "lr_factor": round(factor, 4)}
            self.history.append(self.last)
            log.info("warm-up step %d (%.0fs): loss %.3f acc %.3f", self.step, elapsed, self.last["loss"],
                     self.last["acc"])
            if on_log is not None:
                on_log(self.last)
            self._run = [0.0, 0.0, 0]

    # ---- resume
    def state(self, elapsed: float) -> Dict[str, Any]:
        return {"step": self.step, "seconds": elapsed, "tokens_seen": self.tokens_seen,
                "history": list(self.history), "last": dict(self.last), "running": list(self._run),
                "mask_rng": self.gen.get_state(), "torch_rng": torch.get_rng_state()}

    def restore(self, state: Dict[str, Any]) -> float:
        """Continue from ``state()`` (the weights and the optimiser are restored by the caller);
        returns the seconds already spent."""
        for _ in range(int(state["step"])):  # the batch order: replayed, it is only index lists
            next(self.batches)
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.history, self.last, self._run = list(state["history"]), dict(state["last"]), list(state["running"])
        self.gen.set_state(state["mask_rng"])
        torch.set_rng_state(state["torch_rng"])
        return float(state["seconds"])

    def finish(self, elapsed: float) -> Dict:
        """Write the learned [MASK] row into the embeddings, unfreeze, eval mode; the stats."""
        mask_vec = self.objective.mask_vec
        if mask_vec is not None:
            with torch.no_grad():
                emb = self.model.get_input_embeddings().weight
                emb[self.tokenizer.mask_token_id] = mask_vec.detach().to(emb.dtype)
        for p in self.frozen:
            p.requires_grad_(True)
        self.model.eval()
        stats = dict(self.stats)
        stats.update({"steps": self.step, "seconds": round(elapsed, 1), "tokens_seen": self.tokens_seen,
                      "vocab_restricted": self.stats["vocab_seen"] if self.cfg.restrict_vocab else None,
                      "history": self.history, "last": self.last})
        log.info("warm-up done: %d steps in %.0fs (%d tokens)", self.step, elapsed, self.tokens_seen)
        return stats


def warmup_masked_lm(model: nn.Module, tokenizer, texts: Sequence[str], cfg: WarmupConfig, seed: Optional[int] = None,
                     eval_texts: Optional[Sequence[str]] = None, log_every: int = 50,
                     on_log: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Continued masked-LM training of ``model`` (encoder and head) on ``texts``, in place, in
    this process (the Ray Train loop is ``jobs.train_loops.warmup_loop``: the same ``WarmupRun``).

    Returns stats: steps, seconds, sentences, tokens seen, the restricted vocabulary size,
    the last training loss/accuracy, ``history`` (one entry per ``log_every`` steps) and,
    with ``eval_texts``, ``eval_before``/``eval_after`` (``masked_lm_eval`` at ``mask_prob``).
    """
    before = None
    if eval_texts:
        before = masked_lm_eval(model, tokenizer, eval_texts, cfg.mask_prob, seed=1234, max_length=cfg.max_length)
        log.info("warm-up: before %s", before)
    run = WarmupRun(model, tokenizer, texts, cfg, seed)
    from dcls_core.training import adamw

    opt = adamw(run.param_groups, betas=(0.9, 0.98), eps=1e-6)
    params = [p for g in opt.param_groups for p in g["params"]]
    device = next(model.parameters()).device
    model.train()
    start = time.time()
    while not run.done(time.time() - start):
        factor = run.set_lr(opt, time.time() - start)
        batch = run.next_batch()
        logits = run.objective(*(batch[k].to(device) for k in ("ids", "att", "masked")))
        run.loss(logits, batch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        run.end_step(time.time() - start, factor, log_every, on_log)
    stats = run.finish(time.time() - start)
    if before is not None:
        stats["eval_before"] = before
        stats["eval_after"] = masked_lm_eval(model, tokenizer, eval_texts, cfg.mask_prob, seed=1234,
                                             max_length=cfg.max_length)
        log.info("warm-up: after %s", stats["eval_after"])
    return stats


# --------------------------------------------------------------------------- cache


def load_cached_warmup(path: Union[str, Path]):
    """(model, tokenizer, stats) from a warm-up folder written by ``load_or_warmup``."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = Path(path)
    model = AutoModelForMaskedLM.from_pretrained(str(path), attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(str(path))
    stats = json.loads((path / STATS_FILE).read_text())
    return model, tok, stats


def load_or_warmup(model_cfg: ModelConfig, warmup_cfg: WarmupConfig, texts: Sequence[str],
                   cache_dir: Union[str, Path], seed: int = 0,
                   eval_texts: Optional[Sequence[str]] = None, log_every: int = 50):
    """The generator's starting masked LM: warmed up in this process (cached) when needed, else
    the checkpoint.

    Returns ``(model, tokenizer, stats)``. ``stats["cached"]`` tells whether the warm-up was
    loaded from ``cache_dir/warmup-<key>/``; ``stats["skipped"]`` that none was needed. The
    warm-up seed is ``warmup_cfg.seed`` (part of the key) so runs with different seeds share
    it; ``seed`` only seeds the fresh head when no warm-up runs.
    """
    if not needs_warmup(model_cfg, warmup_cfg):
        return load_masked_lm(model_cfg, seed), load_tokenizer(model_cfg), {"skipped": True, "cached": False}
    built: Dict[str, Any] = {}

    def build(tmp: Path) -> Dict:
        tok = load_tokenizer(model_cfg)
        model = load_masked_lm(model_cfg, warmup_cfg.seed)
        stats = warmup_masked_lm(model, tok, texts, warmup_cfg, seed=warmup_cfg.seed, eval_texts=eval_texts,
                                 log_every=log_every)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        built.update(model=model, tok=tok)
        return stats

    stats = ensure_warmup(model_cfg, warmup_cfg, texts, cache_dir, build)
    if built:
        return built["model"], built["tok"], stats
    model, tok, _ = load_cached_warmup(stats["path"])
    return model, tok, stats


def ensure_warmup(model_cfg: ModelConfig, warmup_cfg: WarmupConfig, texts: Sequence[str],
                  cache_dir: Union[str, Path], build: Callable[[Path], Dict]) -> Dict:
    """The warm-up of ``texts`` in the cache, built by ``build(folder)`` (which saves the masked LM
    and tokenizer there and returns its stats) unless ``cache_dir/warmup-<key>/`` has it; its stats
    (``path``, ``key``, ``cached``). Concurrent runs needing the same warm-up (Tune trials,
    pipelines sharing a cache) wait for the first one instead of computing it again; the folder
    appears whole or not at all."""
    from dcls_core.artifacts import file_lock

    key = warmup_cache_key(model_cfg, warmup_cfg, texts)
    folder = Path(cache_dir) / f"warmup-{key}"
    with file_lock(Path(cache_dir) / f".warmup-{key}.lock"):
        if (folder / STATS_FILE).exists():
            stats = json.loads((folder / STATS_FILE).read_text())
            stats.update({"cached": True, "path": str(folder), "key": key})
            log.info("generator warm-up: loaded from cache %s", folder)
            return stats
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        stats = build(tmp)
        stats.update({"key": key, "base_model": model_cfg.name, "config": dataclasses.asdict(warmup_cfg)})
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=1, default=str))
        os.replace(tmp, folder)
    stats.update({"cached": False, "path": str(folder)})
    return stats
