"""Ray Data actor pools for the batch stages (token-importance scoring, pseudo-sample generation).

A stage's callable class (``dcls_core.stages.ImportanceScorer`` / ``PseudoSampleGenerator``: the
model is loaded once per actor in ``__init__`` from a checkpoint folder of an earlier stage) runs
on an ``ActorPoolStrategy`` pool over Parquet in, and the pool writes
Parquet. Pool size, batch size, CPUs/GPUs per actor and restart budgets come from
``configs/ray/``. CPU headroom: an actor pool that claims every CPU hangs the dataset (ray issue
44687), so the pool never asks for more than (cluster CPUs - 1) in total.

Faults: actors are created with ``max_restarts``/``max_task_retries`` so that a killed actor is
restarted and its batch retried. Every output row is a pure function of its input row (seeds
are derived from row ids, not from batch order or actor identity), so a retried batch
regenerates identical rows; outputs are sorted by id, which makes them independent of actor
scheduling, and checked for missing/duplicated ids.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import pandas as pd

from dcls_core.config import RayConfig
from dcls_core.stages import check_ids

log = logging.getLogger(__name__)


def pool_strategy(ray_cfg: RayConfig):
    """ActorPoolStrategy sized from config, shrunk to leave one CPU of headroom."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    per_actor = float(ray_cfg.cpus_per_actor)
    size = int(ray_cfg.actors)
    if per_actor > 0:
        fit = int(max(cpus - 1.0, per_actor) // per_actor) if cpus > 1 else 1
        if size > fit:
            log.warning("ray.actors=%d x ray.cpus_per_actor=%.2f leaves no CPU headroom on %.0f CPUs: "
                        "using %d actors (ray issue 44687)", size, per_actor, cpus, fit)
            size = max(1, fit)
    return ray.data.ActorPoolStrategy(size=size), size


def actor_threads(ray_cfg: RayConfig, pool_size: int) -> int:
    """torch threads per actor: its share of the machine's cores, at least one."""
    if ray_cfg.cpus_per_actor >= 1:
        return int(ray_cfg.cpus_per_actor)
    return max(1, (os.cpu_count() or 1) // max(1, pool_size))


def run_actor_pool(frame: pd.DataFrame, fn_cls: type, ctor_kwargs: Dict[str, Any], ray_cfg: RayConfig,
                   work_dir: Path, name: str, id_column: str = "id",
                   expect_ids: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Parquet in -> ``map_batches(fn_cls, ActorPoolStrategy)`` -> Parquet out -> DataFrame sorted by id.

    ``expect_ids``: the ids the output must hold exactly once each (default: the input's ids,
    i.e. a one-row-in, one-row-out stage). ``None`` disables the check only when ``fn_cls``
    changes row counts and the caller checks itself.
    """
    import ray

    work_dir = Path(work_dir)
    in_path = work_dir / f"{name}_input.parquet"
    out_dir = work_dir / f"{name}_output"
    work_dir.mkdir(parents=True, exist_ok=True)
    frame.reset_index(drop=True).to_parquet(in_path, index=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    compute, size = pool_strategy(ray_cfg)
    kwargs = dict(ctor_kwargs)
    kwargs.setdefault("threads", actor_threads(ray_cfg, size))
    blocks = max(1, min(len(frame), -(-len(frame) // max(1, ray_cfg.batch_size))))
    ds = ray.data.read_parquet(str(in_path)).repartition(blocks)
    ds = ds.map_batches(
        fn_cls,
        fn_constructor_kwargs=kwargs,
        compute=compute,
        batch_size=int(ray_cfg.batch_size),
        batch_format="pandas",
        num_cpus=float(ray_cfg.cpus_per_actor),
        num_gpus=float(ray_cfg.gpus_per_actor) or None,
        max_restarts=int(ray_cfg.max_restarts),
        max_task_retries=int(ray_cfg.max_task_retries),
    )
    log.info("Ray Data %s: %d rows, %d actor(s), batch %d, %.2f CPU/actor", name, len(frame), size,
             ray_cfg.batch_size, ray_cfg.cpus_per_actor)
    ds.write_parquet(str(out_dir))
    parts = sorted(out_dir.glob("*.parquet"))
    out = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else frame.iloc[:0]
    out = out.sort_values(id_column, kind="stable").reset_index(drop=True)
    check_ids(out, list(frame[id_column]) if expect_ids is None else list(expect_ids), id_column, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    in_path.unlink(missing_ok=True)
    return out
