"""Ray-free glue between the DiffusionCLS pieces: what one pipeline stage does to one batch.

``jobs/`` runs these functions on Ray Data actors and Ray Train workers; ``DiffusionAugmenter``
chains them in one process (``dcls augment`` without Ray, tests). Checkpoints are ordinary
``save_pretrained`` folders (model + tokenizer; the generator's tokenizer holds the label
prompt tokens).

Generation works on *sources*: one row per original with the list of diffusion steps planned
for it (``plan_sources``), so that every call sees all of a source's plan items and the pseudo
ids ``<source_id>~p<k>`` and their seeds do not depend on how rows are cut into batches.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from dcls_core.config import AugmentConfig, ClassifierConfig, GeneratorConfig, ModelConfig

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(model: nn.Module, tokenizer, folder: PathLike,
                    state_dict: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), state_dict=state_dict)
    tokenizer.save_pretrained(str(folder))
    return folder


def load_classifier_checkpoint(path: PathLike):
    """(PooledClassifier, tokenizer) from a folder written by ``PooledClassifier.save_pretrained``."""
    from transformers import AutoTokenizer

    from dcls_core.classifier import PooledClassifier

    return PooledClassifier.from_pretrained(path), AutoTokenizer.from_pretrained(str(path))


def load_generator_checkpoint(path: PathLike, label_names: Sequence[str], label_prompt: bool = True) -> Dict[str, Any]:
    """``label_prompt``: the generator's ``generator.label_prompt`` (False: the shared no-label prompt)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from dcls_core.prompting import prompt_token_ids

    model = AutoModelForMaskedLM.from_pretrained(str(path), attn_implementation="eager")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    label_token_ids = prompt_token_ids(tokenizer, model, list(label_names), label_prompt)  # reuses saved tokens
    return {"model": model, "tokenizer": tokenizer, "label_token_ids": label_token_ids}


def init_encoder_from(target: nn.Module, source: nn.Module) -> int:
    """Copy the encoder weights of ``source`` (the proxy) into ``target`` (the masked LM);
    returns how many tensors were copied (embedding rows only where shapes agree)."""
    src = getattr(source, source.base_model_prefix).state_dict()
    dst_base = getattr(target, target.base_model_prefix)
    dst = dst_base.state_dict()
    copied = 0
    for key, value in src.items():
        if key in dst and dst[key].shape == value.shape:
            dst[key] = value.clone()
            copied += 1
        elif key in dst and dst[key].dim() == 2 and dst[key].shape[1:] == value.shape[1:]:
            rows = min(dst[key].shape[0], value.shape[0])
            dst[key][:rows] = value[:rows]
            copied += 1
    dst_base.load_state_dict(dst)
    return copied


# --------------------------------------------------------------------------- importance
def score_frame(classifier: nn.Module, tokenizer, frame: pd.DataFrame, max_length: int,
                batch_size: int = 32) -> List[List[float]]:
    """Per-text-token importance (Eq. 1) of every row's text, in row order."""
    from dcls_core.importance import score_texts

    return score_texts(classifier, tokenizer, frame["text"].astype(str).tolist(), max_length, batch_size)


# --------------------------------------------------------------------------- generation plans
def plan_spec(frame: Optional[pd.DataFrame], augment_cfg: AugmentConfig, generator_cfg: GeneratorConfig,
              seed: int) -> Dict[str, Any]:
    """Which originals get pseudo samples at which steps, in a form each batch of rows applies on
    its own (:func:`plan_batch`), so a streaming stage never needs the whole set: G/E gives every
    row the same ``steps`` (n of them, rotating through the group); B/D gives the minority
    sources' steps by id, drawn from the ids and labels only (``frame`` needs no text)."""
    from dcls_core.generation import plan_balance

    steps = generator_cfg.group_steps()
    if augment_cfg.policy != "balance":
        return {"steps": [int(steps[k % len(steps)]) for k in range(int(augment_cfg.n))]}
    frame = frame.reset_index(drop=True)
    by_id: Dict[str, List[int]] = {}
    for row, step in plan_balance(frame, steps, seed):
        by_id.setdefault(str(frame["id"][row]), []).append(int(step))
    return {"steps_by_id": by_id}


def planned_count(spec: Mapping[str, Any], rows: int) -> int:
    """How many pseudo samples ``spec`` asks for from ``rows`` originals."""
    if "steps_by_id" in spec:
        return sum(len(v) for v in spec["steps_by_id"].values())
    return rows * len(spec["steps"])


def plan_batch(batch: pd.DataFrame, spec: Mapping[str, Any], importance_norm: Optional[str] = None) -> pd.DataFrame:
    """The rows of ``batch`` (``id, text, label`` [+ raw ``importance``]) that get pseudo samples,
    with their ``steps`` and, given ``importance_norm``, normalised importance."""
    from dcls_core.importance import normalise_importance

    out = batch[[c for c in ("id", "text", "label", "importance") if c in batch.columns]].copy()
    if "steps_by_id" in spec:
        out["steps"] = [list(spec["steps_by_id"].get(str(i), [])) for i in out["id"]]
    else:
        out["steps"] = [list(spec["steps"]) for _ in range(len(out))]
    out = out[out["steps"].map(len) > 0].reset_index(drop=True)
    if importance_norm is not None and "importance" in out.columns:
        out["importance"] = [normalise_importance(list(v), importance_norm) for v in out["importance"]]
    return out


def plan_sources(train_df: pd.DataFrame, augment_cfg: AugmentConfig, generator_cfg: GeneratorConfig,
                 seed: int) -> pd.DataFrame:
    """One row per original that gets pseudo samples: ``id, text, label, steps`` (list of ints)."""
    frame = train_df.reset_index(drop=True)
    return plan_batch(frame[["id", "text", "label"]], plan_spec(frame, augment_cfg, generator_cfg, seed))


def drop_empty_pseudo(pseudo: Optional[pd.DataFrame]):
    """(pseudo rows with visible text, how many came out empty): a source the tokenizer cuts to
    nothing, or text of zero-width characters only, can decode to an empty sample."""
    from dcls_core.data import blank_text

    if pseudo is None or len(pseudo) == 0:
        return pseudo, 0
    empty = blank_text(pseudo["text"])
    if empty.any():
        log.warning("dropped %d empty pseudo sample(s) (ids: %s%s)", int(empty.sum()),
                    ", ".join(pseudo.loc[empty, "id"].astype(str).head(5)), ", ..." if empty.sum() > 5 else "")
    return pseudo[~empty].reset_index(drop=True), int(empty.sum())


def _progress(total: int, desc: str, enabled: Optional[bool]):
    """A tqdm bar over rows (rate and time left); ``enabled`` None: only on a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=None if enabled is None else not enabled,
                dynamic_ncols=True)


def expected_pseudo_ids(sources: pd.DataFrame) -> List[str]:
    return [f"{sid}~p{k}" for sid, steps in zip(sources["id"], sources["steps"]) for k in range(len(steps))]


def generate_for_plan(state: Mapping[str, Any], sources: pd.DataFrame, generator_cfg: Union[GeneratorConfig, Dict],
                      max_length: int, seed: int, batch_size: int = 32) -> pd.DataFrame:
    """Pseudo rows for a batch of sources (``id, text, label, steps`` [+ ``importance``])."""
    from dcls_core.generation import generate_pseudo_samples

    cfg = generator_cfg if isinstance(generator_cfg, GeneratorConfig) else GeneratorConfig(**{
        k: v for k, v in generator_cfg.items() if k != "warmup"})
    frame = sources.reset_index(drop=True)
    plan = [(i, int(s)) for i, steps in enumerate(frame["steps"]) for s in steps]
    importance = None
    if "importance" in frame.columns:
        importance = [None if v is None else [float(x) for x in v] for v in frame["importance"]]
    with torch.no_grad():
        out = generate_pseudo_samples(state["model"], state["tokenizer"], frame, importance,
                                      state["label_token_ids"], cfg, plan, seed,
                                      batch_size=batch_size, max_length=max_length)
    return out


# --------------------------------------------------------------------------- augmented frame
AUGMENTED_COLUMNS = ["id", "text", "label", "split", "is_pseudo", "source_id", "step", "mask_ratio",
                     "changed_ratio", "changed_spans"]


def augmented_frame(train_df: pd.DataFrame, pseudo_df: Optional[pd.DataFrame]) -> pd.DataFrame:
    """Originals (is_pseudo False, step 0, ratios 0, source_id = own id) + pseudo rows, sorted by id."""
    base = train_df[["id", "text", "label", "split"]].copy()
    base["is_pseudo"] = False
    base["source_id"] = base["id"]
    base["step"] = 0
    base["mask_ratio"] = 0.0
    base["changed_ratio"] = 0.0
    base["changed_spans"] = [[] for _ in range(len(base))]
    parts = [base]
    if pseudo_df is not None and len(pseudo_df):
        parts.append(pseudo_df)
    out = pd.concat(parts, ignore_index=True, sort=False)
    out["is_pseudo"] = out["is_pseudo"].astype(bool)
    out["step"] = out["step"].astype("int64")
    cols = AUGMENTED_COLUMNS + [c for c in out.columns if c not in AUGMENTED_COLUMNS]
    return out[cols].sort_values("id", kind="stable").reset_index(drop=True)


def label_consistency(classifier: nn.Module, tokenizer, frame: pd.DataFrame, label_names: Sequence[str],
                      max_length: int) -> np.ndarray:
    """The classifier's probability of each row's (inherited) label."""
    from dcls_core.training import predict

    if len(frame) == 0:
        return np.zeros(0, dtype=np.float32)
    _, probs = predict(classifier, frame, tokenizer, list(label_names), max_length)
    index = {n: i for i, n in enumerate(label_names)}
    cols = np.array([index[str(y)] for y in frame["label"]])
    return probs[np.arange(len(frame)), cols]


# --------------------------------------------------------------------------- in-process augmenter
class DiffusionAugmenter:
    """DiffusionCLS in one process: proxy -> importance -> generator (warm-up + diffusion) -> pseudo rows.

    ``dcls augment`` uses it when Ray is not wanted; the Ray pipeline runs the same functions as
    separate, cached stages.
    """

    name = "diffusion"

    def __init__(self, model_cfg: Optional[ModelConfig] = None, generator_cfg: Optional[GeneratorConfig] = None,
                 augment_cfg: Optional[AugmentConfig] = None, classifier_cfg: Optional[ClassifierConfig] = None,
                 max_length: int = 128, cache_dir: PathLike = "runs/cache", data_root: Optional[PathLike] = None,
                 dev_df: Optional[pd.DataFrame] = None, exclude_texts: Sequence[str] = (),
                 progress: Optional[bool] = None, **_: Any):
        self.model_cfg = model_cfg or ModelConfig()
        self.generator_cfg = generator_cfg or GeneratorConfig()
        self.augment_cfg = augment_cfg or AugmentConfig()
        self.classifier_cfg = classifier_cfg or ClassifierConfig()
        self.max_length = max_length
        self.cache_dir = Path(cache_dir)
        self.data_root = data_root
        self.dev_df = dev_df
        self.exclude_texts = list(exclude_texts)  # test texts: never in the warm-up corpus
        self.progress = progress  # row progress bars (None: only on a terminal)
        self.stats: Dict[str, Any] = {}

    def augment(self, train_df: pd.DataFrame, label_names: List[str], seed: int,
                proxy: Optional[nn.Module] = None) -> pd.DataFrame:
        """Pseudo rows for ``train_df``; ``proxy``: an already trained proxy (e.g. the raw arm).
        The three steps below are also called one by one where each is cached (``jobs/tune.py``)."""
        from dcls_core.artifacts import sort_rows
        from dcls_core.models import load_classifier, load_tokenizer
        from dcls_core.training import train_proxy

        corpus_texts = train_df["text"].tolist()  # the warm-up corpus keeps the given order, as the stages' does
        train_df = sort_rows(train_df)  # the rest reads them in id order, as the stages' fits and batches do
        tok = load_tokenizer(self.model_cfg)
        if proxy is None:
            proxy = load_classifier(self.model_cfg, len(label_names), seed)
            train_proxy(proxy, tok, train_df, self.dev_df, label_names, self.classifier_cfg, self.max_length, seed)
        importance = self.normalise(self.importance(train_df, proxy, tok))
        state, stats = self.train_generator(train_df, importance, label_names, seed, proxy, corpus_texts)
        pseudo = self.generate(state, train_df, importance, label_names, seed, proxy, tok)
        self.stats = dict(stats, **self.stats)
        return pseudo

    def importance(self, train_df: pd.DataFrame, proxy: nn.Module, tokenizer) -> List[List[float]]:
        """Eq. 1 scores of every row (not normalised: ``normalise`` applies generator.importance_norm)."""
        chunk = 32  # rows per progress update; scores do not depend on it
        scores: List[List[float]] = []
        with _progress(len(train_df), "importance", self.progress) as bar:
            for start in range(0, len(train_df), chunk):
                part = train_df.iloc[start:start + chunk]
                scores += score_frame(proxy, tokenizer, part, self.max_length)
                bar.update(len(part))
        return scores

    def normalise(self, scores: Sequence[Sequence[float]]) -> List[List[float]]:
        from dcls_core.importance import normalise_importance

        return [normalise_importance(list(v), self.generator_cfg.importance_norm) for v in scores]

    def train_generator(self, train_df: pd.DataFrame, importance: Sequence[Sequence[float]],
                        label_names: List[str], seed: int, proxy: Optional[nn.Module] = None,
                        corpus_texts: Optional[Sequence[str]] = None):
        """(generator state for ``generate``, stats): the cached warm-up (on ``corpus_texts``, by
        default ``train_df``'s texts, + the configured corpus), then diffusion training on
        ``train_df`` with its normalised ``importance``."""
        from dcls_core.diffusion import train_generator
        from dcls_core.prompting import prompt_token_ids
        from dcls_core.training import set_seed
        from dcls_core.warmup import load_or_warmup, run_corpus

        set_seed(seed)  # as the pipeline's generator stage does: dropout draws do not depend on what ran before
        texts = run_corpus(self.generator_cfg.warmup, list(corpus_texts) if corpus_texts is not None else
                           train_df["text"].tolist(),
                           self.dev_df["text"].tolist() if self.dev_df is not None else [], self.exclude_texts,
                           self.data_root)
        gen, gen_tok, wstats = load_or_warmup(self.model_cfg, self.generator_cfg.warmup, texts,
                                              self.cache_dir, seed)
        if self.generator_cfg.init_from_proxy and wstats.get("skipped") and proxy is not None:
            init_encoder_from(gen, proxy)
        label_ids = prompt_token_ids(gen_tok, gen, label_names, self.generator_cfg.label_prompt)
        gstats = train_generator(gen, gen_tok, train_df.reset_index(drop=True), list(importance), label_ids,
                                 self.generator_cfg, seed, max_length=self.max_length)
        return ({"model": gen, "tokenizer": gen_tok, "label_token_ids": label_ids},
                {"warmup": wstats, "generator": gstats})

    def generate(self, state: Mapping[str, Any], train_df: pd.DataFrame, importance: Sequence[Sequence[float]],
                 label_names: List[str], seed: int, proxy: nn.Module, tokenizer) -> pd.DataFrame:
        """The pseudo rows of ``train_df`` (plan, reverse process, empty ones dropped), each with the
        proxy's ``consistency``, filtered by augment.min_confidence."""
        from dcls_core.augment import empty_pseudo_frame

        frame = train_df.reset_index(drop=True)
        sources = plan_sources(frame, self.augment_cfg, self.generator_cfg, seed)
        imp_by_id = dict(zip(frame["id"], importance))
        sources["importance"] = [imp_by_id[i] for i in sources["id"]]
        chunk = 32  # sources per progress update; samples do not depend on it
        parts = []
        with _progress(int(sum(len(s) for s in sources["steps"])), "pseudo samples", self.progress) as bar:
            for start in range(0, len(sources), chunk):
                parts.append(generate_for_plan(state, sources.iloc[start:start + chunk], self.generator_cfg,
                                               self.max_length, seed))
                bar.update(len(parts[-1]))
        pseudo = pd.concat(parts, ignore_index=True) if parts else empty_pseudo_frame()
        pseudo, empty = drop_empty_pseudo(pseudo)
        pseudo = pseudo.sort_values("id", kind="stable").reset_index(drop=True)
        pseudo["consistency"] = label_consistency(proxy, tokenizer, pseudo, label_names, self.max_length)
        low = 0
        if self.augment_cfg.min_confidence is not None:  # the consistency filter, the proxy as judge
            keep = pseudo["consistency"] >= self.augment_cfg.min_confidence
            low = int((~keep).sum())
            pseudo = pseudo[keep].reset_index(drop=True)
        self.stats = {"pseudo_rows": len(pseudo), "empty_dropped": empty, "dropped_low_confidence": low,
                      "generator_cfg": dataclasses.asdict(self.generator_cfg)}
        return pseudo


def _register() -> None:
    from dcls_core.augment import available_augmenters, register_augmenter

    if "diffusion" not in available_augmenters():
        register_augmenter("diffusion")(DiffusionAugmenter)


_register()
