"""Where the pipeline's stages run on Ray: the executor ``dcls_core.stages.run_stages`` is given by
``jobs/pipeline.py`` (``dcls_core.stages.LocalExecutor`` is the in-process one).

* batch stages (importance scoring, generation): a Ray Data actor pool (``jobs/ray_data.py``) of
  ``ray.actors`` actors with ``ray.cpus_per_actor`` CPUs / ``ray.gpus_per_actor`` GPUs each,
  streaming from one stage's Parquet to the next;
* fits (proxy, arms, generator): Ray Train, ``ray.num_workers`` workers (``ray.fit_workers`` per
  fit), rows as Ray Data datasets (``datasets=``), the stage folder as its storage; the
  checkpoint becomes the stage's ``model/``;
* the generator warm-up and the baseline augmenters: one Ray task each.
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
        """The generator warm-up as one Ray task (cached under ``cache_dir``: shared by runs and trials)."""
        import ray

        from dcls_core.storage import cache_dir
        from dcls_core.warmup import needs_warmup

        cfg = self.cfg
        if not needs_warmup(cfg.model, cfg.generator.warmup):
            return {"skipped": True}

        from dcls_core.stages import warmup_texts

        @ray.remote(num_cpus=1, max_retries=1)
        def _warm(cfg, texts, cache, threads):
            import logging
            import os

            progress = logging.getLogger("dcls_core.warmup")  # its step log reaches the driver's console
            if not progress.handlers:
                progress.addHandler(logging.StreamHandler())
                progress.setLevel(logging.INFO)
            from dcls_core.stages import warm_up

            return warm_up(cfg, texts, cache, threads or max(1, os.cpu_count() or 1))

        return ray.get(_warm.remote(cfg, warmup_texts(cfg, train, dev, test), cache_dir(cfg).resolve(),
                                    cfg.ray.warmup_threads))

    def augment(self, train, dev, test, names, checkpoint: Optional[str]):
        """A baseline augmenter as one Ray task: (pseudo rows, its stats). ``checkpoint``: the warm-up
        folder (``mlm``); test texts never enter a corpus it builds itself."""
        import ray

        from dcls_core.storage import cache_dir

        cfg = self.cfg

        @ray.remote(num_cpus=1, num_gpus=float(cfg.ray.gpus_per_actor) or None, max_retries=1)
        def _augment(cfg, train, dev, test, names, checkpoint, cache):
            import torch

            torch.set_num_threads(1)  # the task's one CPU
            from dcls_core.stages import LocalExecutor

            return LocalExecutor(cfg, cache).augment(train, dev, test, names, checkpoint)

        return ray.get(_augment.remote(cfg, train, dev, test[["text"]], list(names), checkpoint,
                                       cache_dir(cfg).resolve()))
