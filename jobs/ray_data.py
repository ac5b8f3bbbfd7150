"""Ray Data actor pools for the batch stages (token-importance scoring, pseudo-sample generation).

A stage's callable class (``dcls_core.stages.ImportanceScorer`` / ``PseudoSampleGenerator``: the
model is loaded once per actor in ``__init__`` from a checkpoint folder of an earlier stage) runs
on an ``ActorPoolStrategy`` pool that streams from the previous stage's Parquet to Parquet parts
written by the workers into the stage folder; the driver never holds the rows. Pool size, batch size, CPUs/GPUs per actor and restart budgets come from
``configs/ray/``. CPU headroom: an actor pool that claims every CPU hangs the dataset (ray issue
44687), so the pool never asks for more than (cluster CPUs - 1) in total.

Faults: actors are created with ``max_restarts``/``max_task_retries`` so that a killed actor is
restarted and its batch retried. Every output row is a pure function of its input row (seeds
are derived from row ids, not from batch order or actor identity), so a retried batch
regenerates identical rows; readers sort by id (``dcls_core.artifacts.read_rows``), which makes
what they see independent of actor scheduling; the output is checked for missing/duplicated ids.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence


from dcls_core.config import RayConfig
from dcls_core.stages import check_rows

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


def run_actor_pool(source: Path, columns: Optional[Sequence[str]], fn_cls: type, ctor_kwargs: Dict[str, Any],
                   ray_cfg: RayConfig, out_dir: Path, name: str, expected_rows: Optional[int],
                   id_column: str = "id") -> int:
    """Parquet in -> ``map_batches(fn_cls, ActorPoolStrategy)`` -> Parquet out, streaming: Ray Data
    reads ``source`` (a file or folder, ``columns`` only) on its workers and the workers write the
    output parts into ``out_dir`` (inside the stage folder); the driver sees neither. Returns the
    rows written, checked from the id column against ``expected_rows`` (each exactly once; None: a
    filtering stage, ids only distinct)."""
    import ray

    out_dir = Path(out_dir)
    if out_dir.exists():  # a part left by a killed attempt of this stage
        shutil.rmtree(out_dir)
    compute, size = pool_strategy(ray_cfg)
    kwargs = dict(ctor_kwargs)
    kwargs.setdefault("threads", actor_threads(ray_cfg, size))
    ds = ray.data.read_parquet(str(source), columns=list(columns) if columns else None)
    rows = ds.count()  # from the Parquet footers
    # blocks of about one batch, so that every actor gets work (capped: tiny blocks cost scheduling)
    blocks = max(1, min(rows, -(-rows // max(1, ray_cfg.batch_size)), 64 * size))
    ds = ds.repartition(blocks).map_batches(
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
    log.info("Ray Data %s: %d rows, %d actor(s), batch %d, %.2f CPU/actor", name, rows, size,
             ray_cfg.batch_size, ray_cfg.cpus_per_actor)
    ds.write_parquet(str(out_dir))
    check_rows(out_dir, expected_rows, name, id_column)
    if not out_dir.exists():  # a filter that kept nothing
        return 0
    from dcls_core.artifacts import id_counts

    return id_counts(out_dir, id_column)[0]
