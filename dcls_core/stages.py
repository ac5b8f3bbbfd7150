"""The pipeline's stages, written once: what each reads, the config slice that keys it, what it
writes, and where its heavy work runs.

    data -> raw (also the proxy, unless classifier.separate_proxy) -> importance -> generator
         -> generation -> no_augmentation, augmented -> evaluation (reads each arm's scores and the
            probe's, stages of their own)

:func:`run_stages` runs them in that order against a stage store (a
:class:`~dcls_core.artifacts.RunFolder`, or anything with its ``stage(name, inputs, config, fn)``,
such as a study's locked :class:`~dcls_core.study.SharedStages`): a stage is computed once per key
(its name, the keys of the stages it reads, its config slice in :data:`STAGES`) and read back after.
Where a stage's heavy work runs is the executor's choice, so the same stages serve every runner:

* :class:`LocalExecutor` (here, no Ray): scoring, generation and fits in this process
  (Tune trials, tests, scripts);
* ``jobs.ray_executor.RayExecutor``: scoring and generation on Ray Data actor pools, fits on Ray
  Train, the warm-up and the baseline augmenters as Ray tasks (``jobs/pipeline.py``).

Both run the same per-batch callables (:class:`ImportanceScorer`, :class:`PseudoSampleGenerator`)
and the same loop configs, so a pipeline run, a benchmark suite's run and a Tune trial build (and
can share) the same stage folders.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from dcls_core.artifacts import atomic_write_json, atomic_write_parquet, read_json
from dcls_core.config import ClassifierConfig, Config, GeneratorConfig

log = logging.getLogger(__name__)

# GeneratorConfig fields that only the reverse process reads (not the generator's training)
DECODING_FIELDS = ("group_size", "group_index", "reverse_steps", "temperature", "top_k", "top_p")
# ClassifierConfig fields no fit reads (the evaluation stage does: they key it instead)
SELECTION_FIELDS = ("fallback_on_dev", "select_confidence")
# ClassifierConfig fields only a fit with pseudo samples reads
PSEUDO_FIELDS = ("pseudo_per_step", "probe_rows")


# --------------------------------------------------------------------------- keys
def generator_training_key(gcfg: GeneratorConfig) -> Dict[str, Any]:
    """The generator settings its training reads (decoding-only fields left out), so runs that
    differ only in the noise level or sampling share one trained generator."""
    return {k: v for k, v in dataclasses.asdict(gcfg).items() if k not in DECODING_FIELDS}


def _without(ccfg: ClassifierConfig, fields: Sequence[str]) -> ClassifierConfig:
    defaults = ClassifierConfig()
    return dataclasses.replace(ccfg, **{k: getattr(defaults, k) for k in fields})


def raw_recipe(ccfg: ClassifierConfig) -> ClassifierConfig:
    """The raw arm: cross-entropy only (alpha = 0); the settings it never reads (L_c's tau and
    form, pseudo samples per step, selection) at their defaults, so that runs differing only in
    those share one raw fit."""
    return _without(dataclasses.replace(ccfg, alpha=0.0), PSEUDO_FIELDS + ("tau", "contrastive") + SELECTION_FIELDS)


def proxy_recipe(ccfg: ClassifierConfig) -> ClassifierConfig:
    """The proxy's recipe: the raw arm's unless classifier.proxy_* give it its own."""
    if not ccfg.separate_proxy:
        return raw_recipe(ccfg)
    return _without(ccfg.proxy(), PSEUDO_FIELDS + ("tau", "contrastive") + SELECTION_FIELDS)


def arm_recipe(ccfg: ClassifierConfig, arm: str) -> ClassifierConfig:
    """The recipe of an arm's fit: ``raw`` as :func:`raw_recipe`; ``no_augmentation`` (no pseudo
    samples) and ``augmented`` the configured one, less what only the evaluation reads."""
    if arm == "raw":
        return raw_recipe(ccfg)
    unused = SELECTION_FIELDS + (PSEUDO_FIELDS if arm == "no_augmentation" else ())
    return _without(ccfg, unused)


@dataclass(frozen=True)
class Stage:
    """One stage: the stages it reads, what it writes in its folder, where it runs, and the
    config slice in its key (with the keys of what it reads)."""

    name: str
    reads: Tuple[str, ...]
    writes: Tuple[str, ...]
    runs_on: str
    key: Callable[[Config], Dict[str, Any]]


def _fit_key(recipe: Callable[[ClassifierConfig], ClassifierConfig]):
    return lambda cfg: {"model": cfg.model, "classifier": recipe(cfg.classifier), "seed": cfg.seed,
                        "max_length": cfg.data.max_length}


def _generation_key(cfg: Config) -> Dict[str, Any]:
    key: Dict[str, Any] = {"augment": cfg.augment, "seed": cfg.seed, "max_length": cfg.data.max_length}
    if cfg.augment.method in ("diffusion", "mlm"):  # the (warmed-up) masked LM and its decoding settings
        key.update(model=cfg.model, generator=cfg.generator)
    elif cfg.augment.method == "retrieval":  # its corpus: by default the warm-up's (the proxy is an input)
        key.update(warmup=cfg.generator.warmup)
    return key


STAGES: Dict[str, Stage] = {s.name: s for s in (
    Stage("data", (), ("train.parquet", "dev.parquet", "test.parquet", "labels.json", "data_report.json"),
          "driver", lambda cfg: {"dataset": cfg.dataset, "data": cfg.data}),
    Stage("raw", ("data",), ("model/",), "fit (Ray Train: ray.num_workers)", _fit_key(raw_recipe)),
    Stage("proxy", ("data",), ("model/",), "fit (Ray Train)", _fit_key(proxy_recipe)),
    Stage("importance", ("data", "proxy"), ("importance.parquet",),
          "actor pool (ray.actors x ray.cpus_per_actor)", lambda cfg: {"max_length": cfg.data.max_length}),
    Stage("generator", ("data", "proxy", "importance"), ("model/",),
          "warm-up task (cached in cache_dir), then a fit (Ray Train)",
          lambda cfg: {"model": cfg.model, "generator": generator_training_key(cfg.generator), "seed": cfg.seed,
                       "max_length": cfg.data.max_length}),
    Stage("generation", ("data", "importance", "generator"), ("pseudo.parquet",),
          "actor pool (diffusion) or one task (a baseline augmenter)", _generation_key),
    Stage("no_augmentation", ("data",), ("model/",), "fit (Ray Train)",
          _fit_key(lambda c: arm_recipe(c, "no_augmentation"))),
    Stage("augmented", ("data", "generation"), ("model/",), "fit (Ray Train)",
          lambda cfg: dict(_fit_key(lambda c: arm_recipe(c, "augmented"))(cfg), augment=cfg.augment)),
    # an arm's and the probe's dev and test scores: stages of their own, so that the runs of a
    # (dataset, seed) that share an arm (raw, no_augmentation) score it once, not once per run
    Stage("scores", ("data", "raw | no_augmentation | augmented"), ("scores.json",), "driver",
          lambda cfg: {"max_length": cfg.data.max_length}),
    Stage("probe", ("data",), ("scores.json",), "driver",
          lambda cfg: {"model": cfg.model, "probe_C": cfg.classifier.probe_C, "seed": cfg.seed,
                       "max_length": cfg.data.max_length}),
    Stage("evaluation", ("raw", "no_augmentation", "augmented", "generation"), ("metrics.json", "augmented.parquet"),
          "driver",
          lambda cfg: {"max_length": cfg.data.max_length, "probe_C": cfg.classifier.probe_C,
                       **{k: getattr(cfg.classifier, k) for k in SELECTION_FIELDS}}),
)}


def stage_config(name: str, cfg: Config) -> Dict[str, Any]:
    """The config slice of stage ``name`` (its key, with the keys of the stages it reads)."""
    return STAGES[name].key(cfg)


# --------------------------------------------------------------------------- per-batch work
class RowCountError(RuntimeError):
    """A batch stage lost or duplicated rows."""


def check_rows(path: Path, expected: Optional[int], name: str, id_column: str = "id") -> None:
    """A batch stage wrote each of its ``expected`` rows exactly once (a retried batch adds none;
    ``expected`` None: a filtering stage, whose ids must only be distinct), read from the id column
    of its output only."""
    from dcls_core.artifacts import id_counts

    if expected is None and not Path(path).exists():  # a filter that kept nothing (Ray writes no part)
        return
    rows, distinct = id_counts(path, id_column)
    if (expected is not None and rows != expected) or distinct != rows:
        raise RowCountError(f"{name}: wrote {rows} rows ({rows - distinct} duplicated ids), expected {expected}")


class FaultInjector:
    """Test hook: exit the actor process once, after ``after`` batches (marker file = once per run)."""

    def __init__(self, after: int, marker: Optional[str]):
        self.after = int(after or 0)
        self.marker = Path(marker) if marker else None
        self.seen = 0

    def tick(self) -> None:
        if not self.after or self.marker is None:
            return
        self.seen += 1
        if self.seen > self.after and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            log.warning("fault injection: actor %d exits now", os.getpid())
            os._exit(1)


def _set_threads(threads: int) -> None:
    import torch

    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(max(1, int(threads)))


def _to_device(model):
    """An actor given GPUs (``ray.gpus_per_actor``) sees them through CUDA_VISIBLE_DEVICES."""
    import torch

    return model.to("cuda") if torch.cuda.is_available() else model


class ImportanceScorer:
    """Token importance (Eq. 1) from a classifier checkpoint: adds a list<float> ``importance`` column."""

    def __init__(self, checkpoint: str, max_length: int, batch_size: int = 16, threads: int = 0,
                 fault_after: int = 0, fault_marker: Optional[str] = None):
        _set_threads(threads)
        from dcls_core import diffusion_augmenter as da

        self.model, self.tokenizer = da.load_classifier_checkpoint(checkpoint)
        self.model = _to_device(self.model)
        self.max_length = max_length
        self.batch_size = batch_size
        self.fault = FaultInjector(fault_after, fault_marker)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from dcls_core import diffusion_augmenter as da

        self.fault.tick()
        out = batch.copy()
        out["importance"] = da.score_frame(self.model, self.tokenizer, batch, self.max_length, self.batch_size)
        return out


class PseudoSampleGenerator:
    """Pseudo samples from a generator checkpoint: one input row (a plan entry) -> its pseudo rows.

    Each plan row carries its source row and the steps to mask at; the random draws for a row
    are seeded from (seed, plan id), so a retried batch reproduces its rows exactly and the
    rows do not depend on how the plan is cut into batches.
    """

    def __init__(self, checkpoint: str, generator_cfg: Dict[str, Any], label_names: Sequence[str],
                 max_length: int, seed: int, plan: Optional[Dict[str, Any]] = None, threads: int = 0,
                 fault_after: int = 0, fault_marker: Optional[str] = None):
        _set_threads(threads)
        self.plan = plan  # diffusion_augmenter.plan_spec: rows arrive scored, not yet planned
        from dcls_core import diffusion_augmenter as da

        self.state = da.load_generator_checkpoint(checkpoint, label_names,
                                                  bool(generator_cfg.get("label_prompt", True)))
        self.state["model"] = _to_device(self.state["model"])
        self.generator_cfg = generator_cfg
        self.max_length = max_length
        self.seed = seed
        self.fault = FaultInjector(fault_after, fault_marker)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from dcls_core import diffusion_augmenter as da

        self.fault.tick()
        if self.plan is not None:
            batch = da.plan_batch(batch, self.plan, self.generator_cfg.get("importance_norm"))
            if batch.empty:  # e.g. B/D: a batch of majority-class rows
                from dcls_core.augment import empty_pseudo_frame

                return empty_pseudo_frame()
        return da.generate_for_plan(self.state, batch, self.generator_cfg, self.max_length, self.seed)


class PseudoFinisher:
    """Generated rows -> the pseudo samples a fit sees: empty samples dropped (a source the tokenizer
    cut to nothing) and, given a ``judge`` checkpoint (``augment.min_confidence``), the rows it finds
    unlikely (with their ``consistency``)."""

    def __init__(self, label_names: Sequence[str], max_length: int, judge: Optional[str] = None,
                 min_confidence: Optional[float] = None, threads: int = 0, fault_after: int = 0,
                 fault_marker: Optional[str] = None):
        _set_threads(threads)
        from dcls_core import diffusion_augmenter as da

        self.names, self.max_length, self.min_confidence = list(label_names), int(max_length), min_confidence
        self.judge = None
        if judge is not None and min_confidence is not None:
            model, tok = da.load_classifier_checkpoint(judge)
            self.judge = (_to_device(model), tok)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from dcls_core import diffusion_augmenter as da

        rows, _ = da.drop_empty_pseudo(batch)
        if self.judge is not None and len(rows):
            from dcls_core.diagnostics import filter_by_confidence
            from dcls_core.training import predict

            _, probs = predict(self.judge[0], rows, self.judge[1], self.names, self.max_length)
            rows, _ = filter_by_confidence(rows, probs, self.names, self.min_confidence)
        return rows.reset_index(drop=True)


def finish_pseudo(executor, stage_dir: Path, generated: Path, judge: Path, names, cfg: Config,
                  generated_rows: int) -> Dict[str, Any]:
    """The stage's ``pseudo.parquet`` from its ``generated`` rows (:class:`PseudoFinisher`, where the
    executor runs batches), the generated rows removed; its summary."""
    import shutil

    from dcls_core.artifacts import id_counts

    out = Path(stage_dir) / "pseudo.parquet"
    if generated_rows:
        executor.map(stage_dir, "finish", generated, None, PseudoFinisher,
                     {"label_names": list(names), "max_length": cfg.data.max_length, "judge": str(judge),
                      "min_confidence": cfg.augment.min_confidence}, out, expected_rows=None)
    if Path(generated).is_dir():
        shutil.rmtree(generated)
    else:
        Path(generated).unlink(missing_ok=True)
    rows = id_counts(out)[0] if out.exists() else 0
    if rows == 0:  # nothing left: a readable zero-row file with the pseudo schema
        from dcls_core.augment import empty_pseudo_frame

        if out.is_dir():
            shutil.rmtree(out)
        atomic_write_parquet(out, empty_pseudo_frame())
    key = "dropped_empty" if cfg.augment.min_confidence is None else "dropped_empty_or_low_confidence"
    return {"rows": rows, key: generated_rows - rows}


def score_importance(executor, stage_dir: Path, rows_path: Path, proxy: Path, max_length: int, rows: int) -> int:
    """The importance stage's work: ``rows_path``'s rows scored by the ``proxy`` checkpoint (Eq. 1)
    into ``stage_dir/importance.parquet`` (id, text, label, raw importance), where the executor runs
    batches; returns the rows written (checked against ``rows``)."""
    return executor.map(stage_dir, "importance", rows_path, ("id", "text", "label"), ImportanceScorer,
                        {"checkpoint": str(proxy), "max_length": int(max_length)},
                        Path(stage_dir) / "importance.parquet", expected_rows=rows)


def generate_pseudo(executor, stage_dir: Path, scored: Path, generator: Path, judge: Path, names, cfg: Config,
                    plan: Dict[str, Any], expected: int) -> Dict[str, Any]:
    """The generation stage's work: pseudo samples of the ``scored`` rows by the ``generator``
    checkpoint, each batch planning its own (``plan``: ``diffusion_augmenter.plan_spec``), then
    finished (:func:`finish_pseudo`) into ``stage_dir/pseudo.parquet``; its summary."""
    stage_dir = Path(stage_dir)
    sources = len(plan["steps_by_id"]) if "steps_by_id" in plan else (expected and expected // len(plan["steps"]))
    if expected:
        executor.map(stage_dir, "generation", scored, ("id", "text", "label", "importance"), PseudoSampleGenerator,
                     {"checkpoint": str(generator), "generator_cfg": dataclasses.asdict(cfg.generator),
                      "label_names": list(names), "max_length": cfg.data.max_length, "seed": cfg.seed, "plan": plan},
                     stage_dir / "generated", expected_rows=expected)
    summary = {"sources": sources, **executor.notes(stage_dir, "generation")}
    summary.update(finish_pseudo(executor, stage_dir, stage_dir / "generated", judge, names, cfg, expected))
    return summary


# --------------------------------------------------------------------------- the in-process executor
def classifier_loop_config(cfg: Config, names: Sequence[str], datasets: Dict[str, Any],
                           recipe: ClassifierConfig) -> Dict[str, Any]:
    """What a classifier fit (proxy or arm) reads, in the form the Ray Train loop receives it. Its
    rows are not in it: ``datasets`` names the Parquet of each (``train``, ``dev``, ``pseudo``),
    which Ray Train hands its workers as Ray Data datasets (``get_dataset_shard``) and the local
    executor reads itself."""
    return {"model": dataclasses.asdict(cfg.model), "label_names": list(names), "seed": cfg.seed,
            "datasets": {k: str(v) for k, v in datasets.items() if v is not None},
            "max_length": cfg.data.max_length, "classifier": dataclasses.asdict(recipe), "mode": "static"}


def loop_frame(loop: Dict[str, Any], name: str) -> Optional[pd.DataFrame]:
    """The rows of dataset ``name`` of a loop config (None if it has none), sorted by id."""
    from dcls_core.artifacts import read_rows

    path = loop.get("datasets", {}).get(name)
    return None if path is None else read_rows(path)


def warmup_texts(cfg: Config, train: pd.DataFrame, dev: pd.DataFrame, test: pd.DataFrame) -> List[str]:
    """The warm-up corpus of ``cfg.generator.warmup`` (test texts never enter it)."""
    from dcls_core.warmup import run_corpus

    return run_corpus(cfg.generator.warmup, train["text"].tolist(), dev["text"].tolist(), test["text"].tolist(),
                      cfg.data.resolved_root())


def warm_up(cfg: Config, texts: Sequence[str], cache_dir: Path, threads: int = 0) -> Dict[str, Any]:
    """The generator warm-up on ``texts`` (cached under ``cache_dir``: shared by runs and trials);
    its stats (``path``: the warmed-up masked LM)."""
    from dcls_core.warmup import load_or_warmup

    _set_threads(threads)
    _, _, stats = load_or_warmup(cfg.model, cfg.generator.warmup, list(texts), str(cache_dir), cfg.seed)
    return {k: v for k, v in stats.items() if k in ("skipped", "cached", "key", "path", "steps", "seconds")}


def reflective_regenerator(loop: Dict[str, Any], tokenizer, shard: Callable[[List[Dict[str, Any]]], List[Dict[str, Any]]] = None,
                           gather: Callable[[pd.DataFrame], pd.DataFrame] = None):
    """Reflective mode (``augment.mode=reflective``): a ``regenerate(classifier)`` for
    ``fit_classifier`` that rescores the sources' importance with the classifier being trained and
    regenerates their pseudo samples (round r seeded ``seed + 1000 r``). ``shard``/``gather``: this
    worker's share of the sources and the union over workers (Ray Train); identity in one process."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.importance import normalise_importance

    gcfg, ml, seed = loop["generator"], int(loop["max_length"]), int(loop["seed"])
    state = da.load_generator_checkpoint(loop["generator_checkpoint"], list(loop["label_names"]),
                                         bool(gcfg.get("label_prompt", True)))
    records = list(loop["sources"])
    rounds = {"n": 0}

    def regenerate(current) -> pd.DataFrame:
        rounds["n"] += 1
        mine = pd.DataFrame.from_records(shard(records) if shard else records).drop_duplicates("id")
        raw = da.score_frame(current, tokenizer, mine, ml)
        mine = mine.assign(importance=[normalise_importance(v, gcfg["importance_norm"]) for v in raw])
        fresh = da.generate_for_plan(state, mine, gcfg, ml, seed + 1000 * rounds["n"])
        fresh = gather(fresh) if gather else fresh
        return fresh.drop_duplicates("id").sort_values("id").reset_index(drop=True)

    return regenerate


def generator_rows(loop: Dict[str, Any], frame: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """A generator fit's rows: the importance stage's scored rows, importance normalised
    (``generator.importance_norm``). ``frame``: the rows when the caller read them itself."""
    from dcls_core.importance import normalise_importance

    frame = loop_frame(loop, "train") if frame is None else frame.sort_values("id", kind="stable")
    norm = loop["generator"]["importance_norm"]
    return frame.assign(importance=[normalise_importance(list(v), norm) for v in frame["importance"]])


def generator_start(loop: Dict[str, Any]):
    """The masked LM a generator fit starts from (both executors): the warm-up's checkpoint
    (``start_checkpoint``), else the model's own masked LM; its encoder copied from the proxy
    where ``proxy_checkpoint`` is given (``generator.init_from_proxy`` without a warm-up)."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.config import ModelConfig
    from dcls_core.models import load_masked_lm, load_tokenizer

    if loop.get("start_checkpoint"):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        model = AutoModelForMaskedLM.from_pretrained(loop["start_checkpoint"], attn_implementation="eager")
        tok = AutoTokenizer.from_pretrained(loop["start_checkpoint"])
    else:
        model_cfg = ModelConfig(**loop["model"])
        model, tok = load_masked_lm(model_cfg, int(loop["seed"])), load_tokenizer(model_cfg)
    if loop.get("proxy_checkpoint"):
        proxy, _ = da.load_classifier_checkpoint(loop["proxy_checkpoint"])
        copied = da.init_encoder_from(model, proxy)
        log.info("generator: encoder initialised from the proxy (%d tensors)", copied)
    return model, tok


class LocalExecutor:
    """Every stage's work in this process: batches through the same callables as the actor pools,
    fits through ``dcls_core.training.fit_classifier`` / ``dcls_core.diffusion.train_generator``,
    checkpoints written as the Ray Train loops write them (``model/`` with ``fit.json`` and
    ``history.json``). ``on_eval``: called after every dev evaluation of a classifier fit."""

    name = "local"

    def __init__(self, cfg: Config, cache_dir: Path, batch_size: int = 64,
                 on_eval: Optional[Callable[[Dict[str, Any]], None]] = None):
        self.cfg = cfg
        self.cache_dir = Path(cache_dir)
        self.batch_size = int(batch_size)
        self.on_eval = on_eval

    def map(self, stage_dir: Path, name: str, source: Path, columns: Sequence[str], fn_cls: type,
            kwargs: Dict[str, Any], out: Path, expected_rows: int) -> int:
        """Batch stage: the ``columns`` (None: all) of Parquet ``source`` through ``fn_cls`` in
        batches, to ``out`` (one Parquet file); the rows written, checked against ``expected_rows``
        (None: a filter, ids only distinct)."""
        from dcls_core.artifacts import read_rows

        fn = fn_cls(**kwargs)
        frame = read_rows(source, list(columns) if columns else None)
        parts = [fn(frame.iloc[i:i + self.batch_size]) for i in range(0, len(frame), self.batch_size)]
        rows = pd.concat(parts, ignore_index=True) if parts else frame.iloc[:0]
        atomic_write_parquet(out, rows.sort_values("id", kind="stable").reset_index(drop=True))
        check_rows(out, expected_rows, name)
        return len(rows)

    def notes(self, stage_dir: Path, name: str) -> Dict[str, Any]:
        """What the executor adds to a batch stage's summary (the Ray one: whether an actor was killed)."""
        return {}

    def warmup(self, train: pd.DataFrame, dev: pd.DataFrame, test: pd.DataFrame) -> Dict[str, Any]:
        from dcls_core.warmup import needs_warmup

        if not needs_warmup(self.cfg.model, self.cfg.generator.warmup):
            return {"skipped": True}  # the model has its own masked-LM head
        return warm_up(self.cfg, warmup_texts(self.cfg, train, dev, test), self.cache_dir)

    def augment(self, train, dev, test, names, checkpoint: Optional[str], proxy: Optional[str] = None):
        """A baseline augmenter's (pseudo rows, stats); ``checkpoint``: the warm-up folder (``mlm``),
        ``proxy``: the raw arm's checkpoint (``retrieval``)."""
        from dcls_core.augment import augmenter_from_config

        augmenter = augmenter_from_config(self.cfg, cache_dir=str(self.cache_dir), dev_df=dev,
                                          exclude_texts=test["text"].tolist(), checkpoint=checkpoint, proxy=proxy)
        rows = augmenter.augment(train, list(names), self.cfg.seed)
        return rows, dict(getattr(augmenter, "stats", {}))

    def fit(self, stage_dir: Path, name: str, loop: Dict[str, Any]) -> Dict[str, Any]:
        import time

        from dcls_core.training import set_seed

        start = time.time()
        set_seed(int(loop["seed"]))  # as every Ray Train worker does: dropout draws do not depend on what ran before
        (self._fit_generator if name == "generator" else self._fit_classifier)(Path(stage_dir) / "model", loop)
        return {"seconds": round(time.time() - start, 1), "workers": 1, "strategy": "local"}

    def _fit_classifier(self, folder: Path, loop: Dict[str, Any]) -> None:
        from dcls_core.config import ModelConfig
        from dcls_core.models import load_classifier, load_tokenizer
        from dcls_core.training import fit_classifier

        names, seed, ml = list(loop["label_names"]), int(loop["seed"]), int(loop["max_length"])
        model_cfg = ModelConfig(**loop["model"])
        tok = load_tokenizer(model_cfg)
        model = load_classifier(model_cfg, len(names), seed)
        on_eval = None if self.on_eval is None else (lambda record, _model: self.on_eval(record))
        mode = loop.get("mode", "static")
        res = fit_classifier(model, tok, loop_frame(loop, "train"), loop_frame(loop, "dev"), names,
                             ClassifierConfig(**loop["classifier"]), ml, seed, pseudo_df=loop_frame(loop, "pseudo"),
                             mode=mode, regenerate=reflective_regenerator(loop, tok) if mode == "reflective" else None,
                             regenerate_every=int(loop.get("regenerate_every", 1)), on_eval=on_eval)
        res.model.save_pretrained(folder, label_names=names)
        tok.save_pretrained(str(folder))
        (folder / "history.json").write_text(json.dumps(res.history, indent=1, default=str))
        if res.pseudo_df is not None:  # reflective mode: the last regenerated set
            atomic_write_parquet(folder / "pseudo.parquet", res.pseudo_df)
        atomic_write_json(folder / "fit.json", {
            "best_step": res.best_step, "steps": res.steps,
            "best_dev_macro_f1": (res.best_dev_metrics or {}).get("macro_f1"),
            "best_dev_accuracy": (res.best_dev_metrics or {}).get("accuracy")})

    def _fit_generator(self, folder: Path, loop: Dict[str, Any]) -> None:
        from dcls_core import diffusion_augmenter as da
        from dcls_core.diffusion import train_generator
        from dcls_core.prompting import prompt_token_ids

        gcfg, names, seed = self.cfg.generator, list(loop["label_names"]), int(loop["seed"])
        model, tok = generator_start(loop)
        label_ids = prompt_token_ids(tok, model, names, gcfg.label_prompt)
        frame = generator_rows(loop)
        train_generator(model, tok, frame, list(frame["importance"]), label_ids, gcfg, seed,
                        max_length=int(loop["max_length"]))
        da.save_checkpoint(model, tok, folder)


# --------------------------------------------------------------------------- the stages
def load_pseudo(out: Dict[str, Any]) -> Optional[pd.DataFrame]:
    """The pseudo samples of a :func:`run_stages` result, sorted by id (None without augmentation),
    read on first use: a run that only generates them never holds them in memory."""
    from dcls_core.artifacts import read_rows

    if "pseudo" not in out:
        out["pseudo"] = None if out.get("pseudo_path") is None else read_rows(out["pseudo_path"])
    return out["pseudo"]


def has_pseudo_rows(out: Dict[str, Any]) -> bool:
    """Whether the generated pseudo samples of a :func:`run_stages` result hold a row a fit would
    train on (blank texts are dropped by the fit, as by :func:`dcls_core.training.probe_frame`)."""
    from dcls_core.data import blank_text

    pseudo = load_pseudo(out)
    return pseudo is not None and bool((~blank_text(pseudo["text"])).any())


def run_stages(cfg: Config, bundle, store, executor, until: Optional[str] = None,
               data_variant: str = "pipeline") -> Dict[str, Any]:
    """Run the stages of ``cfg`` in order on ``store`` with ``executor``, each once per key.

    ``until="generation"``: stop once the pseudo samples exist (``dcls augment``, Tune trials).
    Returns the stage outputs (``data``, ``raw``, ``proxy``, ``importance``, ``generator``,
    ``generation``, ``arms``: {arm: output}, ``evaluation``), the frames ``train``/``dev``/``test``,
    ``pseudo_path`` (the pseudo samples' Parquet, read by :func:`load_pseudo`) and
    ``consistency_model`` (the checkpoint that judges the pseudo samples). Batch stages stream from
    one stage's Parquet to the next (the executor decides where): the driver holds neither token
    importance nor pseudo samples."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.augment import uses_masked_lm, uses_proxy

    names, ml, ccfg, method = bundle.vocab.names, cfg.data.max_length, cfg.classifier, cfg.augment.method
    augmenting = method != "none" and (cfg.augment.n > 0 or cfg.augment.policy == "balance")

    def data_fn(d: Path):
        for split, frame in bundle.frames.items():
            atomic_write_parquet(d / f"{split}.parquet", frame)
        atomic_write_json(d / "labels.json", list(names))
        atomic_write_json(d / "data_report.json", bundle.describe())
        return {split: len(f) for split, f in bundle.frames.items()}

    data = store.stage("data", [], dict(stage_config("data", cfg), variant=data_variant), data_fn)
    train, dev, test = (pd.read_parquet(data.file(f"{s}.parquet")) for s in ("train", "dev", "test"))
    out: Dict[str, Any] = {"data": data, "train": train, "dev": dev, "test": test, "pseudo_path": None,
                           "consistency_model": None, "proxy": None, "importance": None, "generator": None,
                           "generation": None}

    splits = {"train": data.file("train.parquet"), "dev": data.file("dev.parquet")}

    def fit(name: str, inputs, recipe: ClassifierConfig, key: Dict[str, Any], pseudo: Optional[Path] = None, **extra):
        loop = dict(classifier_loop_config(cfg, names, dict(splits, pseudo=pseudo), recipe), **extra)
        return store.stage(name, inputs, key, lambda d: executor.fit(d, name, loop))

    raw = fit("raw", [data], raw_recipe(ccfg), stage_config("raw", cfg))
    out["raw"] = raw
    generation_inputs: List[Any] = []
    generator = None
    if augmenting and method == "diffusion":
        proxy = raw if not ccfg.separate_proxy else fit("proxy", [data], proxy_recipe(ccfg), stage_config("proxy", cfg))
        out["proxy"] = proxy
        out["consistency_model"] = proxy.file("model")

        def importance_fn(d: Path):  # Eq. 1, from the proxy: the scored rows (id, text, label, importance)
            rows = score_importance(executor, d, data.file("train.parquet"), proxy.file("model"), ml, len(train))
            return {"rows": rows, **executor.notes(d, "importance")}

        importance = store.stage("importance", [data, proxy], stage_config("importance", cfg), importance_fn)
        out["importance"] = importance

        def generator_fn(d: Path):  # the cached warm-up, then diffusion training on the few labelled rows
            warm = executor.warmup(train, dev, test)
            loop = {"model": dataclasses.asdict(cfg.model), "label_names": list(names), "seed": cfg.seed,
                    "generator": dataclasses.asdict(cfg.generator), "epochs": cfg.generator.epochs,
                    "min_steps": cfg.generator.min_steps, "max_length": ml, "start_checkpoint": warm.get("path"),
                    "proxy_checkpoint": str(proxy.file("model")) if (
                        cfg.generator.init_from_proxy and warm.get("skipped")) else None,
                    "datasets": {"train": str(importance.file("importance.parquet"))}}
            stats = executor.fit(d, "generator", loop)
            stats["warmup"] = {k: warm.get(k) for k in ("skipped", "cached", "key", "steps", "seconds")}
            return stats

        generator = store.stage("generator", [data, proxy, importance], stage_config("generator", cfg), generator_fn)
        out["generator"] = generator
        generation_inputs = [data, importance, generator]
        if cfg.augment.mode == "static":
            # each batch of scored rows plans its own pseudo samples (plan_spec): nothing is gathered here
            plan = da.plan_spec(train[["id", "label"]], cfg.augment, cfg.generator, cfg.seed)

            def generation_fn(d: Path):
                expected = da.planned_count(plan, len(train))
                return generate_pseudo(executor, d, importance.file("importance.parquet"), generator.file("model"),
                                       proxy.file("model"), names, cfg, plan, expected)

            inputs = generation_inputs + ([proxy] if cfg.augment.min_confidence is not None else [])
            generation = store.stage("generation", inputs, stage_config("generation", cfg), generation_fn)
            out["generation"], out["pseudo_path"] = generation, generation.file("pseudo.parquet")
            generation_inputs = [data, generation]
    elif augmenting:  # a baseline: no importance, no generator; the raw arm judges its pseudo samples
        out["consistency_model"] = raw.file("model")

        reads_proxy = uses_proxy(cfg.augment)

        def baseline_fn(d: Path):
            warm = executor.warmup(train, dev, test) if uses_masked_lm(method) else {}
            rows, stats = executor.augment(train, dev, test, names, warm.get("path"),
                                           proxy=str(raw.file("model")) if reads_proxy else None)
            atomic_write_parquet(d / "generated.parquet", rows.reset_index(drop=True))
            summary = {"method": method, "stats": stats}
            summary.update(finish_pseudo(executor, d, d / "generated.parquet", raw.file("model"), names, cfg, len(rows)))
            return summary

        inputs = [data] + ([raw] if reads_proxy or cfg.augment.min_confidence is not None else [])
        generation = store.stage("generation", inputs, stage_config("generation", cfg), baseline_fn)
        out["generation"], out["pseudo_path"] = generation, generation.file("pseudo.parquet")
        generation_inputs = [data, generation]
    if until == "generation":
        return out

    # the other arms: same recipe and steps as raw; no_augmentation adds L_c, augmented the pseudo samples
    arms = {"raw": raw}
    arms["no_augmentation"] = raw if ccfg.alpha == 0 else fit(
        "no_augmentation", [data], arm_recipe(ccfg, "no_augmentation"), stage_config("no_augmentation", cfg))
    if augmenting and cfg.augment.mode == "static" and not has_pseudo_rows(out):
        # nothing to train on (an augmenter skipped offline, or every sample dropped): the
        # augmented fit would be the no_augmentation fit step for step, so it is that fit
        log.info("no pseudo samples to train on: the augmented arm is the no_augmentation arm")
        arms["augmented"] = arms["no_augmentation"]
    elif augmenting:
        extra: Dict[str, Any] = {}
        if cfg.augment.mode == "reflective":
            sources = da.plan_sources(train, cfg.augment, cfg.generator, cfg.seed)
            extra = {"mode": "reflective", "regenerate_every": cfg.augment.regenerate_every,
                     "generator_checkpoint": str(generator.file("model")),
                     "generator": dataclasses.asdict(cfg.generator), "sources": sources.to_dict("records")}
        arms["augmented"] = fit("augmented", generation_inputs, arm_recipe(ccfg, "augmented"),
                                stage_config("augmented", cfg), pseudo=out["pseudo_path"] if not extra else None, **extra)
        if cfg.augment.mode == "reflective":  # the last regenerated set
            out["pseudo_path"] = arms["augmented"].file("model") / "pseudo.parquet"
    out["arms"] = arms
    # the evaluation reads the arms and the pseudo samples (diagnostics, augmented.parquet): the
    # generation is named even where the augmented arm's key carries it, since that arm may be the
    # no_augmentation fit, and a run without pseudo samples is not the raw run's evaluation
    inputs = list(dict.fromkeys(arms.values())) + ([out["generation"]] if out["generation"] is not None else [])
    out["evaluation"] = store.stage("evaluation", inputs, stage_config("evaluation", cfg),
                                    lambda d: evaluate_arms(d, cfg, names, out, store))
    return out


def evaluate_arms(folder: Path, cfg: Config, names: Sequence[str], out: Dict[str, Any], store) -> Dict[str, int]:
    """The evaluation stage: every arm and the frozen-encoder probe on dev and test (each a
    ``scores`` or ``probe`` stage of ``store``, shown in ``out["scores"]``), the arm the run
    recommends (``select_arm``), and the augmented data set with each row's label consistency."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.classifier import probe_classifier
    from dcls_core.evaluation import select_arm
    from dcls_core.models import load_tokenizer
    from dcls_core.training import evaluate

    ml, ccfg = cfg.data.max_length, cfg.classifier
    train, dev, test, pseudo = out["train"], out["dev"], out["test"], load_pseudo(out)
    splits = [(split, frame) for split, frame in (("dev", dev), ("test", test)) if len(frame)]
    metrics: Dict[str, Any] = {"best_step": {}}

    def score_arm(d: Path, checkpoint: Path):
        model, tok = da.load_classifier_checkpoint(checkpoint)
        atomic_write_json(d / "scores.json", {split: evaluate(model, frame, tok, names, ml,
                                                              keep_predictions=split == "dev")
                                              for split, frame in splits})

    def score_probe(d: Path):
        probe = probe_classifier(cfg.model, train, names, ml, ccfg.probe_C, cfg.seed)
        tok = load_tokenizer(cfg.model)
        atomic_write_json(d / "scores.json", {split: evaluate(probe, frame, tok, names, ml) for split, frame in splits})

    scores = out["scores"] = {}
    for arm, stage in out["arms"].items():  # an arm that is another's fit is scored once (its stage key)
        scores[arm] = store.stage("scores", [out["data"], stage], stage_config("scores", cfg),
                                  lambda d, ckpt=stage.file("model"): score_arm(d, ckpt))
        metrics[arm] = read_json(scores[arm].file("scores.json"))
        metrics["best_step"][arm] = read_json(stage.file("model") / "fit.json")["best_step"]
    scores["probe"] = store.stage("probe", [out["data"]], stage_config("probe", cfg), score_probe)
    metrics["probe"] = read_json(scores["probe"].file("scores.json"))
    judge = out["consistency_model"]
    if judge is not None and cfg.augment.method == "diffusion":
        history = read_json(Path(judge) / "history.json")
        metrics["proxy"] = {"dev_accuracy_at_start": history[0].get("dev_accuracy") if history else None,
                            "dev_accuracy": max((h.get("dev_accuracy", 0.0) for h in history), default=None),
                            "checkpoint": "raw" if judge == out["raw"].file("model") else "proxy"}
    metrics["selected"] = select_arm(metrics, ccfg.fallback_on_dev, dev["label"].astype(str).tolist(), names,
                                     ccfg.select_confidence)
    aug = da.augmented_frame(train, pseudo)
    if pseudo is not None and len(pseudo):
        from dcls_core.diagnostics import inherited_label_probs, pseudo_diagnostics
        from dcls_core.training import predict

        probs = None
        if judge is not None:  # the judge's probabilities: its consistency column and the diagnostics
            model, tok = da.load_classifier_checkpoint(judge)
            _, probs = predict(model, aug, tok, names, ml)
            aug["consistency"] = inherited_label_probs(aug, probs, names)[0]
        rows = aug["is_pseudo"].to_numpy()
        metrics["pseudo_diagnostics"] = pseudo_diagnostics(aug[rows], train, None if probs is None else probs[rows],
                                                           names)
    metrics["labels"] = list(names)
    metrics["rows"] = {"train": len(train), "pseudo": 0 if pseudo is None else len(pseudo),
                       "dev": len(dev), "test": len(test)}
    atomic_write_json(folder / "metrics.json", metrics)
    atomic_write_parquet(folder / "augmented.parquet", aug)
    return metrics["rows"]
