#!/usr/bin/env python
"""The DiffusionCLS pipeline on Ray, one job from data to report.

    python jobs/pipeline.py experiment=demo                      # laptop: local Ray sized to the machine
    ray job submit --working-dir . -- python jobs/pipeline.py experiment=india_covid_x ray=cluster \\
        storage_path=/mnt/shared/runs                            # a cluster (RAY_ADDRESS set by Ray)

Stages, in order (each cached under ``<run>/stages/<name>-<key>/``; a rerun skips finished ones):

    data -> raw (the proxy, unless a preset gives it its own recipe) -> importance -> generator
         (warm-up + diffusion) -> generation -> no_augmentation, augmented -> evaluation -> report

``augment.method`` is any registered augmenter (``dcls_core.augment``): a baseline skips importance
and generator, and its ``generation`` stage runs the augmenter in one Ray task (``mlm`` after the
cached generator warm-up, whose masked LM it uses); the raw arm judges its pseudo samples.

Three classifier arms, same recipe, same originals per step, same steps (dcls_core.training):
``raw`` (cross-entropy only, alpha = 0), ``no_augmentation`` (L_e + alpha L_c, the paper's
"w/o D.A." ablation) and ``augmented`` (+ pseudo samples riding with their sources). The
frozen-encoder ``probe`` is reported beside them, and ``selected`` names the arm the run
recommends: ``augmented`` only when it beats the others on dev (``classifier.fallback_on_dev``).

The config and the input data are validated before Ray starts or any model loads: a bad value
prints ``error: <message>`` and exits with status 2, Hydra's grammar errors included. The
overrides are read as by ``dcls`` (``dcls_core.cli.run_config``): ``dataset=path/to/file.csv``
works as in ``dcls data describe``, and a dict value replaces a preset's dict. The run's log goes to
stderr and to ``<run folder>/pipeline.log``.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from dcls_core.artifacts import RunFolder, atomic_write_json, atomic_write_parquet, atomic_write_text, read_json  # noqa: E402
from dcls_core.config import ClassifierConfig, Config, ConfigError, RayConfig  # noqa: E402

log = logging.getLogger("dcls.pipeline")
EXIT_BAD_INPUT = 2


# --------------------------------------------------------------------------- validation
def prepare(cfg_like: Any):
    """Config -> (Config, DatasetBundle); raises ConfigError/DataError/ModelResolutionError early."""
    from dcls_core.config import to_config
    from dcls_core.data import load_dataset
    from dcls_core.models import check_max_lengths
    from dcls_core.storage import check_storage
    from jobs.ray_runtime import check_local_resources

    cfg = to_config(cfg_like)
    check_storage(cfg)  # a URI storage_path: its filesystem package is installed and the folder reachable
    check_local_resources(cfg.ray)  # a request a local Ray can never place would wait forever
    for name in cfg.ray.fit_workers:
        if name not in FITS:
            raise ConfigError(f"ray.fit_workers has unknown fit {name!r}: use {sorted(FITS)}")
    from dcls_core.augment import available_augmenters

    if cfg.augment.method not in available_augmenters():
        raise ConfigError(f"augment.method={cfg.augment.method!r} is not a registered augmenter: use one of "
                          f"{available_augmenters()}")
    from dcls_core.baselines import ensure_available

    ensure_available(cfg.augment)  # e.g. EDA without WordNet fails here, naming the package
    _check_warmup_corpus(cfg)
    bundle = load_dataset(cfg.dataset, cfg.data)
    if len(bundle.train) < 2:
        raise ConfigError(f"the training split has {len(bundle.train)} rows; at least 2 are needed")
    check_max_lengths(cfg)  # loads the tokenizer: a model that cannot be resolved fails here, not in a worker
    return cfg, bundle


FITS = ("proxy", "generator", "raw", "no_augmentation", "augmented")


def _check_warmup_corpus(cfg: Config) -> None:
    """Every warm-up corpus entry is a file or a dataset preset (checked before any compute)."""
    from dcls_core.augment import uses_masked_lm
    from dcls_core.config import configs_dir
    from dcls_core.warmup import needs_warmup

    if not uses_masked_lm(cfg.augment.method) or not needs_warmup(cfg.model, cfg.generator.warmup):
        return
    root = cfg.data.resolved_root()
    for entry in cfg.generator.warmup.corpus:
        candidates = [Path(entry).expanduser(), root / entry, configs_dir() / "dataset" / f"{entry}.yaml"]
        if not any(c.is_file() for c in candidates):
            raise ConfigError(f"generator.warmup.corpus entry {entry!r} is neither a file (absolute or under "
                              f"{root}) nor a dataset preset in {configs_dir() / 'dataset'}")


def fit_ray_cfg(cfg: Config, fit: str) -> RayConfig:
    workers = cfg.ray.fit_workers.get(fit, cfg.ray.num_workers)
    return dataclasses.replace(cfg.ray, num_workers=int(workers))


def run_folder(cfg: Config) -> Path:
    """Where the stages work: ``output_dir`` or ``<storage_path>/<experiment>``, or the local working
    copy of a run kept on a URI (``dcls_core.storage``)."""
    from dcls_core.storage import working_copy

    return working_copy(cfg)


def cache_dir(cfg: Config) -> Path:
    from dcls_core import storage

    return storage.cache_dir(cfg)


def _records(frame: Optional[pd.DataFrame]):
    if frame is None:
        return None
    return frame.to_dict("records")


def _train_into(stage_dir: Path, fit: str, loop_config: Dict[str, Any], cfg: Config) -> Dict[str, Any]:
    """Run one Ray Train fit whose storage is the stage folder; its checkpoint becomes ``model/``."""
    from jobs.ray_train import run_training
    from jobs.train_loops import classifier_loop, generator_loop

    loop = generator_loop if fit == "generator" else classifier_loop
    loop_config = dict(loop_config, name=fit)
    start = time.time()
    ckpt = run_training(loop, loop_config, fit_ray_cfg(cfg, fit), stage_dir / "ray_train", fit)
    shutil.copytree(ckpt, stage_dir / "model")
    shutil.rmtree(stage_dir / "ray_train", ignore_errors=True)
    return {"seconds": round(time.time() - start, 1), "workers": fit_ray_cfg(cfg, fit).num_workers,
            "strategy": cfg.ray.strategy}


def _fault_kwargs(cfg: Config, stage_dir: Path, name: str) -> Dict[str, Any]:
    if not cfg.ray.fault_kill_actor_after:
        return {}
    return {"fault_after": cfg.ray.fault_kill_actor_after, "fault_marker": str(stage_dir / f"{name}.killed")}


# --------------------------------------------------------------------------- stages
def stage_data(run: RunFolder, cfg: Config, bundle, variant: str = "pipeline"):
    def fn(d: Path):
        for split, frame in bundle.frames.items():
            atomic_write_parquet(d / f"{split}.parquet", frame)
        atomic_write_json(d / "labels.json", bundle.vocab.names)
        atomic_write_json(d / "data_report.json", bundle.describe())
        return {split: len(f) for split, f in bundle.frames.items()}

    out = run.stage("data", [], {"dataset": cfg.dataset, "data": cfg.data, "variant": variant}, fn)
    shutil.copyfile(out.file("data_report.json"), run.path("data_report.json"))
    return out


def classifier_config(cfg: Config, names, train, dev, ccfg: ClassifierConfig) -> Dict[str, Any]:
    """The Ray Train loop config of one classifier fit (proxy or arm)."""
    return {
        "model": dataclasses.asdict(cfg.model), "label_names": list(names), "seed": cfg.seed,
        "train": _records(train), "dev": _records(dev), "max_length": cfg.data.max_length,
        "classifier": dataclasses.asdict(ccfg), "mode": "static",
    }


def run_pipeline(cfg: Config, bundle, stop_after: Optional[str] = None,
                 data_variant: str = "pipeline") -> Dict[str, Any]:
    from omegaconf import OmegaConf

    from dcls_core import diffusion_augmenter as da
    from dcls_core.importance import normalise_importance
    from jobs.ray_runtime import init_ray

    from dcls_core.storage import check_working_copy, remote_run

    root = run_folder(cfg)
    run = RunFolder(root, logger=log.info, remote=remote_run(cfg))
    atomic_write_text(run.path("config.yaml"), OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    names = bundle.vocab.names
    ml = cfg.data.max_length
    data = stage_data(run, cfg, bundle, data_variant)
    train = pd.read_parquet(data.file("train.parquet"))
    dev = pd.read_parquet(data.file("dev.parquet"))
    test = pd.read_parquet(data.file("test.parquet"))
    init_ray(cfg.ray)
    import ray

    check_working_copy(cfg, nodes=sum(1 for node in ray.nodes() if node.get("Alive")))
    method = cfg.augment.method
    augmenting = method != "none" and (cfg.augment.n > 0 or cfg.augment.policy == "balance")

    ccfg = cfg.classifier
    arm_cfgs = {"raw": dataclasses.replace(ccfg, alpha=0.0), "no_augmentation": ccfg, "augmented": ccfg}

    def arm_key(arm: str) -> Dict[str, Any]:
        return {"model": cfg.model, "classifier": arm_cfgs[arm], "seed": cfg.seed, "max_length": ml}

    def fit_stage(name: str, inputs, key: Dict[str, Any], ccfg_: ClassifierConfig, **extra):
        return run.stage(name, inputs, key, lambda d: _train_into(
            d, name, dict(classifier_config(cfg, names, train, dev, ccfg_), **extra), cfg))

    # raw arm: cross-entropy only; also the proxy unless a preset gives the proxy its own recipe
    raw = fit_stage("raw", [data], arm_key("raw"), arm_cfgs["raw"])
    pseudo = None
    consistency_model = None
    generation_inputs: list = []
    if augmenting and method == "diffusion":
        proxy = raw
        if ccfg.separate_proxy:
            proxy = fit_stage("proxy", [data], {"model": cfg.model, "classifier": ccfg.proxy(), "seed": cfg.seed,
                                                "max_length": ml}, ccfg.proxy())
        consistency_model = proxy.file("model")

        # token importance (Eq. 1) on an actor pool
        def importance_fn(d: Path):
            from jobs.ray_data import ImportanceScorer, run_actor_pool

            scored = run_actor_pool(train[["id", "text", "label"]], ImportanceScorer,
                                    {"checkpoint": str(proxy.file("model")), "max_length": ml,
                                     **_fault_kwargs(cfg, d, "importance")}, cfg.ray, d, "importance")
            atomic_write_parquet(d / "importance.parquet", scored[["id", "importance"]])
            return {"rows": len(scored), "actor_killed": (d / "importance.killed").exists()}

        importance = run.stage("importance", [data, proxy], {"max_length": ml}, importance_fn)
        imp = pd.read_parquet(importance.file("importance.parquet"))
        imp_by_id = {i: normalise_importance(list(v), cfg.generator.importance_norm)
                     for i, v in zip(imp["id"], imp["importance"])}

        # generator: warm-up (cross-run cache, a Ray task) + diffusion training (Ray Train)
        def generator_fn(d: Path):
            warm = warmup_remote(cfg, train, dev, test)
            loop = {"model": dataclasses.asdict(cfg.model), "label_names": names, "seed": cfg.seed,
                    "generator": dataclasses.asdict(cfg.generator), "epochs": cfg.generator.epochs,
                    "min_steps": cfg.generator.min_steps,
                    "max_length": ml, "start_checkpoint": warm.get("path"),
                    "proxy_checkpoint": str(proxy.file("model")) if (
                        cfg.generator.init_from_proxy and warm.get("skipped")) else None,
                    "train": _records(train.assign(importance=[imp_by_id[i] for i in train["id"]]))}
            stats = _train_into(d, "generator", loop, cfg)
            stats["warmup"] = {k: warm.get(k) for k in ("skipped", "cached", "key", "steps", "seconds")}
            return stats

        generator = run.stage("generator", [data, proxy, importance],
                              {"model": cfg.model, "generator": cfg.generator, "seed": cfg.seed, "max_length": ml},
                              generator_fn)
        sources = da.plan_sources(train, cfg.augment, cfg.generator, cfg.seed)
        sources["importance"] = [imp_by_id[i] for i in sources["id"]]
        generation_inputs = [data, importance, generator]

        if cfg.augment.mode == "static":
            def generation_fn(d: Path):
                from dcls_core.augment import empty_pseudo_frame
                from jobs.ray_data import PseudoSampleGenerator, run_actor_pool

                if sources.empty:  # e.g. policy=balance on balanced data: nothing to generate
                    atomic_write_parquet(d / "pseudo.parquet", empty_pseudo_frame())
                    return {"rows": 0, "sources": 0, "actor_killed": False}
                rows = run_actor_pool(
                    sources, PseudoSampleGenerator,
                    {"checkpoint": str(generator.file("model")), "generator_cfg": dataclasses.asdict(cfg.generator),
                     "label_names": names, "max_length": ml, "seed": cfg.seed,
                     **_fault_kwargs(cfg, d, "generation")},
                    cfg.ray, d, "generation", expect_ids=da.expected_pseudo_ids(sources))
                rows, empty = da.drop_empty_pseudo(rows)
                summary = {"rows": len(rows), "sources": len(sources), "dropped_empty": empty,
                           "actor_killed": (d / "generation.killed").exists()}
                rows = _judge_filter(rows, proxy.file("model"), names, cfg, summary)  # the proxy judges
                atomic_write_parquet(d / "pseudo.parquet", rows.reset_index(drop=True))
                return summary

            generation = run.stage("generation", generation_inputs,
                                   {"augment": cfg.augment, "generator": cfg.generator, "seed": cfg.seed}, generation_fn)
            pseudo = pd.read_parquet(generation.file("pseudo.parquet"))
            generation_inputs = [data, generation]
    elif augmenting:  # a baseline: no importance, no generator; the raw arm judges its pseudo samples
        consistency_model = raw.file("model")

        def baseline_fn(d: Path):
            from dcls_core.augment import uses_masked_lm

            warm = warmup_remote(cfg, train, dev, test) if uses_masked_lm(method) else {}
            rows, stats = augment_remote(cfg, train, dev, test, names, warm.get("path"))
            rows, empty = da.drop_empty_pseudo(rows)  # as the diffusion stage: counted in _stage.json
            summary = {"rows": len(rows), "method": method, "stats": stats, "empty_dropped": empty}
            rows = _judge_filter(rows, raw.file("model"), names, cfg, summary)
            atomic_write_parquet(d / "pseudo.parquet", rows.reset_index(drop=True))
            return summary

        key: Dict[str, Any] = {"augment": cfg.augment, "seed": cfg.seed, "max_length": ml}
        if method == "mlm":  # the warmed-up masked LM and its decoding settings
            key.update(model=cfg.model, generator=cfg.generator)
        generation = run.stage("generation", [data, raw] if cfg.augment.min_confidence is not None else [data],
                               key, baseline_fn)
        pseudo = pd.read_parquet(generation.file("pseudo.parquet"))
        generation_inputs = [data, generation]
    if stop_after == "generation":
        return {"run": str(root), "train": train, "pseudo": pseudo, "consistency_model": consistency_model}

    # the other arms: same recipe and steps as raw; no_augmentation adds L_c, augmented the pseudo samples
    stages = {"raw": raw}
    stages["no_augmentation"] = raw if ccfg.alpha == 0 else fit_stage(
        "no_augmentation", [data], arm_key("no_augmentation"), arm_cfgs["no_augmentation"])
    if augmenting:
        extra: Dict[str, Any] = {"pseudo": _records(pseudo)}
        if cfg.augment.mode == "reflective":
            extra = {"mode": "reflective", "regenerate_every": cfg.augment.regenerate_every,
                     "generator_checkpoint": str(generator.file("model")),
                     "generator": dataclasses.asdict(cfg.generator),
                     "sources": _records(sources.drop(columns=["importance"]))}
        stages["augmented"] = fit_stage("augmented", generation_inputs,
                                        dict(arm_key("augmented"), augment=cfg.augment), arm_cfgs["augmented"],
                                        **extra)
        if cfg.augment.mode == "reflective":
            pseudo = pd.read_parquet(stages["augmented"].file("model") / "pseudo.parquet")

    # evaluation (dev + test) of the arms and the probe, the recommended arm, the augmented data set
    def evaluation_fn(d: Path):
        from dcls_core.classifier import probe_classifier
        from dcls_core.evaluation import select_arm
        from dcls_core.models import load_tokenizer
        from dcls_core.training import evaluate

        metrics: Dict[str, Any] = {"best_step": {}}
        for arm, stage in stages.items():
            model, tok = da.load_classifier_checkpoint(stage.file("model"))
            metrics[arm] = {split: evaluate(model, frame, tok, names, ml, keep_predictions=split == "dev")
                            for split, frame in (("dev", dev), ("test", test)) if len(frame)}
            metrics["best_step"][arm] = read_json(stage.file("model") / "fit.json")["best_step"]
        probe = probe_classifier(cfg.model, train, names, ml, cfg.classifier.probe_C, cfg.seed)
        probe_tok = load_tokenizer(cfg.model)
        metrics["probe"] = {split: evaluate(probe, frame, probe_tok, names, ml)
                            for split, frame in (("dev", dev), ("test", test)) if len(frame)}
        if consistency_model is not None and method == "diffusion":
            history = read_json(Path(consistency_model) / "history.json")
            metrics["proxy"] = {"dev_accuracy_at_start": history[0].get("dev_accuracy"),
                                "dev_accuracy": max((h.get("dev_accuracy", 0.0) for h in history), default=None),
                                "checkpoint": "raw" if consistency_model == raw.file("model") else "proxy"}
        metrics["selected"] = select_arm(metrics, ccfg.fallback_on_dev, dev["label"].astype(str).tolist(), names,
                                         ccfg.select_confidence)
        aug = da.augmented_frame(train, pseudo)
        if consistency_model is not None and pseudo is not None and len(pseudo):
            model, tok = da.load_classifier_checkpoint(consistency_model)
            aug["consistency"] = da.label_consistency(model, tok, aug, names, ml)
        metrics["labels"] = list(names)
        metrics["rows"] = {"train": len(train), "pseudo": 0 if pseudo is None else len(pseudo),
                           "dev": len(dev), "test": len(test)}
        atomic_write_json(d / "metrics.json", metrics)
        atomic_write_parquet(d / "augmented.parquet", aug)
        return metrics["rows"]

    evaluation = run.stage("evaluation", list(dict.fromkeys(stages.values())), {"max_length": ml}, evaluation_fn)
    shutil.copyfile(evaluation.file("metrics.json"), run.path("metrics.json"))
    shutil.copyfile(evaluation.file("augmented.parquet"), run.path("augmented.parquet"))

    from dcls_core.report import write_report

    metrics = read_json(run.path("metrics.json"))
    augmented = pd.read_parquet(run.path("augmented.parquet"))
    write_report(root, metrics, augmented, config=cfg, stages=run.summary(),
                 checkpoints={arm: str(stage.file("model")) for arm, stage in stages.items()})
    print(metrics_table(metrics))
    run.publish()  # a run kept on a URI: the top-level files (stages were uploaded as they finished)
    print(f"\nrun folder: {root}" + (f" (kept in {run.remote})" if run.remote else ""))
    return {"run": str(root), "metrics": metrics, "stages": run.summary()}


def _judge_filter(rows: pd.DataFrame, judge: Path, names, cfg: Config, summary: Dict[str, Any]) -> pd.DataFrame:
    """Optional judge filter (``augment.min_confidence``): drop pseudo rows the judge finds unlikely."""
    if cfg.augment.min_confidence is None or not len(rows):
        return rows
    from dcls_core import diffusion_augmenter as da
    from dcls_core.diagnostics import filter_by_confidence
    from dcls_core.training import predict

    model, tok = da.load_classifier_checkpoint(judge)
    _, probs = predict(model, rows, tok, names, cfg.data.max_length)
    rows, dropped = filter_by_confidence(rows, probs, names, cfg.augment.min_confidence)
    summary.update({"dropped_low_confidence": dropped, "rows": len(rows)})
    return rows


def augment_remote(cfg: Config, train, dev, test, names, checkpoint: Optional[str]):
    """A baseline augmenter as one Ray task: (pseudo rows, its stats). ``checkpoint``: the warm-up folder
    (``mlm``); test texts never enter a corpus it builds itself."""
    import ray

    @ray.remote(num_cpus=1, num_gpus=float(cfg.ray.gpus_per_actor) or None, max_retries=1)
    def _augment(cfg, train, dev, test_texts, names, checkpoint, cache):
        import torch

        torch.set_num_threads(1)  # the task's one CPU
        from dcls_core.augment import augmenter_from_config

        augmenter = augmenter_from_config(cfg, cache_dir=cache, dev_df=dev, exclude_texts=test_texts,
                                          checkpoint=checkpoint)
        rows = augmenter.augment(train, list(names), cfg.seed)
        return rows, dict(getattr(augmenter, "stats", {}))

    return ray.get(_augment.remote(cfg, train, dev, test["text"].tolist(), list(names), checkpoint,
                                   str(cache_dir(cfg).resolve())))


def warmup_remote(cfg: Config, train, dev, test) -> Dict[str, Any]:
    """The generator warm-up as one Ray task (cached under ``cache_dir``: shared by runs and trials)."""
    import ray

    from dcls_core.warmup import needs_warmup, run_corpus

    if not needs_warmup(cfg.model, cfg.generator.warmup):
        return {"skipped": True}
    texts = run_corpus(cfg.generator.warmup, train["text"].tolist(), dev["text"].tolist(), test["text"].tolist(),
                       cfg.data.resolved_root())

    @ray.remote(num_cpus=1, max_retries=1)
    def _warm(model_cfg, warmup_cfg, texts, cache, seed, threads):
        import logging
        import os

        import torch

        torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
        progress = logging.getLogger("dcls_core.warmup")  # its step log reaches the driver's console
        if not progress.handlers:
            progress.addHandler(logging.StreamHandler())
            progress.setLevel(logging.INFO)
        from dcls_core.warmup import load_or_warmup

        _, _, stats = load_or_warmup(model_cfg, warmup_cfg, texts, cache, seed)
        return {k: v for k, v in stats.items() if k in ("skipped", "cached", "key", "path", "steps", "seconds")}

    return ray.get(_warm.remote(cfg.model, cfg.generator.warmup, texts, str(cache_dir(cfg).resolve()), cfg.seed,
                                cfg.ray.warmup_threads))


def metrics_table(metrics: Dict[str, Any]) -> str:
    """Arms and probe side by side (the demo prints it), and the arm the run recommends."""
    lines = ["| classifier | split | accuracy | macro-F1 |", "|---|---|---|---|"]
    from dcls_core.evaluation import ARMS

    for key in ("probe",) + ARMS:
        for split in ("dev", "test"):
            m = metrics.get(key, {}).get(split)
            if m:
                lines.append(f"| {key} | {split} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |")
    selected = metrics.get("selected")
    if selected:
        lines.append(f"\nselected: {selected['arm']} ({selected['reason']})")
    return "\n".join(lines)


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def main_from_config(dcfg) -> int:
    """Validate, then run; bad input (also Ray resources found short once Ray is up) exits 2.
    Validation writes nothing; a valid run logs into ``<run folder>/pipeline.log`` as well."""
    from dcls_core.cli import is_bad_input

    try:
        cfg, bundle = prepare(dcfg)
    except Exception as exc:  # noqa: BLE001 - only bad input becomes a message
        if not is_bad_input(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder = run_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "pipeline.log", encoding="utf-8")  # appended on resume
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        run_pipeline(cfg, bundle, stop_after=None)
    except ConfigError as exc:  # e.g. a cluster short of what ray.* asks for, found before any fit
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return 0


def main(argv=None) -> int:
    """``python jobs/pipeline.py key=value ...``: the overrides read as ``dcls`` reads them."""
    from dcls_core.cli import job_main

    return job_main(argv, "jobs/pipeline.py", __doc__.split("\n")[0],
                    "experiment=demo dataset=india_covid_x generator.lam=0.3 dataset=path/to/file.csv",
                    lambda cfg, _overrides: main_from_config(cfg), LOG_FORMAT)


if __name__ == "__main__":
    sys.exit(main())
