#!/usr/bin/env python
"""The DiffusionCLS pipeline on Ray, one job from data to report.

    python jobs/pipeline.py experiment=demo                      # laptop: local Ray sized to the machine
    ray job submit --working-dir . -- python jobs/pipeline.py experiment=india_covid_x ray=cluster \\
        storage_path=/mnt/shared/runs                            # a cluster (RAY_ADDRESS set by Ray)

Stages, in order (``dcls_core/stages.py``: what each reads, keys and writes; run here on Ray by
``jobs/ray_executor.RayExecutor``; each cached under ``<run>/stages/<name>-<key>/``, so a rerun
skips finished ones):

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

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from dcls_core.artifacts import RunFolder, atomic_write_text, read_json  # noqa: E402
from dcls_core.config import Config, ConfigError  # noqa: E402

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


def run_folder(cfg: Config) -> Path:
    """Where the stages work: ``output_dir`` or ``<storage_path>/<experiment>``, or the local working
    copy of a run kept on a URI (``dcls_core.storage``)."""
    from dcls_core.storage import working_copy

    return working_copy(cfg)


def run_pipeline(cfg: Config, bundle, stop_after: Optional[str] = None,
                 data_variant: str = "pipeline") -> Dict[str, Any]:
    """The stages of ``dcls_core.stages`` on Ray (``RayExecutor``) in the run folder, then the report."""
    from omegaconf import OmegaConf

    from dcls_core.stages import load_pseudo, run_stages
    from dcls_core.storage import check_working_copy, remote_run
    from jobs.ray_executor import RayExecutor
    from jobs.ray_runtime import init_ray

    root = run_folder(cfg)
    run = RunFolder(root, logger=log.info, remote=remote_run(cfg))
    atomic_write_text(run.path("config.yaml"), OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    init_ray(cfg.ray)
    import ray

    check_working_copy(cfg, nodes=sum(1 for node in ray.nodes() if node.get("Alive")))
    out = run_stages(cfg, bundle, run, RayExecutor(cfg), until=stop_after, data_variant=data_variant)
    shutil.copyfile(out["data"].file("data_report.json"), run.path("data_report.json"))
    if stop_after == "generation":
        return {"run": str(root), "train": out["train"], "pseudo": load_pseudo(out),
                "consistency_model": out["consistency_model"]}
    evaluation = out["evaluation"]
    shutil.copyfile(evaluation.file("metrics.json"), run.path("metrics.json"))
    shutil.copyfile(evaluation.file("augmented.parquet"), run.path("augmented.parquet"))

    from dcls_core.report import write_report

    metrics = read_json(run.path("metrics.json"))
    augmented = pd.read_parquet(run.path("augmented.parquet"))
    write_report(root, metrics, augmented, config=cfg, stages=run.summary(),
                 checkpoints={arm: str(stage.file("model")) for arm, stage in out["arms"].items()})
    print(metrics_table(metrics))
    selected = (metrics.get("selected") or {}).get("arm")
    if cfg.augment.method == "diffusion" and selected != "augmented":
        print(f"\nDiffusionCLS did not beat raw on dev here, so the run recommends {selected}. On the embedded encoder, "
              "retrieval from an unlabelled in-domain corpus (augment=retrieval) helped on SST-2 and not on "
              "India-COVID-X's few hundred tweets: docs/results.md.")
    run.publish()  # a run kept on a URI: the top-level files (stages were uploaded as they finished)
    print(f"\nrun folder: {root}" + (f" (kept in {run.remote})" if run.remote else ""))
    return {"run": str(root), "metrics": metrics, "stages": run.summary()}


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
