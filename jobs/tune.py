"""``python jobs/tune.py tune=<preset> [key=value ...]``: a Ray Tune study of DiffusionCLS settings.

Each trial is one point of ``tune.space`` (config overrides) scored by
``dcls_core.study.score_point``: the augmented classifier's dev macro-F1, mean over
``tune.datasets`` x ``tune.seeds``. The proxy, importance, generator and pseudo samples of a
(dataset, seed) are computed once per key and shared by every trial through the study folder
(``dcls_core.study.SharedStages``): a trial that only changes alpha, tau or n trains no generator.
ASHA stops weak trials after ``tune.grace_period`` dev evaluations; ``tune.search=optuna`` draws
points with TPE. A stopped study resumes where it was (finished trials are not rerun).

Outputs in ``<storage_path>/tune/<study>/``: ``trials.parquet``/``trials.csv`` (every trial's
point, dev objective, iterations, wall time, which shared stages it built or reused),
``study.json`` (best point, reuse counts, final evaluation), ``plots/params.png`` (each setting
against the objective), ``final.md`` (best point vs the defaults on test, ``tune.final_seeds``)
and ``<study>_best.yaml``, also written as ``configs/experiment/<study>_best.yaml`` unless a
file not written by a study is there.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python jobs/tune.py` from a checkout
    sys.path.insert(0, str(REPO))

log = logging.getLogger("dcls.tune")

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


# --------------------------------------------------------------------------- the study
def study_overrides(argv: Sequence[str]) -> List[str]:
    """The overrides every fit of the study gets: the command line without the ``tune`` ones."""
    return [o for o in argv if o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] != "tune"]


def study_dir(cfg) -> Path:
    from dcls_core.config import ConfigError
    from dcls_core.storage import parse_location

    location = parse_location(str(cfg.storage_path), "storage_path")
    if location.is_remote:
        raise ConfigError(f"storage_path={cfg.storage_path!r}: a study keeps its shared stages and Tune state on a "
                          "path every node mounts (local disk, NFS, a PVC); URIs are not supported for studies yet")
    return (location.local_path() / "tune" / cfg.tune.study).resolve()


def param_space(space: Dict[str, Dict[str, Any]]):
    from ray import tune

    made = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "choice":
            made[key] = tune.choice(list(spec["values"]))
        elif kind == "grid":
            made[key] = tune.grid_search(list(spec["values"]))
        elif kind == "uniform":
            made[key] = tune.uniform(spec["low"], spec["high"])
        elif kind == "loguniform":
            made[key] = tune.loguniform(spec["low"], spec["high"])
        else:
            made[key] = tune.randint(int(spec["low"]), int(spec["high"]))
    return made


def concurrency(tcfg, local: bool) -> int:
    """Trials at once: ``tune.max_concurrent_trials`` or the CPUs (this machine's cores for a
    local Ray, whose logical CPUs exceed them) over each trial's share (plus its Train worker)."""
    import ray

    if tcfg.max_concurrent_trials:
        return int(tcfg.max_concurrent_trials)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    if local:
        cpus = min(cpus, float(os.cpu_count() or 1))
    per = float(tcfg.cpus_per_trial) + (1.0 if tcfg.trainer == "ray_train" else 0.0)
    return max(1, int(cpus // per))


def _events(folder: Path, **event) -> None:
    """One line per trial start/end in ``trial_events.jsonl`` (O_APPEND: lines from concurrent
    trials do not interleave): how a resumed study shows it did not rerun finished trials."""
    line = json.dumps(dict(event, time=round(time.time(), 3))) + "\n"
    fd = os.open(folder / "trial_events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def ray_train_fit(folder: Path, model_cfg: Dict[str, Any]):
    """A ``fit`` for ``score_point`` that trains in a TorchTrainer (one worker) the trial builds, its
    dev evaluations forwarded to Tune (``TuneReportCallback``). Returns ``(model, best_dev_f1)``."""
    def fit(model, tok, train, dev, names, ccfg, ml, seed, pseudo_df=None, on_eval=None):
        import dataclasses

        from ray.tune.integration.ray_train import TuneReportCallback

        from dcls_core import diffusion_augmenter as da
        from dcls_core.config import RayConfig
        from jobs.ray_train import run_training
        from jobs.train_loops import classifier_loop

        from dcls_core.artifacts import atomic_write_parquet

        name = f"fit-{seed}-{int(time.time() * 1000)}"
        datasets = {}
        for split, frame in (("train", train), ("dev", dev), ("pseudo", pseudo_df)):
            if frame is not None:  # the fit's rows reach its worker as Ray Data datasets
                datasets[split] = str(atomic_write_parquet(folder / "ray_train" / name / f"{split}.parquet", frame))
        loop = {"model": model_cfg, "label_names": list(names), "seed": seed, "max_length": ml, "datasets": datasets,
                "classifier": dataclasses.asdict(ccfg), "mode": "static", "name": "augmented"}
        ckpt = run_training(classifier_loop, loop, RayConfig(num_workers=1), folder / "ray_train", name,
                            callbacks=[TuneReportCallback()])
        fit_json = json.loads((Path(ckpt) / "fit.json").read_text())
        model, _ = da.load_classifier_checkpoint(ckpt)
        return _Fit(model, {"macro_f1": fit_json["best_dev_macro_f1"]})
    return fit


class _Fit:
    def __init__(self, model, best_dev_metrics):
        self.model, self.best_dev_metrics = model, best_dev_metrics


def trial(params: Dict[str, Any], study: Dict[str, Any]) -> None:
    """One Tune trial: score ``params`` (a point of the space) and report to Tune."""
    import torch
    from ray import tune

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # stage reuse and fit progress reach the driver
    torch.set_num_threads(max(1, int(study["cpus_per_trial"])))
    folder = Path(study["dir"])
    trial_id = tune.get_context().get_trial_id()
    _events(folder, trial=trial_id, event="start", params=params)
    start = time.time()
    fit = None
    if study["trainer"] == "ray_train":
        fit = ray_train_fit(Path(tune.get_context().get_trial_dir()), study["model"])

    def on_eval(report: Dict[str, Any]) -> None:
        if fit is None:  # with Ray Train, its reports reach Tune through TuneReportCallback
            tune.report(dict(report, complete=False))

    from dcls_core.study import score_point

    splits = ("dev", "test") if study.get("trial_test") else ("dev",)
    result = score_point(study["base"], study["datasets"], study["dataset_overrides"], params, study["seeds"],
                         folder / "shared", Path(study["cache_dir"]), on_eval=on_eval, splits=splits, fit=fit)
    built = sorted({name for f in result["fits"] for name, how in f["stages"].items() if how == "built"})
    final = {"dev_macro_f1": result["dev_macro_f1"], "complete": True,
             "built": ",".join(built), "seconds": round(time.time() - start, 1),
             "fits": json.dumps(result["fits"], default=str)}
    for f in result["fits"]:
        final[f"dev_macro_f1/{f['dataset']}/s{f['seed']}"] = f["dev_macro_f1"]
        for arm in ("test", "raw_test"):  # tune.trial_test: for a figure, never for picking
            if arm in f:
                final[f"{arm}_macro_f1/{f['dataset']}/s{f['seed']}"] = f[arm]["macro_f1"]
    _events(folder, trial=trial_id, event="end", dev_macro_f1=result["dev_macro_f1"], built=built)
    tune.report(final)


def run_study(cfg, argv: Sequence[str]) -> Dict[str, Any]:
    """Run (or resume) the study of ``cfg.tune``; write its table, plots, best preset and final evaluation."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from dcls_core.config import ConfigError
    from jobs.ray_runtime import cluster_address, init_ray

    tcfg = cfg.tune
    if not tcfg.space:
        raise ConfigError("tune.space is empty: pick a study preset (tune=english, tune=fig6) or give "
                          "tune.space={<setting>: {type: choice, values: [...]}}")
    base = list(tcfg.overrides) + study_overrides(argv)
    if tcfg.datasets and any(o.split("=", 1)[0] == "dataset" for o in base):
        raise ConfigError("give the datasets either as tune.datasets or as dataset=..., not both")
    folder = study_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "study.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    datasets: List[Optional[str]] = list(tcfg.datasets) or [None]
    from dcls_core.study import point_config

    for ds in datasets:  # bad settings fail here, before any trial
        point_config(base, ds, tcfg.dataset_overrides.get(ds or "", []), {}, tcfg.seeds[0])
    import dataclasses

    from dcls_core.storage import cache_dir as cache_dir_of

    study = {"dir": str(folder), "base": base, "datasets": datasets, "dataset_overrides": dict(tcfg.dataset_overrides),
             "seeds": list(tcfg.seeds), "cpus_per_trial": tcfg.cpus_per_trial, "trainer": tcfg.trainer,
             "trial_test": tcfg.trial_test,
             "cache_dir": str(Path(cache_dir_of(cfg)).resolve()), "model": dataclasses.asdict(cfg.model)}
    if tcfg.trainer == "ray_train":  # Train's last report (its checkpoint) carries no dev_macro_f1
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    init_ray(cfg.ray)
    local = not cluster_address(cfg.ray)
    at_once = concurrency(tcfg, local)
    trainable = tune.with_resources(tune.with_parameters(trial, study=study), {"cpu": tcfg.cpus_per_trial})
    # one training_iteration = one report = one dev evaluation of the trial's fits in turn
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=10 ** 6, grace_period=tcfg.grace_period,
                               reduction_factor=tcfg.reduction_factor)
                 if tcfg.scheduler == "asha" else FIFOScheduler())
    search_alg = None
    if tcfg.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=cfg.seed)
    tune_root = folder / "ray"
    experiment = tune_root / "study"
    start = time.time()
    if tcfg.resume and tune.Tuner.can_restore(str(experiment)):
        log.info("study %s: resuming %s (finished trials are kept)", tcfg.study, experiment)
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True, restart_errored=False)
    else:
        if experiment.exists() and not tcfg.resume:
            raise ConfigError(f"{experiment} holds an earlier study and tune.resume=false: choose another "
                              f"tune.study or remove that folder")
        tuner = tune.Tuner(
            trainable, param_space=param_space(tcfg.space),
            tune_config=tune.TuneConfig(metric="dev_macro_f1", mode="max", num_samples=tcfg.num_samples,
                                        scheduler=scheduler, search_alg=search_alg,
                                        max_concurrent_trials=at_once),
            run_config=tune.RunConfig(name="study", storage_path=str(tune_root), verbose=1))
    log.info("study %s: %d samples, %s/%s, %d trial(s) at once, datasets %s, seeds %s", tcfg.study,
             tcfg.num_samples, tcfg.search, tcfg.scheduler, at_once, datasets, list(tcfg.seeds))
    results = tuner.fit()
    study_seconds = time.time() - start
    table = trials_table(results)
    table.to_parquet(folder / "trials.parquet", index=False)
    table.to_csv(folder / "trials.csv", index=False)
    done = table[table["complete"]]
    if done.empty:
        raise RuntimeError(f"no trial of study {tcfg.study} finished; see {folder / 'study.log'}")
    best_row = done.sort_values("dev_macro_f1", ascending=False, kind="stable").iloc[0]
    best = {k[len("config/"):]: _plain(best_row[k]) for k in table.columns if k.startswith("config/")}
    summary = {"study": tcfg.study, "trials": len(table), "complete": int(table["complete"].sum()),
               "stopped_early": int((~table["complete"]).sum()), "study_seconds": round(study_seconds, 1),
               "best": {"params": best, "dev_macro_f1": float(best_row["dev_macro_f1"]),
                        "trial_id": best_row["trial_id"]},
               "reuse": reuse_counts(folder, table), "base": base, "datasets": [d or cfg.dataset.name for d in datasets],
               "seeds": list(tcfg.seeds)}
    write_best(folder, cfg, base, best, summary)
    plot_params(table, list(tcfg.space), folder / "plots" / "params.png")
    if len(tcfg.space) == 1 and tcfg.trial_test:
        summary["sweep"] = sweep_table(table, next(iter(tcfg.space)))
        plot_sweep(summary["sweep"], next(iter(tcfg.space)), folder / "plots" / "sweep.png")
        (folder / "sweep.md").write_text(sweep_markdown(summary["sweep"], next(iter(tcfg.space))))
    if tcfg.final:
        summary["final"] = final_evaluation(cfg, study, best)
        (folder / "final.md").write_text(final_markdown(summary))
    (folder / "study.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    log.info("study %s: best %s dev macro-F1 %.4f; %s", tcfg.study, best, summary["best"]["dev_macro_f1"],
             summary["reuse"])
    ray.shutdown()
    return summary


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


PER_FIT = ("dev_macro_f1", "test_macro_f1", "raw_test_macro_f1")  # <metric>/<dataset>/s<seed> columns


def trials_table(results):
    """One row per trial: its point (``config/<setting>``), last reported objective, whether it
    finished every fit (else ASHA stopped it), iterations, wall time, stages it built."""
    import pandas as pd

    rows = []
    for r in results:
        m = r.metrics or {}
        row = {"trial_id": m.get("trial_id") or os.path.basename(str(r.path)),
               "dev_macro_f1": m.get("dev_macro_f1"), "complete": bool(m.get("complete", False)),
               "iterations": int(m.get("training_iteration", 0)), "seconds": m.get("time_total_s"),
               "built": m.get("built", ""), "error": None if r.error is None else repr(r.error)[:300]}
        row.update({f"config/{k}": v for k, v in (r.config or {}).items()})
        row.update({k: v for k, v in m.items() if k.split("/", 1)[0] in PER_FIT})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("trial_id", kind="stable").reset_index(drop=True)


def reuse_counts(folder: Path, table) -> Dict[str, Any]:
    """How often each shared stage was computed (folders in the study's shared stages) against how
    many fits read it: the reuse the study log reports."""
    shared = folder / "shared"
    built = {}
    for name in ("proxy", "importance", "generator", "generation"):  # the proxy is the raw arm's fit
        globs = ("raw", "proxy") if name == "proxy" else (name,)
        built[name] = sum(1 for g in globs for p in shared.glob(f"*/stages/{g}-*") if (p / "_stage.json").exists())
    return {"computed": built, "trials": int(len(table)),
            "note": f"{built['generator']} generator(s) trained and {built['generation']} pseudo-sample set(s) "
                    f"generated for {len(table)} trials"}


def write_best(folder: Path, cfg, base: Sequence[str], best: Dict[str, Any], summary: Dict[str, Any]) -> None:
    from dcls_core.config import configs_dir
    from dcls_core.study import WRITTEN_BY, best_experiment_yaml

    text = best_experiment_yaml(cfg.tune.study, base, best, summary["best"]["dev_macro_f1"], summary["datasets"],
                                summary["seeds"])
    (folder / f"{cfg.tune.study}_best.yaml").write_text(text)
    target = Path(cfg.tune.export_dir or Path(configs_dir()) / "experiment") / f"{cfg.tune.study}_best.yaml"
    summary["best"]["experiment_file"] = str(folder / f"{cfg.tune.study}_best.yaml")
    if target.exists() and WRITTEN_BY not in target.read_text()[:300]:
        log.warning("%s exists and was not written by a study: left as it is; the best point is in %s",
                    target, folder / f"{cfg.tune.study}_best.yaml")
        return
    try:
        target.write_text(text)
        summary["best"]["experiment_file"] = str(target)
    except OSError as exc:  # an installed package's configs may be read-only
        log.warning("could not write %s (%s); the best point is in %s", target, exc, folder)


def plot_params(table, keys: List[str], path: Path) -> None:
    """Each searched setting against the objective (finished trials filled, stopped ones hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        col = table[f"config/{key}"]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in col)
        labels = sorted({str(v) for v in col}) if not numeric else None
        x = col.astype(float) if numeric else col.astype(str).map({v: i for i, v in enumerate(labels)})
        done = table["complete"].to_numpy()
        ax.scatter(x[done], table["dev_macro_f1"][done], label="finished")
        ax.scatter(x[~done], table["dev_macro_f1"][~done], facecolors="none", edgecolors="grey",
                   label="stopped (ASHA)")
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel(key)
        ax.set_ylabel("dev macro-F1")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_table(table, key: str) -> List[Dict[str, Any]]:
    """A one-setting sweep (``tune.trial_test``): per value, dev and test macro-F1 of the augmented
    classifier and the raw arm's test macro-F1, mean and std over the trial's fits (datasets x seeds)."""
    import numpy as np

    rows = []
    for _, t in table[table["complete"]].sort_values(f"config/{key}", kind="stable").iterrows():
        row: Dict[str, Any] = {"value": _plain(t[f"config/{key}"])}
        for metric in PER_FIT:
            vals = np.array([t[c] for c in table.columns if c.startswith(metric + "/") and t[c] == t[c]], float) * 100
            row[f"{metric}_mean"] = round(float(vals.mean()), 2) if len(vals) else None
            row[f"{metric}_std"] = round(float(vals.std()), 2) if len(vals) else None
            row["fits"] = max(row.get("fits", 0), len(vals))
        rows.append(row)
    return rows


def sweep_markdown(rows: List[Dict[str, Any]], key: str) -> str:
    lines = [f"| `{key}` | fits | dev macro-F1 % | test macro-F1 % | raw test macro-F1 % |", "|---|---|---|---|---|"]
    fmt = lambda r, m: "-" if r[f"{m}_mean"] is None else f"{r[m + '_mean']:.2f} ± {r[m + '_std']:.2f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['value']} | {r['fits']} | {fmt(r, 'dev_macro_f1')} | {fmt(r, 'test_macro_f1')} "
                     f"| {fmt(r, 'raw_test_macro_f1')} |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: List[Dict[str, Any]], key: str, path: Path) -> None:
    """The sweep as the paper's Fig. 6 draws it: macro-F1 against the setting, mean ± std over
    fits, dev and test, the raw classifier's test score as the reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    x = [r["value"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for metric, label in (("test_macro_f1", "DiffusionCLS, test"), ("dev_macro_f1", "DiffusionCLS, dev")):
        mean = [r[f"{metric}_mean"] for r in rows]
        std = [r[f"{metric}_std"] for r in rows]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    raw = [r["raw_test_macro_f1_mean"] for r in rows if r["raw_test_macro_f1_mean"] is not None]
    if raw:
        ax.axhline(sum(raw) / len(raw), color="grey", linestyle="--", label="raw (no augmentation), test")
    ax.set_xlabel(key)
    ax.set_ylabel("macro-F1 %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def final_evaluation(cfg, study: Dict[str, Any], best: Dict[str, Any]) -> Dict[str, Any]:
    """The best point and the defaults (the study's own overrides, no point) on test with
    ``tune.final_seeds``, as Ray tasks; the raw arm (the proxy) beside them."""
    import numpy as np
    import ray

    from dcls_core.study import score_point

    @ray.remote(num_cpus=cfg.tune.cpus_per_trial)
    def one(params, dataset, seed):
        import torch

        torch.set_num_threads(max(1, int(study["cpus_per_trial"])))
        return score_point(study["base"], [dataset], study["dataset_overrides"], params, [seed],
                           Path(study["dir"]) / "shared", Path(study["cache_dir"]), splits=("dev", "test"))["fits"][0]

    points = {"defaults": {}, "best": best}
    jobs = {(name, d, s): one.remote(p, d, s) for name, p in points.items() for d in study["datasets"]
            for s in cfg.tune.final_seeds}
    fits = {key: ray.get(ref) for key, ref in jobs.items()}
    out: Dict[str, Any] = {"seeds": list(cfg.tune.final_seeds), "rows": []}
    for d in study["datasets"]:
        name_d = None
        for arm in ("raw", "defaults", "best"):
            src = "defaults" if arm == "raw" else arm
            sel = [fits[(src, d, s)] for s in cfg.tune.final_seeds]
            name_d = sel[0]["dataset"]
            key = "raw_test" if arm == "raw" else "test"
            acc = np.array([f[key]["accuracy"] for f in sel]) * 100
            f1 = np.array([f[key]["macro_f1"] for f in sel]) * 100
            out["rows"].append({"dataset": name_d, "arm": arm, "n": len(sel),
                                "accuracy_mean": round(float(acc.mean()), 2), "accuracy_std": round(float(acc.std()), 2),
                                "macro_f1_mean": round(float(f1.mean()), 2), "macro_f1_std": round(float(f1.std()), 2),
                                # the raw arm's own dev score: the proxy's best dev evaluation
                                "dev_macro_f1_mean": round(float(np.mean([
                                    f["proxy_dev"]["macro_f1"] if arm == "raw" else f["dev_macro_f1"]
                                    for f in sel])) * 100, 2)})
    return out


def final_markdown(summary: Dict[str, Any]) -> str:
    best = summary["best"]
    lines = [f"# Study {summary['study']}", "",
             f"{summary['trials']} trials ({summary['complete']} finished, {summary['stopped_early']} stopped by ASHA) "
             f"in {summary['study_seconds'] / 60:.1f} min; {summary['reuse']['note']}.", "",
             f"Best point (dev macro-F1 {100 * best['dev_macro_f1']:.2f}): "
             + (" ".join(f"`{k}={v}`" for k, v in sorted(best["params"].items())) or "the defaults"), "",
             f"Test, seeds {summary['final']['seeds']} (mean ± std):", "",
             "| dataset | classifier | test accuracy % | test macro-F1 % | dev macro-F1 % |", "|---|---|---|---|---|"]
    names = {"raw": "raw (no augmentation)", "defaults": "DiffusionCLS, defaults", "best": "DiffusionCLS, tuned"}
    for r in summary["final"]["rows"]:
        lines.append(f"| {r['dataset']} | {names[r['arm']]} | {r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f} "
                     f"| {r['macro_f1_mean']:.2f} ± {r['macro_f1_std']:.2f} | {r['dev_macro_f1_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def _run(cfg, overrides: List[str]) -> int:
    summary = run_study(cfg, overrides)
    print(json.dumps({k: summary[k] for k in ("study", "trials", "complete", "best", "reuse")}, indent=1, default=str))
    if "final" in summary:
        print(final_markdown(summary))
    return 0


def main(argv=None) -> int:
    """``python jobs/tune.py tune=<preset> key=value ...`` (also ``dcls tune``)."""
    from dcls_core.cli import job_main

    return job_main(argv, "jobs/tune.py", __doc__.split("\n")[0],
                    "tune=english tune.num_samples=16 tune.search=optuna storage_path=/mnt/shared/runs", _run, LOG_FORMAT)


if __name__ == "__main__":
    sys.exit(main())
