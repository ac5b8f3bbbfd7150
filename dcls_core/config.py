"""Typed configuration for every stage (Hydra structured configs).

Each dataclass validates itself in ``__post_init__`` so that a bad value fails with a
readable message before any compute: ``OmegaConf.to_object`` (see ``to_config``) builds
the dataclasses and so runs these checks. ``register_configs`` puts the schemas into
Hydra's ConfigStore, which also rejects wrong types. Unknown keys are refused here, also when
added with ``+`` (which Hydra would accept and the dataclasses silently drop), and a dict value
given on the command line (``dataset.files={train: a.csv}``) replaces the preset's dict instead
of being merged into it.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the rule."""


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {rule}")


def _one_of(key: str, value: str, allowed: tuple) -> None:
    _check(value in allowed, key, f"must be one of {list(allowed)}", value)


@dataclass
class DatasetConfig:
    """Where a labelled source lives and how its columns map to the schema."""

    name: str = "custom"
    # csv | tsv | json | jsonl | parquet | hf (hub name or load_from_disk folder)
    format: str = "csv"
    # split name -> file (relative to data.root unless absolute); a single "all" entry
    # means the source has one file that is split by ``test_size``/``dev_size``.
    files: Dict[str, str] = field(default_factory=dict)
    text_column: str = "text"
    label_column: str = "label"
    id_column: Optional[str] = None
    # per-split column overrides, e.g. {"test": {"text": "content"}} (keys: text, label, id)
    split_columns: Dict[str, Dict[str, str]] = field(default_factory=dict)
    # optional label-id -> name mapping, e.g. {"0": "negative", "1": "positive"}
    label_names: Dict[str, str] = field(default_factory=dict)
    # multi-hot sources (SenWave): label columns; rows with exactly one label are kept
    multi_hot_columns: List[str] = field(default_factory=list)
    keep_top_labels: Optional[int] = None
    test_size: Optional[float] = None  # carve test from "all" (stratified, seeded)
    split_seed: int = 42
    encoding: str = "utf-8"
    language: str = "en"
    hf_config: Optional[str] = None
    # format=hf: hub name for datasets.load_dataset, or a datasets.save_to_disk folder
    # (relative to data.root unless absolute); ``files`` then maps split -> HF split name
    hf_path: Optional[str] = None
    # rows marked true in this column (an earlier dcls augment output) are pseudo samples: set
    # aside, never originals (dcls augment keeps them as they are); null: every row is an original
    pseudo_column: Optional[str] = "is_pseudo"

    def __post_init__(self) -> None:
        _one_of("dataset.format", self.format, ("csv", "tsv", "json", "jsonl", "parquet", "hf"))
        if self.test_size is not None:
            _check(0 < self.test_size < 1, "dataset.test_size", "must be in (0, 1)", self.test_size)
        if self.keep_top_labels is not None:
            _check(self.keep_top_labels >= 2, "dataset.keep_top_labels", "must be >= 2", self.keep_top_labels)
        _check(self.split_seed >= 0, "dataset.split_seed", "must be >= 0 (numpy seeds)", self.split_seed)


@dataclass
class DataConfig:
    """How the low-resource training set is drawn from a dataset (all seeded, stratified)."""

    root: Optional[str] = None  # DCLS_DATA_DIR overrides; default ../shared/data
    protocol: str = "full"  # full | k_shot | fraction
    k: int = 10  # per class, for k_shot
    fraction: float = 1.0  # of the training split, for fraction
    dev_size: float = 0.1  # share of train carved as dev when the source has no dev split
    dev_k: Optional[int] = None  # k_shot: dev rows per class (default k)
    seed: int = 42
    max_length: int = 128

    def __post_init__(self) -> None:
        _one_of("data.protocol", self.protocol, ("full", "k_shot", "fraction"))
        _check(self.k >= 1, "data.k", "must be >= 1", self.k)
        _check(0 < self.fraction <= 1, "data.fraction", "must be in (0, 1]", self.fraction)
        _check(0 < self.dev_size < 1, "data.dev_size", "must be in (0, 1)", self.dev_size)
        _check(self.max_length >= 8, "data.max_length", "must be >= 8", self.max_length)
        if self.dev_k is not None:
            _check(self.dev_k >= 1, "data.dev_k", "must be >= 1", self.dev_k)
        _check(self.seed >= 0, "data.seed", "must be >= 0 (numpy seeds; it follows the root seed unless set)",
               self.seed)

    def resolved_root(self) -> Path:
        env = os.environ.get("DCLS_DATA_DIR")
        if env:
            return Path(env).expanduser()
        if self.root:
            return Path(self.root).expanduser()
        return Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class ModelConfig:
    """The encoder: ``minilm`` (embedded), ``tiny`` (random, tests) or a hub id / local path."""

    name: str = "minilm"
    # classifier pooling: auto (what the checkpoint declares: mean for sentence-transformers
    # models such as the embedded MiniLM, the first token otherwise) | mean | cls
    pooling: str = "auto"
    tiny_hidden: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 2
    tiny_intermediate: int = 128

    def __post_init__(self) -> None:
        _check(bool(self.name), "model.name", "must not be empty", self.name)
        _one_of("model.pooling", self.pooling, ("auto", "mean", "cls"))
        for key in ("tiny_hidden", "tiny_layers", "tiny_heads", "tiny_intermediate"):
            _check(getattr(self, key) >= 1, f"model.{key}", "must be >= 1", getattr(self, key))
        _check(self.tiny_hidden % self.tiny_heads == 0, "model.tiny_hidden",
               "must be divisible by model.tiny_heads", self.tiny_hidden)


@dataclass
class WarmupConfig:
    """Continued masked-LM training of a generator whose checkpoint has no MLM head."""

    enabled: str = "auto"  # auto (only when the checkpoint lacks an MLM head) | true | false
    corpus: List[str] = field(default_factory=list)  # files or dataset presets, labels ignored
    max_sentences: int = 20000
    max_steps: int = 2000
    max_seconds: float = 1800.0
    batch_size: int = 32
    lr: float = 2e-4
    head_lr: float = 2e-3
    mask_prob: float = 0.15
    restrict_vocab: bool = True
    # per-sentence mask rate ~ U(mask_prob, mask_prob_max) (None: always mask_prob); a
    # range up to the generation noise level (~0.5) trains the model for what it will do
    # and gives twice the masked targets per forward pass
    mask_prob_max: Optional[float] = 0.5
    max_length: int = 64
    weight_decay: float = 0.01
    lr_warmup: float = 0.05  # share of the budget (steps or seconds) with a rising lr
    freeze_embeddings: bool = True  # keep the (tied) word embeddings fixed: ~2x faster steps on CPU
    train_layers: int = 0  # train only the top N encoder layers (0: all); lower ones frozen
    prior_bias: bool = True  # start a fresh decoder bias at the corpus' log unigram frequencies
    head_init_scale: float = 1.0  # fresh head: scale of its output LayerNorm gain (0.1 measured worse)
    train_mask_embedding: bool = True  # learn the [MASK] input row even with frozen embeddings
    # which corpus sentences fill max_sentences: longest first (closer to full-sentence test sets,
    # more tokens per step; measured a little better on SST-2) or random (seeded)
    selection: str = "longest"
    seed: int = 0  # fixed so the cached warm-up is shared across run seeds
    # the corpus alone (no training texts of this run; test texts still excluded): one warm-up per
    # corpus, shared by every seed and row sample (benchmarks). Unlabelled dev texts may be in it.
    corpus_only: bool = False

    def __post_init__(self) -> None:
        _one_of("generator.warmup.enabled", str(self.enabled).lower(), ("auto", "true", "false"))
        _check(0 < self.mask_prob < 1, "generator.warmup.mask_prob", "must be in (0, 1)", self.mask_prob)
        # 0 steps would leave a fresh MLM head untrained: switch the warm-up off instead
        _check(self.max_steps >= 1, "generator.warmup.max_steps",
               "must be >= 1 (use generator.warmup.enabled=false for no warm-up)", self.max_steps)
        _check(self.max_seconds >= 0, "generator.warmup.max_seconds", "must be >= 0 (0: no time limit)",
               self.max_seconds)
        _check(self.weight_decay >= 0, "generator.warmup.weight_decay", "must be >= 0", self.weight_decay)
        _check(self.head_init_scale > 0, "generator.warmup.head_init_scale", "must be > 0", self.head_init_scale)
        _check(self.seed >= 0, "generator.warmup.seed", "must be >= 0", self.seed)
        if self.mask_prob_max is not None:
            _check(self.mask_prob <= self.mask_prob_max < 1, "generator.warmup.mask_prob_max",
                   "must be in [mask_prob, 1)", self.mask_prob_max)
        _check(self.max_length >= 8, "generator.warmup.max_length", "must be >= 8", self.max_length)
        _check(self.batch_size >= 1, "generator.warmup.batch_size", "must be >= 1", self.batch_size)
        _check(self.max_sentences >= 1, "generator.warmup.max_sentences", "must be >= 1", self.max_sentences)
        _check(self.lr > 0, "generator.warmup.lr", "must be > 0", self.lr)
        _check(self.head_lr > 0, "generator.warmup.head_lr", "must be > 0", self.head_lr)
        _check(0 <= self.lr_warmup < 1, "generator.warmup.lr_warmup", "must be in [0, 1)", self.lr_warmup)
        _one_of("generator.warmup.selection", self.selection, ("random", "longest"))
        _check(self.train_layers >= 0, "generator.warmup.train_layers", "must be >= 0", self.train_layers)


@dataclass
class GeneratorConfig:
    """The label-aware diffusion LM: schedule, training and reverse-process decoding."""

    T: int = 32
    # lambda > 0 masks label-critical tokens first (the paper); < 0 protects them (for generators
    # too weak to rebuild them); 0 is the plain linear schedule
    lam: float = 0.5
    # raw (Eq. 1 values, the paper) | max | rank: see dcls_core.importance. max makes lambda act as the
    # paper's Fig. 2 draws it; not yet compared on dev (docs/results.md)
    importance_norm: str = "max"
    group_size: int = 4
    # 1-based: steps (g-1)*size+1 .. g*size. The paper uses 4 (steps 13-16 of 32); 2 (steps 5-8,
    # ~20 % of tokens masked) harmed least on held-out dev (docs/results.md); paper presets set 4
    group_index: int = 2
    epochs: int = 2
    min_steps: int = 0  # floor on generator optimiser steps (an epoch of 20 rows is 2 steps)
    lr: float = 4e-6
    batch_size: int = 16
    init_from_proxy: bool = True
    reverse_steps: int = 4  # k; 1 = the authors' one-pass decoding
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    # the label prompt (Sec. 3.2); false: every row gets the same neutral prompt token, so the
    # generator sees no label (the paper's "w/o label prompting" ablation; same sequence layout)
    label_prompt: bool = True
    warmup: WarmupConfig = field(default_factory=WarmupConfig)

    def __post_init__(self) -> None:
        _check(self.T >= 1, "generator.T", "must be >= 1", self.T)
        _check(-1 <= self.lam <= 1, "generator.lam", "must be in [-1, 1]", self.lam)
        _one_of("generator.importance_norm", self.importance_norm, ("raw", "max", "rank"))
        _check(self.group_size >= 1 and self.T % self.group_size == 0, "generator.group_size",
               f"must be >= 1 and divide T={self.T}", self.group_size)
        groups = self.T // self.group_size if self.group_size else 0
        _check(1 <= self.group_index <= groups, "generator.group_index",
               f"must be in 1..T/group_size = 1..{groups}", self.group_index)
        _check(self.min_steps >= 0, "generator.min_steps", "must be >= 0", self.min_steps)
        _check(self.reverse_steps >= 1, "generator.reverse_steps", "must be >= 1", self.reverse_steps)
        _check(self.temperature > 0, "generator.temperature", "must be > 0", self.temperature)
        _check(0 < self.top_p <= 1, "generator.top_p", "must be in (0, 1]", self.top_p)
        _check(self.top_k >= 0, "generator.top_k", "must be >= 0", self.top_k)
        _check(self.lr > 0, "generator.lr", "must be > 0", self.lr)
        # 0 epochs would generate from a generator that never saw the label prompts
        _check(self.epochs >= 1, "generator.epochs", "must be >= 1", self.epochs)
        _check(self.batch_size >= 1, "generator.batch_size", "must be >= 1", self.batch_size)

    def epochs_for(self, batches_per_epoch: int) -> int:
        """Epochs to run: ``epochs``, or more when needed to reach ``min_steps``."""
        per = max(1, int(batches_per_epoch))
        return max(self.epochs, -(-self.min_steps // per))

    def group_steps(self) -> List[int]:
        start = (self.group_index - 1) * self.group_size + 1
        return list(range(start, start + self.group_size))


@dataclass
class EDAConfig:
    """EDA (Wei & Zou 2019): the rates of its four operations (the paper's alpha = 0.1 for all)."""

    alpha_sr: float = 0.1  # synonym replacement: max(1, int(alpha * words)) words
    alpha_ri: float = 0.1  # random insertion of synonyms
    alpha_rs: float = 0.1  # random swaps
    p_rd: float = 0.1  # random deletion: each word with this probability
    # a WordNet 3.0 database folder: Debian's wordnet-base, or an nltk_data corpora/wordnet folder
    wordnet_dir: str = "/usr/share/wordnet"

    def __post_init__(self) -> None:
        for key in ("alpha_sr", "alpha_ri", "alpha_rs", "p_rd"):
            _check(0 <= getattr(self, key) <= 1, f"augment.eda.{key}", "must be in [0, 1]", getattr(self, key))
        rates = (self.alpha_sr, self.alpha_ri, self.alpha_rs, self.p_rd)
        _check(max(rates) > 0, "augment.eda", "needs at least one operation with a rate > 0", rates)


@dataclass
class AEDAConfig:
    """AEDA (Karimi et al. 2021): 1 .. int(ratio * words + 1) punctuation marks inserted."""

    ratio: float = 0.3
    marks: List[str] = field(default_factory=lambda: [".", ";", "?", ":", "!", ","])

    def __post_init__(self) -> None:
        _check(0 < self.ratio <= 1, "augment.aeda.ratio", "must be in (0, 1]", self.ratio)
        _check(len(self.marks) > 0 and all(m and not any(c.isspace() for c in m) for m in self.marks),
               "augment.aeda.marks", "must be a non-empty list of marks without whitespace", self.marks)


@dataclass
class MLMConfig:
    """Masked-LM substitution: uniform masking of text tokens, filled by the run's warmed-up generator."""

    mask_prob: float = 0.15  # per text token (at least one); CBERT's 15 %
    batch_size: int = 32

    def __post_init__(self) -> None:
        _check(0 < self.mask_prob <= 1, "augment.mlm.mask_prob", "must be in (0, 1]", self.mask_prob)
        _check(self.batch_size >= 1, "augment.mlm.batch_size", "must be >= 1", self.batch_size)


@dataclass
class BacktranslationConfig:
    """Round-trip translation through a pivot language with two seq2seq checkpoints (hub ids or folders)."""

    forward_model: str = "Helsinki-NLP/opus-mt-en-de"
    backward_model: str = "Helsinki-NLP/opus-mt-de-en"
    batch_size: int = 16
    sample: bool = True  # sample the pivot translation (a source's pseudo samples differ); false: greedy
    top_p: float = 0.9
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _check(bool(self.forward_model) and bool(self.backward_model), "augment.backtranslation.forward_model/"
               "backward_model", "must not be empty", (self.forward_model, self.backward_model))
        _check(self.batch_size >= 1, "augment.backtranslation.batch_size", "must be >= 1", self.batch_size)
        _check(0 < self.top_p <= 1, "augment.backtranslation.top_p", "must be in (0, 1]", self.top_p)
        _check(self.temperature > 0, "augment.backtranslation.temperature", "must be > 0", self.temperature)


@dataclass
class RetrievalConfig:
    """Retrieval from an unlabelled in-domain corpus (dcls_core.retrieval): each original's nearest
    corpus sentences among those the proxy confidently gives its label."""

    # files or dataset presets; None: generator.warmup.corpus, or when that is empty too the dataset's
    # own training split (its unsampled rows are the unlabelled text of a k-shot or fraction run)
    corpus: Optional[List[str]] = None
    quantile: float = 0.75  # confident = the proxy's top class, probability >= this quantile of the class
    max_corpus: int = 20000  # corpus sentences scored by the proxy (generator.warmup.selection picks them)
    # who labels and embeds the corpus: "probe" (the frozen encoder and a logistic regression on the
    # originals: its corpus features are cached and shared by every seed) or "raw" (the raw arm)
    proxy: str = "probe"

    def __post_init__(self) -> None:
        _one_of("augment.retrieval.proxy", self.proxy, ("probe", "raw"))
        _check(0 <= self.quantile < 1, "augment.retrieval.quantile", "must be in [0, 1)", self.quantile)
        _check(self.max_corpus >= 1, "augment.retrieval.max_corpus", "must be >= 1", self.max_corpus)


# The paper's ablations of DiffusionCLS (augment.ablations), applied to the composed config by
# Config.__post_init__, so that an experiment preset composed later cannot undo them.
ABLATIONS = {
    "no_label_prompt": "generator.label_prompt=false",
    "no_noise_resistant": "classifier.alpha=0",
    "no_label_schedule": "generator.lam=0",
    "static": "augment.mode=static",
    "reflective": "augment.mode=reflective",
}


@dataclass
class AugmentConfig:
    """Which augmenter, how many pseudo samples, and how they are refreshed."""

    # diffusion | none | eda | aeda | mlm | resample | backtranslation | retrieval (dcls_core.augment registry)
    method: str = "diffusion"
    policy: str = "per_sample"  # per_sample (G/E) | balance (B/D)
    n: int = 4  # pseudo samples per original (per_sample)
    mode: str = "static"  # static | reflective (diffusion only)
    regenerate_every: int = 1  # R epochs, reflective mode
    min_confidence: Optional[float] = None  # optional judge filter (off: the paper has none)
    ablations: List[str] = field(default_factory=list)  # names in ABLATIONS (method diffusion)
    eda: EDAConfig = field(default_factory=EDAConfig)
    aeda: AEDAConfig = field(default_factory=AEDAConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    backtranslation: BacktranslationConfig = field(default_factory=BacktranslationConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def __post_init__(self) -> None:
        _one_of("augment.policy", self.policy, ("per_sample", "balance"))
        _one_of("augment.mode", self.mode, ("static", "reflective"))
        _check(self.n >= 0, "augment.n", "must be >= 0", self.n)
        _check(self.regenerate_every >= 1, "augment.regenerate_every", "must be >= 1", self.regenerate_every)
        if self.min_confidence is not None:
            _check(0 <= self.min_confidence <= 1, "augment.min_confidence", "must be in [0, 1]", self.min_confidence)
        for name in self.ablations:
            _one_of("augment.ablations", name, tuple(ABLATIONS))
        _check(not ({"static", "reflective"} <= set(self.ablations)), "augment.ablations",
               "names static and reflective together", self.ablations)
        if self.method != "diffusion":
            _check(not self.ablations, "augment.ablations", f"are ablations of diffusion, not of {self.method!r}",
                   self.ablations)
            # baselines write one static pseudo set; regenerating needs the diffusion generator
            _check(self.mode == "static" or self.method == "none", "augment.mode",
                   f"must be static for augment.method={self.method!r} (reflective regenerates with the "
                   "diffusion generator): add augment.mode=static", self.mode)

    def apply_ablations(self, generator: "GeneratorConfig", classifier: "ClassifierConfig"):
        """(augment, generator, classifier) with ``ablations`` applied (dataclasses.replace re-validates)."""
        import dataclasses as _dc

        aug, gen, clf = self, generator, classifier
        for name in self.ablations:
            if name == "no_label_prompt":
                gen = _dc.replace(gen, label_prompt=False)
            elif name == "no_noise_resistant":
                clf = _dc.replace(clf, alpha=0.0)
            elif name == "no_label_schedule":
                gen = _dc.replace(gen, lam=0.0)
            elif name in ("static", "reflective"):
                aug = _dc.replace(aug, mode=name)
        return aug, gen, clf


@dataclass
class ClassifierConfig:
    """Proxy and classifier training (noise-resistant objective), measured in optimiser steps.

    Every arm trains ``steps_for(n_originals)`` steps of ``batch_size`` originals; an
    original's pseudo samples ride in its batch (``pseudo_per_step`` of them), so arms with and
    without augmentation take the same steps and L_c sees the same K originals per batch.
    Defaults: from dev curves of one-off scratch runs (docs/results.md, not rerunnable from the
    repository); the paper presets set their own.
    """

    epochs: int = 10  # passes over the originals ...
    min_steps: int = 100  # ... but at least this many steps (10-shot sets are 1-2 batches an epoch)
    lr: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 16  # originals per step
    pseudo_per_step: int = 1  # pseudo samples each original carries into its batch (0: all it has)
    alpha: float = 1.0  # weight of the contrastive loss L_c (paper: 1)
    tau: float = 0.1
    # L_c: "negatives" (the paper's Eq. 5: push different-label originals apart) or "positives"
    # (supervised contrastive: same-label originals and an original's own pseudo samples pulled
    # together; dcls_core.losses.positive_contrastive_loss)
    contrastive: str = "negatives"
    head_init: str = "probe"  # probe: logistic regression on frozen pooled features (LP-FT) | random
    probe_C: float = 1.0  # inverse L2 strength of that logistic regression
    # the rows that probe is fitted on: "originals", or "all" (originals + the arm's pseudo samples,
    # each row once: the rows the arm trains on)
    probe_rows: str = "originals"
    eval_every: int = 10  # steps between dev evaluations (also at step 0 and at the end)
    # the proxy (importance, consistency); None = the raw arm is the proxy (same recipe, alpha = 0)
    proxy_epochs: Optional[int] = None
    proxy_lr: Optional[float] = None
    # recommend raw unless another arm beats it on dev in >= select_confidence of paired bootstrap
    # resamples of the dev rows (dcls_core.evaluation.select_arm); off: always the augmented arm
    fallback_on_dev: bool = True
    select_confidence: float = 0.9

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "classifier.epochs", "must be >= 1", self.epochs)
        _check(self.min_steps >= 0, "classifier.min_steps", "must be >= 0", self.min_steps)
        if self.proxy_epochs is not None:
            _check(self.proxy_epochs >= 1, "classifier.proxy_epochs", "must be >= 1", self.proxy_epochs)
        if self.proxy_lr is not None:
            _check(self.proxy_lr > 0, "classifier.proxy_lr", "must be > 0", self.proxy_lr)
        _check(self.lr > 0, "classifier.lr", "must be > 0", self.lr)
        _check(self.weight_decay >= 0, "classifier.weight_decay", "must be >= 0", self.weight_decay)
        _check(self.alpha >= 0, "classifier.alpha", "must be >= 0", self.alpha)
        _check(self.tau > 0, "classifier.tau", "must be > 0", self.tau)
        _check(self.batch_size >= 2, "classifier.batch_size", "must be >= 2", self.batch_size)
        _check(self.pseudo_per_step >= 0, "classifier.pseudo_per_step", "must be >= 0", self.pseudo_per_step)
        _one_of("classifier.head_init", self.head_init, ("probe", "random"))
        _one_of("classifier.probe_rows", self.probe_rows, ("originals", "all"))
        _one_of("classifier.contrastive", self.contrastive, ("negatives", "positives"))
        _check(self.probe_C > 0, "classifier.probe_C", "must be > 0", self.probe_C)
        _check(self.eval_every >= 1, "classifier.eval_every", "must be >= 1", self.eval_every)
        _check(0.5 <= self.select_confidence <= 1, "classifier.select_confidence", "must be in [0.5, 1]",
               self.select_confidence)

    def steps_for(self, n_originals: int, epochs: Optional[int] = None) -> int:
        per_epoch = max(1, -(-int(n_originals) // self.batch_size))
        return max(self.min_steps, int(epochs if epochs is not None else self.epochs) * per_epoch)

    @property
    def separate_proxy(self) -> bool:
        """True when the proxy has its own recipe (paper presets) instead of being the raw arm."""
        return self.proxy_epochs is not None or self.proxy_lr is not None

    def proxy(self) -> "ClassifierConfig":
        """The proxy's recipe: alpha = 0, its own epochs / lr when given."""
        import dataclasses

        return dataclasses.replace(self, alpha=0.0, epochs=self.proxy_epochs or self.epochs,
                                   lr=self.proxy_lr or self.lr)


@dataclass
class RayConfig:
    """Where work runs: actor pools for scoring/generation, Ray Train for training."""

    address: Optional[str] = None  # None: RAY_ADDRESS or a local Ray sized to the machine
    num_cpus: Optional[int] = None  # local Ray only
    actors: int = 1
    cpus_per_actor: float = 0.5  # < 1 keeps CPU headroom (ray issue 44687)
    gpus_per_actor: float = 0.0
    batch_size: int = 32
    num_workers: int = 0  # 0 = Ray Train local mode (loop in the driver)
    use_gpu: bool = False
    strategy: str = "ddp"  # ddp | deepspeed
    zero_stage: int = 2
    max_restarts: int = 2  # actor restarts on failure
    max_task_retries: int = 3
    # per-fit Ray Train workers (proxy, generator, raw, no_augmentation, augmented); missing = num_workers
    fit_workers: Dict[str, int] = field(default_factory=dict)
    # torch threads of the generator warm-up task (0: every core of its node). On a shared
    # 2-core machine 1 thread ran ~10x faster than 2 (docs/generator.md); not in any cache key
    warmup_threads: int = 0
    # the Ray Train warm-up reports a resumable checkpoint every this many steps (0: only at the end)
    warmup_checkpoint_every: int = 250
    # tests only: the first actor of each scoring/generation pool exits after this many batches, once
    fault_kill_actor_after: int = 0

    def __post_init__(self) -> None:
        _one_of("ray.strategy", self.strategy, ("ddp", "deepspeed"))
        _check(self.zero_stage in (0, 1, 2, 3), "ray.zero_stage", "must be 0, 1, 2 or 3", self.zero_stage)
        _check(self.actors >= 1, "ray.actors", "must be >= 1", self.actors)
        _check(self.num_workers >= 0, "ray.num_workers", "must be >= 0", self.num_workers)
        _check(self.batch_size >= 1, "ray.batch_size", "must be >= 1", self.batch_size)
        _check(self.warmup_threads >= 0, "ray.warmup_threads", "must be >= 0 (0: all cores)", self.warmup_threads)
        _check(self.warmup_checkpoint_every >= 0, "ray.warmup_checkpoint_every", "must be >= 0 (0: only at the end)",
               self.warmup_checkpoint_every)
        _check(self.cpus_per_actor > 0, "ray.cpus_per_actor", "must be > 0", self.cpus_per_actor)
        _check(self.gpus_per_actor >= 0, "ray.gpus_per_actor", "must be >= 0", self.gpus_per_actor)
        if self.num_cpus is not None:
            _check(self.num_cpus >= 1, "ray.num_cpus", "must be >= 1", self.num_cpus)
        # Ray: -1 = retry without limit
        _check(self.max_restarts >= -1, "ray.max_restarts", "must be >= -1 (-1: no limit)", self.max_restarts)
        _check(self.max_task_retries >= -1, "ray.max_task_retries", "must be >= -1 (-1: no limit)",
               self.max_task_retries)
        for fit, workers in self.fit_workers.items():
            _check(int(workers) >= 0, f"ray.fit_workers.{fit}", "must be >= 0", workers)
        _check(self.fault_kill_actor_after >= 0, "ray.fault_kill_actor_after", "must be >= 0",
               self.fault_kill_actor_after)


SPACE_TYPES = ("choice", "grid", "uniform", "loguniform", "randint")


@dataclass
class TuneConfig:
    """A Ray Tune study (``jobs/tune.py``, presets in ``configs/tune/``): the settings searched, the
    datasets and seeds every trial is scored on, how trials are scheduled. Objective: the
    augmented classifier's dev macro-F1, mean over datasets x seeds; test is only read by the
    final evaluation of the best point (and, with ``trial_test``, recorded beside each trial for
    a figure, never for picking)."""

    study: str = "study"  # the study folder: <storage_path>/tune/<study>
    # pipeline overrides every fit of the study gets, before the command line's (e.g. experiment=demo)
    overrides: List[str] = field(default_factory=list)
    # dataset presets (configs/dataset) every trial is scored on; empty: the config's own dataset
    datasets: List[str] = field(default_factory=list)
    # per dataset, overrides after the study's own (e.g. india_covid_x: [data.protocol=fraction, ...])
    dataset_overrides: Dict[str, List[str]] = field(default_factory=dict)
    seeds: List[int] = field(default_factory=lambda: [13])  # every trial: one fit per dataset x seed
    # setting -> {type: choice | grid | uniform | loguniform | randint, values: [...] or low:, high:}
    space: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    num_samples: int = 12  # points drawn (grid: repeats of the grid)
    search: str = "random"  # random | optuna (TPE)
    scheduler: str = "asha"  # asha (stop weak trials early) | fifo
    # ASHA's unit is one dev evaluation (classifier.eval_every steps) of a trial's fits in turn
    grace_period: int = 3
    reduction_factor: int = 2
    cpus_per_trial: float = 1.0  # also the trial's torch threads
    max_concurrent_trials: int = 0  # 0: as many as the cluster's CPUs hold (this machine's cores locally)
    # inline: a trial trains in its own process (no Train worker start-up: the fast choice on
    # small machines) | ray_train: each fit is a TorchTrainer the trial builds (one worker)
    trainer: str = "inline"
    final_seeds: List[int] = field(default_factory=lambda: [13, 42, 87])  # best vs defaults on test
    final: bool = True
    # a sweep drawn as a figure (fig6): every trial also scores its fits on test (the raw arm
    # beside them); the best point is still picked on dev alone
    trial_test: bool = False
    resume: bool = True  # restore an existing study: finished trials are not rerun
    # where <study>_best.yaml goes besides the study folder; None: configs/experiment of this
    # checkout (or package) unless a file not written by a study is there
    export_dir: Optional[str] = None

    def __post_init__(self) -> None:
        _check(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.study)), "tune.study",
               "must be a folder name (letters, digits, _ . -)", self.study)
        _check(self.num_samples >= 1, "tune.num_samples", "must be >= 1", self.num_samples)
        _one_of("tune.search", self.search, ("random", "optuna"))
        _one_of("tune.scheduler", self.scheduler, ("asha", "fifo"))
        _one_of("tune.trainer", self.trainer, ("inline", "ray_train"))
        _check(self.grace_period >= 1, "tune.grace_period", "must be >= 1", self.grace_period)
        _check(self.reduction_factor >= 2, "tune.reduction_factor", "must be >= 2", self.reduction_factor)
        _check(self.cpus_per_trial > 0, "tune.cpus_per_trial", "must be > 0", self.cpus_per_trial)
        _check(self.max_concurrent_trials >= 0, "tune.max_concurrent_trials", "must be >= 0 (0: from the CPUs)",
               self.max_concurrent_trials)
        _check(len(self.seeds) >= 1, "tune.seeds", "must list at least one seed", self.seeds)
        for key, spec in self.space.items():
            where = f"tune.space.{key}"
            _setting_type(key)  # a setting of the pipeline's config (ConfigError naming it otherwise)
            _check(not key.startswith("tune."), where, "a study cannot search its own settings", key)
            kind = spec.get("type") if isinstance(spec, dict) else None
            _check(kind in SPACE_TYPES, f"{where}.type", f"must be one of {list(SPACE_TYPES)}", kind)
            if kind in ("choice", "grid"):
                values = spec.get("values")
                _check(isinstance(values, (list, tuple)) and len(values) >= 1, f"{where}.values",
                       "must be a non-empty list", values)
            else:
                low, high = spec.get("low"), spec.get("high")
                _check(isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high,
                       f"{where}.low/high", "must be numbers with low < high", (low, high))
                _check(kind != "loguniform" or low > 0, f"{where}.low", "must be > 0 for loguniform", low)
            _check(not (self.search == "optuna" and kind == "grid"), f"{where}.type",
                   "grid is not searchable by optuna: use choice (or tune.search=random)", kind)


SUITE_METRICS = ("accuracy", "macro_f1")
SUITE_PEERS = ("probe", "setfit")


@dataclass
class SuiteConfig:
    """A benchmark suite (``python jobs/benchmark.py <suite>``, presets in ``configs/suite/``): every
    method on the same sampled rows, seeds, step budgets and test set. Each (setting, method, seed)
    is one run of the pipeline's stages (``dcls_core.stages``); the runs of a (setting, seed) share
    one stage store, so their data, raw and no_augmentation stages are computed once."""

    name: str = "suite"
    overrides: List[str] = field(default_factory=list)  # every run, first
    settings: Dict[str, List[str]] = field(default_factory=dict)  # setting -> its overrides
    methods: Dict[str, List[str]] = field(default_factory=dict)  # method -> its overrides (augment=eda, ...)
    seeds: List[int] = field(default_factory=lambda: [13, 42, 87])
    peers: List[str] = field(default_factory=lambda: list(SUITE_PEERS))  # beside the methods, same rows
    metrics: List[str] = field(default_factory=lambda: ["accuracy", "macro_f1"])  # the table's, first = the plot's
    cpus_per_run: float = 1.0  # a run is one Ray task; also its torch threads
    setfit_steps: int = 0  # SetFit's step cap: 0 = the arms' step budget (classifier.min_steps)
    # the paper's figures to print beside ours: setting -> {method: value in %}
    paper: Dict[str, Dict[str, float]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # lines printed under the table (encoders used, ...)

    def __post_init__(self) -> None:
        _check(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.name)), "suite.name",
               "must be a folder name (letters, digits, _ . -)", self.name)
        _check(bool(self.settings), "suite.settings", "must name at least one setting", self.settings)
        _check(bool(self.methods), "suite.methods", "must name at least one method", self.methods)
        _check(len(self.seeds) >= 1, "suite.seeds", "must list at least one seed", self.seeds)
        for peer in self.peers:
            _one_of("suite.peers[]", peer, SUITE_PEERS)
        _check(bool(self.metrics), "suite.metrics", "must list at least one metric", self.metrics)
        for metric in self.metrics:
            _one_of("suite.metrics[]", metric, SUITE_METRICS)
        _check(self.cpus_per_run > 0, "suite.cpus_per_run", "must be > 0", self.cpus_per_run)
        clash = set(self.methods) & set(self.peers)
        _check(not clash, "suite.methods", f"names a peer too ({sorted(clash)})", sorted(self.methods))


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)  # jobs/tune.py only
    experiment: str = "default"
    seed: int = 13
    output_dir: Optional[str] = None  # the run folder; default <storage_path>/<experiment>
    storage_path: str = "runs"  # shared root for run folders and cached stage outputs
    cache_dir: Optional[str] = None  # cross-run cache (warm-up); default <storage_path>/cache

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", "must be >= 0 (numpy seeds)", self.seed)
        if self.augment.ablations:
            self.augment, self.generator, self.classifier = self.augment.apply_ablations(self.generator,
                                                                                         self.classifier)


def register_configs() -> None:
    """Register the schemas with Hydra so YAML presets are type-checked against them."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, node in (("dataset", DatasetConfig), ("model", ModelConfig),
                        ("generator", GeneratorConfig), ("augment", AugmentConfig),
                        ("classifier", ClassifierConfig), ("ray", RayConfig), ("tune", TuneConfig)):
        cs.store(group=group, name=f"{group}_schema", node=node)


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _setting_type(path: str) -> Any:
    """The declared type of the setting at dotted ``path`` of :class:`Config`; a key inside a dict
    setting (``dataset.files.train``) gives the dict's value type. Raises ``ConfigError`` naming
    the unknown part (and the closest known name) when ``path`` is not a setting."""
    schema: Any = Config
    parts = path.split(".")
    for i, part in enumerate(parts):
        if typing.get_origin(schema) is dict:  # free keys inside dict settings
            schema = _unwrap_optional(typing.get_args(schema)[1])
            continue
        if not dataclasses.is_dataclass(schema):
            raise ConfigError(f"unknown config key {path!r}: {'.'.join(parts[:i])} is a single value, "
                              f"it has no {part!r}")
        hints = typing.get_type_hints(schema)
        if part not in hints:
            where = ".".join(parts[:i])
            close = difflib.get_close_matches(part, list(hints), n=1)
            hint = (f"did you mean {'.'.join(parts[:i] + close)}?" if close
                    else f"the settings there are {sorted(hints)}")
            raise ConfigError(f"unknown config key {path!r}: {where + ' has' if where else 'there is'} no setting "
                              f"{part!r} ({hint})")
        schema = _unwrap_optional(hints[part])
    return schema


def _check_known_keys(node: Any, prefix: str = "") -> None:
    """Every key of a composed DictConfig is a setting of :class:`Config` (keys added with ``+``
    included, which ``OmegaConf.to_object`` would otherwise drop without a word)."""
    from omegaconf import DictConfig

    for key in node.keys():
        if not prefix and key == "hydra":
            continue
        path = f"{prefix}{key}"
        tp = _setting_type(path)
        if dataclasses.is_dataclass(tp):
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
                _check_known_keys(child, f"{path}.")


def to_config(cfg: Any) -> Config:
    """DictConfig -> validated ``Config`` (raises ``ConfigError`` on bad values and unknown keys)."""
    from omegaconf import OmegaConf

    if isinstance(cfg, Config):
        return cfg
    _check_known_keys(cfg)
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    try:
        return OmegaConf.to_object(merged)
    except Exception as exc:  # omegaconf wraps errors raised in __post_init__
        cause = exc
        while cause.__cause__ is not None or cause.__context__ is not None:
            nxt = cause.__cause__ or cause.__context__
            if isinstance(nxt, ConfigError):
                raise nxt from None
            cause = nxt
        raise


def configs_dir() -> Path:
    """The Hydra config tree: the copy an installed wheel ships as ``dcls_core/configs``
    (``pip install .``, the container image), else ``configs/`` of the checkout this package was
    imported from (editable install, ``PYTHONPATH=.``, a Ray job's uploaded working dir)."""
    package = Path(__file__).resolve().parent
    candidates = (package / "configs", package.parent / "configs")
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"no Hydra configs found (looked for config.yaml in {', '.join(map(str, candidates))}): "
                      f"install dcls from a wheel built with its configs, or run from a checkout")


def _string_keys(value: Any) -> Any:
    """``{0: negative}`` as the override grammar parses it -> ``{"0": "negative"}`` (keys of dict
    settings are strings; Hydra's grammar cannot quote a key)."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    return value


def _split_overrides(overrides: List[str]) -> Tuple[List[str], List[Tuple[str, Any]]]:
    """(overrides for Hydra, (key, dict) replacements). Checks every key against the schema first,
    so that an unknown key fails with one message whether or not it carries ``+``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = {p.name for p in configs_dir().iterdir() if p.is_dir()}
    keep: List[str] = []
    replace: List[Tuple[str, Any]] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if (override.package is not None or key in groups or key.split(".")[0] == "hydra" or "/" in key
                or override.is_delete() or override.is_sweep_override()):
            keep.append(override.input_line)
            continue
        tp = _setting_type(key)
        value = override.value()
        if typing.get_origin(tp) is dict and isinstance(value, dict):
            replace.append((key, _string_keys(value)))
        else:
            keep.append(override.input_line)
    return keep, replace


def _hydra_message(exc: BaseException) -> str:
    """Hydra/OmegaConf's message and its causes on one line (without OmegaConf's templates)."""
    from hydra.errors import OverrideParseException

    if isinstance(exc, OverrideParseException):
        first = " ".join(exc.message.split()).split(" See https://")[0]
        quoted_key = "{\"" in exc.override or "{'" in exc.override
        hint = "; keys of a dict are written unquoted, e.g. {0: negative, 1: positive}" if quoted_key else ""
        return (f"cannot read the override {exc.override!r}: {first}{hint} (the grammar: "
                f"https://hydra.cc/docs/advanced/override_grammar/basic/)")
    text = str(exc)
    if text.startswith("Could not override '"):  # a key the preset's dict setting does not have
        key = text.split("'")[1]
        parent, _, sub = key.rpartition(".")
        if parent and typing.get_origin(_setting_type(parent)) is dict:
            return (f"{parent} has no key {sub!r} in this preset; give the whole dict, which replaces the "
                    f"preset's: {parent}={{{sub}: ..., ...}}")
    messages = [text.strip()]
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        text = str(cause).strip()
        if text and text not in messages and "$VALUE" not in text and text != "None":
            messages.append(text)
        cause = cause.__cause__ or cause.__context__
    return "; ".join(" ".join(m.split()) for m in messages)


def load_config(overrides: Optional[List[str]] = None, config_name: str = "config") -> Config:
    """Compose ``configs/config.yaml`` with overrides: the one config path of every entry point.

    A dict value for a dict setting (``dataset.files={train: a.csv, test: b.csv}``,
    ``dataset.label_names={0: negative, 1: positive}``, ``dataset.label_names={}``) replaces the
    preset's dict. Every error (Hydra's grammar and composition, unknown keys, bad values) is a
    :class:`ConfigError`.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    try:
        keep, replace = _split_overrides(list(overrides or []))
        with initialize_config_dir(config_dir=str(configs_dir()), version_base=None):
            cfg = compose(config_name=config_name, overrides=keep)
        for key, value in replace:
            OmegaConf.update(cfg, key, value, merge=False)
        return to_config(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_hydra_message(exc)) from None
