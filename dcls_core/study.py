"""Hyper-parameter studies without Ray: what one trial computes, and what trials share.

A study point is a set of config overrides (``generator.lam=0.3``, ``augment.n=2``, ...). It is
scored by fitting the augmented classifier on each (dataset, seed) of the study and reading its
best dev macro-F1 (never test). What does not depend on every setting is computed once per
(dataset, seed) and kept in a stage folder that every trial reads (:class:`SharedStages`):

====================  ===============================================================
stage                 recomputed when these change
====================  ===============================================================
``proxy``             data, model, classifier recipe at alpha = 0 (it is the raw arm)
``importance``        proxy, max_length
``generator``         proxy, importance, the generator's *training* settings (T, lambda,
                      importance_norm, lr, epochs, warm-up, ...)
``generation``        generator, augment.*, the generator's decoding settings (group,
                      reverse steps, sampling), min_confidence
====================  ===============================================================

so a trial that only changes alpha, tau or the classifier's steps trains no generator and
generates nothing. ``jobs/tune.py`` runs :func:`score_point` inside Ray Tune trials.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pandas as pd

from dcls_core.artifacts import RunFolder, atomic_write_parquet, file_lock, stable_hash, stage_key
from dcls_core.config import ClassifierConfig, Config, ConfigError, GeneratorConfig, load_config

log = logging.getLogger(__name__)

# GeneratorConfig fields that only the reverse process reads (not the generator's training)
DECODING_FIELDS = ("group_size", "group_index", "reverse_steps", "temperature", "top_k", "top_p")


def override_value(value: Any) -> str:
    """A Python value as a Hydra override value (``true``, ``0.3``, ``[a,b]``, ``'x y'``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, str) and any(c in value for c in " ,=[]{}'\""):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def point_overrides(params: Dict[str, Any]) -> List[str]:
    """A study point as config overrides, in key order (so equal points give equal lists)."""
    return [f"{key}={override_value(params[key])}" for key in sorted(params)]


def point_config(base: Sequence[str], dataset: Optional[str], dataset_overrides: Sequence[str],
                 params: Dict[str, Any], seed: int) -> Config:
    """The pipeline config of one fit of a study: the study's own overrides, the dataset preset and
    its overrides, the point, the seed (later ones win)."""
    overrides = list(base) + ([f"dataset={dataset}"] if dataset else []) + list(dataset_overrides)
    cfg = load_config(overrides + point_overrides(params) + [f"seed={seed}"])
    if cfg.augment.method != "diffusion" or cfg.augment.mode != "static":
        raise ConfigError(f"a study scores augment.method=diffusion in mode=static (got method="
                          f"{cfg.augment.method!r}, mode={cfg.augment.mode!r})")
    return cfg


def generator_training_key(gcfg: GeneratorConfig) -> Dict[str, Any]:
    """The generator settings its training reads (decoding-only fields left out)."""
    return {k: v for k, v in dataclasses.asdict(gcfg).items() if k not in DECODING_FIELDS}


def proxy_recipe(ccfg: ClassifierConfig) -> ClassifierConfig:
    """The proxy's recipe (the raw arm unless classifier.proxy_* give it its own), with the
    settings it never reads (L_c's tau and form, pseudo samples per step, arm selection) at
    their defaults, so that trials differing only in those share one proxy."""
    unused = ("tau", "contrastive", "pseudo_per_step", "fallback_on_dev", "select_confidence")
    defaults = ClassifierConfig()
    base = ccfg.proxy() if ccfg.separate_proxy else dataclasses.replace(ccfg, alpha=0.0)
    return dataclasses.replace(base, **{k: getattr(defaults, k) for k in unused})


class SharedStages:
    """The proxy, importance, generator and pseudo samples of one (dataset, seed), each computed
    once per key and reused by every trial of a study (and by its final evaluation).

    Trials run at the same time: a file lock per stage key makes the second trial that needs a
    stage wait for the first to finish it, then reuse it (``flock`` is released if a trial is
    killed; a killed stage leaves only a temporary folder, cleaned on the next try)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run = RunFolder(self.root, logger=log.info)

    def stage(self, name: str, inputs, config: Any, fn) -> Any:
        """``RunFolder.stage`` under a lock on that stage's key: a trial needing a stage another
        trial is computing waits and reuses it; trials needing different keys run side by side."""
        key = stage_key(name, [i.key if hasattr(i, "key") else str(i) for i in inputs], config)
        with file_lock(self.run.stages / f".{name}-{key}.lock"):
            return self.run.stage(name, inputs, config, fn)

    def pseudo(self, cfg: Config, bundle, cache_dir: Path) -> Dict[str, Any]:
        """``{"pseudo": frame, "proxy": folder, "proxy_dev": metrics, "stages": {name: built|reused}}``."""
        from dcls_core import diffusion_augmenter as da
        from dcls_core.models import load_classifier, load_tokenizer
        from dcls_core.training import evaluate, fit_classifier

        names, ml, ccfg = bundle.vocab.names, cfg.data.max_length, cfg.classifier
        train, dev, test = bundle.train, bundle.dev, bundle.test
        proxy_cfg = proxy_recipe(ccfg)
        augmenter = da.DiffusionAugmenter(cfg.model, cfg.generator, cfg.augment, ccfg, ml, cache_dir,
                                          cfg.data.resolved_root(), dev_df=dev,
                                          exclude_texts=test["text"].tolist(), progress=False)
        data_key = stable_hash({"dataset": cfg.dataset, "data": cfg.data})
        tok = load_tokenizer(cfg.model)

        def proxy_fn(d: Path):
            model = load_classifier(cfg.model, len(names), cfg.seed)
            res = fit_classifier(model, tok, train, dev, names, proxy_cfg, ml, cfg.seed)
            da.save_checkpoint(res.model, tok, d / "model")
            return {"steps": res.steps, "best_step": res.best_step,
                    "dev": {k: evaluate(res.model, dev, tok, names, ml)[k] for k in ("accuracy", "macro_f1")}}

        def importance_fn(d: Path):
            model, _ = da.load_classifier_checkpoint(proxy.file("model"))
            atomic_write_parquet(d / "importance.parquet", pd.DataFrame(
                {"id": train["id"].astype(str), "importance": augmenter.importance(train, model, tok)}))
            return {"rows": len(train)}

        def generator_fn(d: Path):
            model, _ = da.load_classifier_checkpoint(proxy.file("model"))
            state, stats = augmenter.train_generator(train, importance(), names, cfg.seed, model)
            da.save_checkpoint(state["model"], state["tokenizer"], d / "model")
            return {"steps": stats["generator"].get("steps"), "warmup_cached": stats["warmup"].get("cached")}

        def generation_fn(d: Path):
            model, _ = da.load_classifier_checkpoint(proxy.file("model"))
            state = da.load_generator_checkpoint(generator.file("model"), names, cfg.generator.label_prompt)
            rows = augmenter.generate(state, train, importance(), names, cfg.seed, model, tok)
            atomic_write_parquet(d / "pseudo.parquet", rows)
            return {k: v for k, v in augmenter.stats.items() if k != "generator_cfg"}  # in the stage key already

        def importance():
            frame = pd.read_parquet(imp.file("importance.parquet"))
            by_id = dict(zip(frame["id"], frame["importance"]))
            return augmenter.normalise([list(by_id[i]) for i in train["id"].astype(str)])

        proxy = self.stage("proxy", [data_key], {"model": cfg.model, "classifier": proxy_cfg,
                                                 "seed": cfg.seed, "max_length": ml}, proxy_fn)
        imp = self.stage("importance", [proxy], {"max_length": ml}, importance_fn)
        generator = self.stage("generator", [data_key, proxy, imp],
                               {"model": cfg.model, "generator": generator_training_key(cfg.generator),
                                "seed": cfg.seed, "max_length": ml}, generator_fn)
        generation = self.stage("generation", [generator, proxy],
                                {"augment": cfg.augment, "generator": cfg.generator, "seed": cfg.seed,
                                 "max_length": ml}, generation_fn)
        stages = {s.name: "reused" if s.skipped else "built" for s in (proxy, imp, generator, generation)}
        return {"pseudo": pd.read_parquet(generation.file("pseudo.parquet")), "proxy": proxy.file("model"),
                "proxy_dev": proxy.meta["summary"]["dev"], "stages": stages,
                "generator_key": generator.key}


OnEval = Callable[[Dict[str, Any]], None]


def score_point(base: Sequence[str], datasets: Sequence[Optional[str]], dataset_overrides: Dict[str, List[str]],
                params: Dict[str, Any], seeds: Sequence[int], shared_root: Path, cache_dir: Optional[Path] = None,
                on_eval: Optional[OnEval] = None, splits: Sequence[str] = ("dev",),
                fit: Optional[Callable[..., Any]] = None) -> Dict[str, Any]:
    """Fit the augmented classifier of ``params`` on every (dataset, seed), in that order.

    ``on_eval(report)`` after every dev evaluation: ``iteration`` (evaluations so far, all fits),
    ``dev_macro_f1`` (mean over the fits so far of each fit's best dev macro-F1, the current fit's
    best so far included: a scheduler compares trials at equal iterations, so over the same fits).
    Returns per-fit results (``splits`` evaluated with the best-dev weights, the raw arm/proxy's
    dev and test beside them) and ``dev_macro_f1``, the mean over fits. ``fit``: replaces the
    in-process ``fit_classifier`` (``jobs/tune.py`` passes a Ray Train one); it is called with
    the same arguments and must return a ``FitResult``-like object or ``(model, best_dev_f1)``."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.data import load_dataset
    from dcls_core.models import load_classifier, load_tokenizer
    from dcls_core.training import evaluate, fit_classifier

    fits: List[Dict[str, Any]] = []
    state = {"iteration": 0}
    for dataset in datasets:
        for seed in seeds:
            start = time.time()
            cfg = point_config(base, dataset, dataset_overrides.get(dataset or "", []), params, seed)
            bundle = load_dataset(cfg.dataset, cfg.data)
            names, ml = bundle.vocab.names, cfg.data.max_length
            shared = SharedStages(shared_root / f"{dataset or cfg.dataset.name}-s{seed}")
            got = shared.pseudo(cfg, bundle, Path(cache_dir) if cache_dir else Path(cfg.storage_path) / "cache")
            tok = load_tokenizer(cfg.model)
            best = {"f1": float("-inf")}
            done = [f["dev_macro_f1"] for f in fits]

            def report(record: Dict[str, Any], _model=None) -> None:
                if "dev_macro_f1" not in record:
                    return
                best["f1"] = max(best["f1"], float(record["dev_macro_f1"]))
                state["iteration"] += 1
                if on_eval is not None:
                    on_eval({"iteration": state["iteration"], "dev_macro_f1": sum(done + [best["f1"]]) / (len(done) + 1),
                             "fits_done": len(done), "fit_step": int(record.get("step", 0))})

            model = load_classifier(cfg.model, len(names), seed)
            res = (fit or fit_classifier)(model, tok, bundle.train, bundle.dev, names, cfg.classifier, ml, seed,
                                          pseudo_df=got["pseudo"], on_eval=report)
            best_dev = float(res.best_dev_metrics["macro_f1"]) if res.best_dev_metrics else best["f1"]
            out = {"dataset": dataset or cfg.dataset.name, "seed": seed, "dev_macro_f1": best_dev,
                   "pseudo_rows": len(got["pseudo"]), "stages": got["stages"], "proxy_dev": got["proxy_dev"],
                   "train_rows": len(bundle.train), "seconds": 0.0}
            frames = {"dev": bundle.dev, "test": bundle.test}
            raw_model = None
            for split in splits:
                if split == "dev":
                    continue
                m = evaluate(res.model, frames[split], tok, names, ml)
                out[split] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
                raw_model = raw_model or da.load_classifier_checkpoint(got["proxy"])[0]
                r = evaluate(raw_model, frames[split], tok, names, ml)
                out[f"raw_{split}"] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
            out["seconds"] = round(time.time() - start, 1)
            fits.append(out)
    return {"fits": fits, "dev_macro_f1": sum(f["dev_macro_f1"] for f in fits) / len(fits)}


def best_experiment_yaml(study: str, base: Sequence[str], params: Dict[str, Any], objective: float,
                         datasets: Sequence[str], seeds: Sequence[int]) -> str:
    """A ready-to-use experiment preset of a study's best point: every setting of the study's own
    overrides and of the point that differs from the defaults (dataset and study settings left
    out: ``python jobs/pipeline.py experiment=<study>_best dataset=...``)."""
    from omegaconf import OmegaConf

    chosen = OmegaConf.to_container(OmegaConf.structured(load_config(list(base) + point_overrides(params))))
    default = OmegaConf.to_container(OmegaConf.structured(load_config([])))
    skip = {"dataset", "tune", "experiment", "seed", "output_dir", "storage_path", "cache_dir"}

    def diff(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = {k: diff(v, b.get(k)) for k, v in a.items() if v != b.get(k)}
            return {k: v for k, v in out.items() if v is not None}
        return a

    body = {k: v for k, v in diff(chosen, default).items() if k not in skip}
    body = {"experiment": f"{study}_best", **body}
    header = (f"# @package _global_\n# written by jobs/tune.py: the best point of study {study!r} "
              f"(dev macro-F1 {objective:.4f}, mean over {list(datasets)} x seeds {list(seeds)}).\n"
              f"# The point: {' '.join(point_overrides(params)) or '(the defaults)'}\n"
              f"# Use: python jobs/pipeline.py experiment={study}_best dataset=<dataset>\n")
    return header + OmegaConf.to_yaml(OmegaConf.create(body))


WRITTEN_BY = "# written by jobs/tune.py"
