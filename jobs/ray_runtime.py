"""Start or join Ray.

With ``ray.address`` or ``RAY_ADDRESS`` set, join that cluster (``ray job submit`` sets
RAY_ADDRESS for the entrypoint). Otherwise start a local Ray sized to the machine: logical
CPUs = max(physical, 4) unless ``ray.num_cpus`` says otherwise. Logical CPUs may exceed
physical ones: Ray only uses them for placement, and on 2 cores a Train worker group plus an
actor pool would otherwise wait for each other (RAY.md: Tune over Train deadlocked on 2).

A request Ray can never place (an actor needing more CPUs or GPUs than any node has, more Train
workers than CPUs) does not fail in Ray: it waits forever. ``check_resources`` refuses such
settings with a ``ConfigError``: for a local Ray before it starts (``check_local_resources``),
for a cluster from ``ray.nodes()`` as soon as Ray is up, before any fit.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from dcls_core.config import ConfigError, RayConfig

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]

# Actors and Train workers set their own torch threads; tokenizers must not spawn more. Their
# "Loading weights" bars (one per checkpoint load, relayed to the driver) are noise in the log.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
              "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def local_num_cpus(cfg: RayConfig) -> int:
    if cfg.num_cpus:
        return int(cfg.num_cpus)
    return max(os.cpu_count() or 1, 4)


def check_resources(cfg: RayConfig, total_cpus: float, node_cpus: float, node_gpus: float, where: str) -> None:
    """Refuse actor and worker resources this Ray can never give (``where`` says which Ray).

    ``node_cpus``/``node_gpus``: the largest node's (an actor or worker lives on one node). An
    actor pool must also leave a CPU (half of a single one) for Ray Data's own read and write
    tasks, or the dataset hangs (ray issue 44687).
    """
    per_actor = float(cfg.cpus_per_actor)
    limit = min(node_cpus, max(total_cpus - 1, total_cpus / 2))
    if per_actor > limit:
        raise ConfigError(
            f"ray.cpus_per_actor={per_actor:g} is more than {where} can give one scoring/generation actor: "
            f"{node_cpus:g} CPUs on its largest node, {total_cpus:g} in all, and one must stay free for Ray "
            f"Data's own tasks (ray issue 44687); use ray.cpus_per_actor={limit:g} or less")
    if cfg.gpus_per_actor > node_gpus:
        raise ConfigError(f"ray.gpus_per_actor={cfg.gpus_per_actor:g} is more than {where} has: "
                          f"{node_gpus:g} GPUs on its largest node; use ray.gpus_per_actor=0 on CPUs")
    workers = max([int(cfg.num_workers), *(int(w) for w in cfg.fit_workers.values())])
    if workers > total_cpus:
        raise ConfigError(f"ray.num_workers / ray.fit_workers ask for {workers} Ray Train workers (one CPU each) "
                          f"but {where} has {total_cpus:g} CPUs; use {int(total_cpus)} or fewer")
    if cfg.use_gpu and workers > 0 and node_gpus < 1:
        raise ConfigError(f"ray.use_gpu=true but {where} has no GPU; use ray.use_gpu=false")


def check_local_resources(cfg: RayConfig) -> None:
    """Before a local Ray starts (no ``RAY_ADDRESS``/``ray.address``): the checks of
    ``check_resources`` against the CPUs it will get and the GPUs this machine has."""
    if cluster_address(cfg):
        return
    cpus = float(local_num_cpus(cfg))
    gpus = 0.0
    if cfg.gpus_per_actor > 0 or cfg.use_gpu:  # torch is only imported when a GPU is asked for
        import torch

        gpus = float(torch.cuda.device_count())
    check_resources(cfg, cpus, cpus, gpus, f"the local Ray ({cpus:g} logical CPUs: ray.num_cpus or max(cores, 4))")


def cluster_capacity() -> Tuple[float, float, float]:
    """(CPUs in all, CPUs and GPUs of the largest node) this Ray can ever provide: its alive nodes,
    or more where an autoscaler may add node types (read as Ray Train reads it before placing
    workers; a private Ray API, so any failure falls back to the alive nodes)."""
    import ray

    alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    total = float(ray.cluster_resources().get("CPU", 0.0))
    node_cpus = max((float(r.get("CPU", 0.0)) for r in alive), default=0.0)
    node_gpus = max((float(r.get("GPU", 0.0)) for r in alive), default=0.0)
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        groups = [g for g in (config.node_group_configs if config else []) if g.max_count != 0]
        if groups:
            node_cpus = max(node_cpus, *(float(g.resources.get("CPU", 0)) for g in groups))
            node_gpus = max(node_gpus, *(float(g.resources.get("GPU", 0)) for g in groups))
            total = max(total, float((state.get_max_resources_from_cluster_config() or {}).get("CPU", 0)))
    except Exception as exc:  # noqa: BLE001 - capacity from the alive nodes is still a sound check
        log.debug("no autoscaler config (%s): checking against the alive nodes", exc)
    return total, node_cpus, node_gpus


def check_cluster_resources(cfg: RayConfig, kind: str) -> None:
    """Once Ray is up (``kind`` names it), before any fit: ``check_resources`` against what it can
    ever provide (:func:`cluster_capacity`)."""
    total, node_cpus, node_gpus = cluster_capacity()
    check_resources(cfg, total, node_cpus, node_gpus, f"this Ray ({kind})")


def cluster_address(cfg: RayConfig) -> Optional[str]:
    """The cluster to join, or None for a local Ray."""
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    if cfg.address and cfg.address != "local":
        return cfg.address
    return None


def configure_data() -> None:
    """Ray Data as the stages use it (the driver's context travels with every dataset it plans).

    * Parquet through the V1 reader unless ``RAY_DATA_USE_DATASOURCE_V2`` says otherwise: the V2
      reader starts a pool of footer-reading actors for every read, which made each read of a
      stage's small Parquet take ~10 s on 2 cores (0.15 s with V1): most of a smoke pipeline run.
    * Off a terminal (a log file, a Ray job's log) Ray Data logs a block of lines per operator
      every 10 s; keep its total line (the stages log their own rows and times). On a terminal
      its progress bars stay.
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    if "RAY_DATA_USE_DATASOURCE_V2" not in os.environ:
        ctx.use_datasource_v2 = False
    if not sys.stdout.isatty():
        ctx.enable_operator_progress_bars = False


def init_ray(cfg: RayConfig, extra_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """``ray.init`` once (idempotent); returns a short description for the logs."""
    import ray

    configure_data()
    if ray.is_initialized():
        check_cluster_resources(cfg, "already started")
        return {"address": "existing", "resources": ray.cluster_resources()}
    env = dict(WORKER_ENV)
    env.update(extra_env or {})
    address = cluster_address(cfg)
    if address:
        # On a cluster, `ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml`
        # ships jobs/ and dcls_core/ and sets the environment: the job's runtime env is inherited
        # as it is (passing one here would replace parts of it).
        ray.init(address=address, log_to_driver=True)
        kind = f"cluster {address}"
    else:
        # Locally, workers import jobs.* and dcls_core from this checkout.
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env["PYTHONPATH"] = pythonpath
        ray.init(num_cpus=local_num_cpus(cfg), runtime_env={"env_vars": env},
                 include_dashboard=False, log_to_driver=True)
        kind = f"local ({local_num_cpus(cfg)} logical CPUs on {os.cpu_count()} cores)"
    resources = ray.cluster_resources()
    log.info("Ray: %s, resources %s", kind, {k: v for k, v in resources.items() if "node" not in k})
    check_cluster_resources(cfg, kind)
    return {"address": kind, "resources": resources}


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cpus_available() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))
