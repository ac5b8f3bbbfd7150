"""Hyper-parameter studies without Ray: what one trial computes, and what trials share.

A study point is a set of config overrides (``generator.lam=0.3``, ``augment.n=2``, ...). It is
scored by fitting the augmented classifier on each (dataset, seed) of the study and reading its
best dev macro-F1 (never test). What does not depend on every setting is computed once per
(dataset, seed) and kept in a stage folder that every trial reads (:class:`SharedStages`):

====================  ===============================================================
stage                 recomputed when these change
====================  ===============================================================
``data``              dataset, data.*
``raw``               data, model, classifier recipe at alpha = 0 (the proxy, unless
                      classifier.separate_proxy: then ``proxy``)
``importance``        proxy, max_length
``generator``         proxy, importance, the generator's *training* settings (T, lambda,
                      importance_norm, lr, epochs, warm-up, ...)
``generation``        generator, augment.*, the generator's decoding settings (group,
                      reverse steps, sampling), min_confidence
====================  ===============================================================

These are the pipeline's own stages and keys (``dcls_core.stages``), run in this process
(``LocalExecutor``), so a trial that only changes alpha, tau or the classifier's steps trains no
generator and generates nothing. ``jobs/tune.py`` runs :func:`score_point` inside Ray Tune trials.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence


from dcls_core.artifacts import RunFolder, file_lock, stage_key
from dcls_core.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)


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
        """The pipeline's stages up to ``generation`` (``dcls_core.stages.run_stages``), in this
        process: ``{"pseudo": frame, "proxy": folder, "proxy_dev": metrics, "stages": {name: built|reused}}``."""
        from dcls_core.artifacts import read_json
        from dcls_core.stages import LocalExecutor, load_pseudo, run_stages

        out = run_stages(cfg, bundle, self, LocalExecutor(cfg, cache_dir), until="generation", data_variant="study")
        fit = read_json(out["proxy"].file("model") / "fit.json")
        return {"pseudo": load_pseudo(out), "proxy": out["proxy"].file("model"),
                "proxy_dev": {"accuracy": fit["best_dev_accuracy"], "macro_f1": fit["best_dev_macro_f1"]},
                "stages": {role: "reused" if out[role].skipped else "built"
                           for role in ("data", "proxy", "importance", "generator", "generation")},
                "generator_key": out["generator"].key}


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
