"""Where the pipeline's stages run on Ray: the executor ``dcls_core.stages.run_stages`` is given by
``jobs/pipeline.py`` (``dcls_core.stages.LocalExecutor`` is the in-process one).

* batch stages (importance scoring, generation): a Ray Data actor pool (``jobs/ray_data.py``) of
  ``ray.actors`` actors with ``ray.cpus_per_actor`` CPUs / ``ray.gpus_per_actor`` GPUs each,
  streaming from one stage's Parquet to the next;
* fits (proxy, arms, generator): Ray Train, ``ray.num_workers`` workers (``ray.fit_workers`` per
  fit), rows as Ray Data datasets (``datasets=``), the stage folder as its storage; the
  checkpoint becomes the stage's ``model/``;
* the generator warm-up: Ray Train as well, resumable from its last checkpoint, cached;
* the baseline augmenters: one Ray task each.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional

from dcls_core.config import Config, RayConfig


def fit_ray_cfg(cfg: Config, fit: str) -> RayConfig:
    workers = cfg.ray.fit_workers.get(fit, cfg.ray.num_workers)
    return dataclasses.replace(cfg.ray, num_workers=int(workers))


class RayExecutor:
    name = "ray"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def map(self, stage_dir: Path, name: str, source: Path, columns, fn_cls: type, kwargs: Dict[str, Any],
            out: Path, expected_rows: int) -> int:
        from jobs.ray_data import run_actor_pool

        kwargs = dict(kwargs)
        if self.cfg.ray.fault_kill_actor_after:  # test hook: one actor exits mid-stage
            kwargs.update(fault_after=self.cfg.ray.fault_kill_actor_after,
                          fault_marker=str(Path(stage_dir) / f"{name}.killed"))
        return run_actor_pool(source, columns, fn_cls, kwargs, self.cfg.ray, out, name, expected_rows)

    def notes(self, stage_dir: Path, name: str) -> Dict[str, Any]:
        return {"actor_killed": (Path(stage_dir) / f"{name}.killed").exists()}

    def fit(self, stage_dir: Path, name: str, loop: Dict[str, Any]) -> Dict[str, Any]:
        """One Ray Train fit whose storage is the stage folder; its checkpoint becomes ``model/``."""
        from jobs.ray_train import run_training
        from jobs.train_loops import classifier_loop, generator_loop

        stage_dir = Path(stage_dir)
        ray_cfg = fit_ray_cfg(self.cfg, name)
        start = time.time()
        ckpt = run_training(generator_loop if name == "generator" else classifier_loop, dict(loop, name=name),
                            ray_cfg, stage_dir / "ray_train", name)
        shutil.copytree(ckpt, stage_dir / "model")
        shutil.rmtree(stage_dir / "ray_train", ignore_errors=True)
        return {"seconds": round(time.time() - start, 1), "workers": ray_cfg.num_workers,
                "strategy": self.cfg.ray.strategy}

    def warmup(self, train, dev, test) -> Dict[str, Any]:
        """The generator warm-up as a Ray Train fit (``jobs.train_loops.warmup_loop``: DDP over
        ``ray.fit_workers.warmup`` workers, else ``ray.num_workers``), cached under ``cache_dir`` and
        shared by runs and trials. Its storage, ``warmup-<key>.train/`` beside the cache entry,
        keeps the last checkpoints until the entry exists: a killed warm-up resumes from there."""
        from dcls_core.storage import cache_dir
        from dcls_core.warmup import needs_warmup

        cfg = self.cfg
        if not needs_warmup(cfg.model, cfg.generator.warmup):
            return {"skipped": True}
        from dcls_core.stages import warmup_texts

        return warm_up_on_ray(cfg, warmup_texts(cfg, train, dev, test), cache_dir(cfg).resolve())

    def augment(self, train, dev, test, names, checkpoint: Optional[str], proxy: Optional[str] = None):
        """A baseline augmenter as one Ray task: (pseudo rows, its stats). ``checkpoint``: the warm-up
        folder (``mlm``), ``proxy``: the raw arm's checkpoint (``retrieval``); test texts never enter a
        corpus it builds itself."""
        import ray

        from dcls_core.storage import cache_dir

        cfg = self.cfg

        @ray.remote(num_cpus=1, num_gpus=float(cfg.ray.gpus_per_actor) or None, max_retries=1)
        def _augment(cfg, train, dev, test, names, checkpoint, proxy, cache):
            import torch

            torch.set_num_threads(1)  # the task's one CPU
            from dcls_core.stages import LocalExecutor

            return LocalExecutor(cfg, cache).augment(train, dev, test, names, checkpoint, proxy)

        return ray.get(_augment.remote(cfg, train, dev, test[["text"]], list(names), checkpoint, proxy,
                                       cache_dir(cfg).resolve()))


def latest_warmup_checkpoint(storage: Path) -> Optional[Path]:
    """The resumable warm-up checkpoint with the most steps under ``storage`` (None: none)."""
    import json

    from jobs.train_loops import WARMUP_STATE

    best, best_step = None, -1
    for marker in Path(storage).rglob("warmup_step.json"):
        if not (marker.parent / WARMUP_STATE).exists():
            continue
        step = int(json.loads(marker.read_text())["step"])
        if step > best_step:
            best, best_step = marker.parent, step
    return best


def warm_up_on_ray(cfg: Config, texts, cache: Path, fail_at_step: Optional[int] = None) -> Dict[str, Any]:
    """Build (or find) the cached warm-up of ``texts`` with Ray Train; its stats (``path``, ``key``,
    ``cached``, ``steps``, ``seconds``, ``resumed_from_step``, ``workers``). ``fail_at_step``: a test
    hook, the loop dies after that step (its checkpoints stay for the next call)."""
    import json

    import pandas as pd

    from dcls_core.warmup import ensure_warmup, warmup_cache_key
    from jobs.ray_train import run_training
    from jobs.train_loops import warmup_loop

    wcfg = cfg.generator.warmup
    storage = Path(cache) / f"warmup-{warmup_cache_key(cfg.model, wcfg, texts)}.train"

    def build(tmp: Path) -> Dict[str, Any]:
        storage.mkdir(parents=True, exist_ok=True)
        corpus = storage / "corpus.parquet"
        pd.DataFrame({"text": list(texts)}).to_parquet(corpus, index=False)
        resume = latest_warmup_checkpoint(storage)
        loop = {"model": dataclasses.asdict(cfg.model), "warmup": dataclasses.asdict(wcfg),
                "datasets": {"corpus": str(corpus)}, "checkpoint_every": int(cfg.ray.warmup_checkpoint_every),
                "resume_from": str(resume) if resume else None, "_fail_at_step": fail_at_step,
                "threads": int(cfg.ray.warmup_threads)}
        ckpt = run_training(warmup_loop, loop, fit_ray_cfg(cfg, "warmup"), storage, "warmup", keep_checkpoints=2)
        for item in ckpt.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        stats = json.loads((tmp / "warmup_run.json").read_text())
        (tmp / "warmup_run.json").unlink()
        return stats

    stats = ensure_warmup(cfg.model, wcfg, texts, cache, build)
    shutil.rmtree(storage, ignore_errors=True)  # the entry exists: its checkpoints are spent
    return {k: v for k, v in stats.items()
            if k in ("skipped", "cached", "key", "path", "steps", "seconds", "resumed_from_step", "workers")}
