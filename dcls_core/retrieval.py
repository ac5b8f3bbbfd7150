"""``retrieval``: pseudo rows that are real in-domain sentences, labelled by the proxy.

Where DiffusionCLS rewrites a labelled sentence, this augmenter looks one up. For each original it
takes, from the run's unlabelled in-domain corpus (``augment.retrieval.corpus``, by default the
generator's warm-up corpus), the ``n`` sentences nearest to it (cosine of the proxy's pooled
features) among those the proxy assigns to the original's label *confidently*: the proxy's top class
is that label and its probability is in the top ``1 - quantile`` of that class's probabilities over
the corpus. The pseudo row inherits the original's label, its ``source_id`` is the original (so it
rides in its source's batch like any pseudo sample) and its ``consistency`` is the proxy's probability
of that label.

The proxy (``augment.retrieval.proxy``) is ``probe`` by default: the frozen encoder with a logistic
regression on the originals, the raw arm's step 0. Its corpus features do not depend on the seed or
the labelled rows, so they are computed once per corpus and cached under ``cache_dir``. ``raw`` uses
the fine-tuned raw arm instead (the pipeline passes its checkpoint).

Why it is here (docs/results.md): on the embedded MiniLM the warmed-up diffusion generator carries no
label knowledge the proxy lacks, and its rewrites of label words are noise; the unlabelled corpus the
generator is warmed up on does carry some, and the proxy's most confident calls on it are right far
more often than the proxy is on average (measured on held-out SST-2 rows). It is semi-supervised
learning from that corpus, not DiffusionCLS, and the report names it so.

Corpus texts equal to a training, dev or test text (``exclude_texts``) are never used.
Deterministic: no sampling; ties in similarity keep corpus order.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

from dcls_core.augment import empty_pseudo_frame, register_augmenter
from dcls_core.config import (AugmentConfig, ClassifierConfig, ConfigError, DatasetConfig, GeneratorConfig,
                              ModelConfig)

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["RetrievalAugmenter", "confident_neighbours", "corpus_sources", "retrieval_corpus"]


def corpus_sources(augment_cfg: AugmentConfig, generator_cfg: GeneratorConfig,
                   dataset_cfg: Optional[DatasetConfig] = None) -> List[str]:
    """What to retrieve from: ``augment.retrieval.corpus``; unset, the generator's warm-up corpus; that
    empty too, the dataset's own training split (a preset by name, else its training file)."""
    if augment_cfg.retrieval.corpus is not None:
        return list(augment_cfg.retrieval.corpus)
    if generator_cfg.warmup.corpus:
        return list(generator_cfg.warmup.corpus)
    if dataset_cfg is not None:
        from dcls_core.config import configs_dir

        if (configs_dir() / "dataset" / f"{dataset_cfg.name}.yaml").exists():
            return [dataset_cfg.name]
        own = dataset_cfg.files.get("train") or dataset_cfg.files.get("all")
        if own:
            return [own]
    raise ConfigError("augment.method=retrieval needs an unlabelled in-domain corpus: set "
                      "augment.retrieval.corpus=[<file or dataset preset>]")


def retrieval_corpus(augment_cfg: AugmentConfig, generator_cfg: GeneratorConfig, data_root: Optional[PathLike],
                     exclude: Sequence[str], dataset_cfg: Optional[DatasetConfig] = None) -> List[str]:
    """The unlabelled corpus to retrieve from (:func:`corpus_sources`), whitespace-normalised,
    deduplicated, without ``exclude`` (test texts), capped at ``augment.retrieval.max_corpus`` (the
    warm-up's ``selection`` rule)."""
    from dcls_core.warmup import corpus_texts

    sources = corpus_sources(augment_cfg, generator_cfg, dataset_cfg)
    wcfg = dataclasses.replace(generator_cfg.warmup, corpus=sources, max_sentences=augment_cfg.retrieval.max_corpus)
    return corpus_texts(wcfg, [], data_root, exclude=list(exclude), seed=wcfg.seed)


def confident_neighbours(source_features: np.ndarray, source_labels: Sequence[int], corpus_features: np.ndarray,
                         corpus_probs: np.ndarray, k: int, quantile: float) -> List[List[int]]:
    """For each source, the indices of its ``k`` most similar corpus rows (cosine, most similar first)
    among the rows whose top class is the source's label with a probability at or above that class's
    ``quantile`` over the corpus."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    corpus_unit = unit(corpus_features)
    top = corpus_probs.argmax(axis=1)
    eligible: Dict[int, np.ndarray] = {}
    for c in sorted(set(int(y) for y in source_labels)):
        p = corpus_probs[:, c]
        ok = (top == c) & (p >= np.quantile(p, quantile)) if len(p) else np.zeros(0, dtype=bool)
        eligible[c] = np.flatnonzero(ok)
    out: List[List[int]] = []
    src_unit = unit(source_features)
    for row, label in enumerate(source_labels):
        cand = eligible[int(label)]
        sims = corpus_unit[cand] @ src_unit[row]
        order = np.argsort(-sims, kind="stable")[:k]
        out.append(cand[order].tolist())
    return out


@register_augmenter("retrieval")
class RetrievalAugmenter:
    """Confidently proxy-labelled corpus neighbours of each original (see the module docstring).

    ``proxy`` (with ``augment.retrieval.proxy=raw``): a trained classifier (an ``nn.Module`` or a
    checkpoint folder, e.g. the pipeline's raw arm); without one it is trained here (the raw arm's
    recipe, dev rows for selection). ``cache_dir``: where the probe proxy's corpus features are kept.
    The policy is the run's: G/E ``augment.n`` neighbours per original, B/D the minority classes' sources
    in turn until balanced (a source's k-th pseudo row is its k-th neighbour).
    """

    name = "retrieval"

    def __init__(self, model_cfg: Optional[ModelConfig] = None, generator_cfg: Optional[GeneratorConfig] = None,
                 augment_cfg: Optional[AugmentConfig] = None, classifier_cfg: Optional[ClassifierConfig] = None,
                 max_length: int = 128, data_root: Optional[PathLike] = None, dev_df: Optional[pd.DataFrame] = None,
                 exclude_texts: Sequence[str] = (), proxy: Any = None, cache_dir: Optional[PathLike] = None,
                 dataset_cfg: Optional[DatasetConfig] = None, **_: Any):
        self.model_cfg = model_cfg or ModelConfig()
        self.generator_cfg = generator_cfg or GeneratorConfig()
        self.augment_cfg = augment_cfg or AugmentConfig(method="retrieval")
        self.classifier_cfg = classifier_cfg or ClassifierConfig()
        self.max_length = max_length
        self.data_root = data_root
        self.dev_df = dev_df
        self.exclude_texts = list(exclude_texts)
        self.proxy = proxy  # used with augment.retrieval.proxy=raw
        self.cache_dir = cache_dir
        self.dataset_cfg = dataset_cfg  # its training split is the corpus when none is named
        self.stats: Dict[str, Any] = {}

    def _proxy(self, train_df: pd.DataFrame, label_names: List[str], seed: int):
        """(model, tokenizer) of the raw-arm proxy: the one given, or the raw arm's recipe trained here."""
        from dcls_core.models import load_classifier, load_tokenizer

        if isinstance(self.proxy, (str, Path)):
            from dcls_core.diffusion_augmenter import load_classifier_checkpoint

            return load_classifier_checkpoint(self.proxy)
        tok = load_tokenizer(self.model_cfg)
        if self.proxy is not None:
            return self.proxy, tok
        from dcls_core.stages import raw_recipe
        from dcls_core.training import fit_classifier

        model = load_classifier(self.model_cfg, len(label_names), seed)
        fit_classifier(model, tok, train_df, self.dev_df, label_names, raw_recipe(self.classifier_cfg),
                       self.max_length, seed)
        return model, tok

    def _frozen_features(self, model, tokenizer, corpus: List[str]) -> np.ndarray:
        """The frozen encoder's pooled features of ``corpus``, cached under ``cache_dir`` (they do not
        depend on the seed or the labelled rows, so every run on the same corpus shares them)."""
        import hashlib

        from dcls_core.artifacts import stable_hash

        digest = hashlib.sha256("\n".join(corpus).encode("utf-8")).hexdigest()
        key = stable_hash({"model": self.model_cfg, "max_length": self.max_length, "corpus": digest})
        path = Path(self.cache_dir) / "retrieval" / f"features-{key}.npy" if self.cache_dir else None
        if path is not None and path.exists():
            feats = np.load(path)
            if feats.shape[0] == len(corpus):
                return feats
        feats = model.embed(tokenizer, corpus, self.max_length).numpy()
        if path is not None:
            import os

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
            np.save(tmp, feats)
            os.replace(tmp, path)
        return feats

    def _scored_corpus(self, frame: pd.DataFrame, corpus: List[str], label_names: List[str], seed: int):
        """(source features, corpus features, corpus probabilities) from the configured proxy."""
        from dcls_core.training import predict

        if self.augment_cfg.retrieval.proxy == "probe":  # frozen encoder + a probe of the originals
            import torch

            from dcls_core.classifier import probe_classifier
            from dcls_core.models import load_tokenizer

            model = probe_classifier(self.model_cfg, frame, label_names, self.max_length,
                                     self.classifier_cfg.probe_C, seed)
            tok = load_tokenizer(self.model_cfg)
            feats = self._frozen_features(model, tok, corpus)
            with torch.no_grad():
                logits = model.head(torch.as_tensor(feats))
            probs = torch.softmax(logits.float(), dim=-1).numpy()
            return model.embed(tok, list(frame["text"].astype(str)), self.max_length).numpy(), feats, probs
        model, tok = self._proxy(frame, label_names, seed)
        _, probs, feats = predict(model, pd.DataFrame({"text": corpus}), tok, label_names, self.max_length,
                                  features=True)
        _, _, src_feats = predict(model, frame, tok, label_names, self.max_length, features=True)
        return src_feats, feats, probs

    def augment(self, train_df: pd.DataFrame, label_names: List[str], seed: int) -> pd.DataFrame:
        from dcls_core.baselines import _sources, baseline_plan, pseudo_frame, pseudo_record

        items = baseline_plan(train_df, self.augment_cfg, seed)
        if not items:
            return empty_pseudo_frame()
        frame = train_df.reset_index(drop=True)
        labelled = list(frame["text"].astype(str))
        if self.dev_df is not None:
            labelled += list(self.dev_df["text"].astype(str))
        # the corpus without test (and caller-excluded) texts: the same for every seed, so its features
        # can be shared; this run's labelled texts are dropped after scoring
        corpus = retrieval_corpus(self.augment_cfg, self.generator_cfg, self.data_root, self.exclude_texts,
                                  self.dataset_cfg)
        src_feats, feats, probs = self._scored_corpus(frame, corpus, label_names, seed) if corpus else (None, None, None)
        banned = {" ".join(t.split()).lower() for t in labelled}
        keep = np.array([t.lower() not in banned for t in corpus], dtype=bool)
        if not keep.any():
            log.warning("retrieval: the corpus %s has no text that is not labelled or test; no pseudo samples "
                        "(name an unlabelled in-domain corpus with augment.retrieval.corpus=[...])",
                        corpus_sources(self.augment_cfg, self.generator_cfg, self.dataset_cfg))
            self.stats = {"pseudo_rows": 0, "corpus": 0}
            return empty_pseudo_frame()
        corpus = [t for t, k in zip(corpus, keep) if k]
        feats, probs = feats[keep], probs[keep]
        index = {str(n): i for i, n in enumerate(label_names)}
        depth = 1 + max(k for _, _, k in items)
        neighbours = confident_neighbours(src_feats, [index[str(y)] for y in frame["label"]], feats, probs,
                                          depth, self.augment_cfg.retrieval.quantile)
        sources = _sources(frame)
        records, consistency = [], {}
        for row, _, k in items:
            if k >= len(neighbours[row]):
                continue  # fewer confident corpus rows of this label than asked for
            j = neighbours[row][k]
            text = corpus[j]
            records.append(pseudo_record(sources[row], k, text, 1.0, [[0, len(text)]], mask_ratio=0.0))
            consistency[records[-1]["id"]] = float(probs[j, index[sources[row]["label"]]])
        out = pseudo_frame(records)
        if len(out):
            out["consistency"] = out["id"].map(consistency).astype("float64")
        self.stats = {"pseudo_rows": len(out), "planned": len(items), "corpus": len(corpus),
                      "proxy": self.augment_cfg.retrieval.proxy,
                      "distinct_texts": int(out["text"].nunique()) if len(out) else 0,
                      "mean_consistency": float(out["consistency"].mean()) if len(out) else None}
        log.info("retrieval: %d pseudo rows (%d distinct corpus texts) for %d planned, from a corpus of %d",
                 len(out), self.stats["distinct_texts"], len(items), len(corpus))
        return out
