"""Start or join Ray.

With ``ray.address`` or ``RAY_ADDRESS`` set, join that cluster (``ray job submit`` sets
RAY_ADDRESS for the entrypoint). Otherwise start a local Ray sized to the machine: logical
CPUs = max(physical, 4) unless ``ray.num_cpus`` says otherwise. Logical CPUs may exceed
physical ones: Ray only uses them for placement, and on 2 cores a Train worker group plus an
actor pool would otherwise wait for each other (RAY.md: Tune over Train deadlocked on 2).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional

from dcls_core.config import RayConfig

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]

# Actors and Train workers set their own torch threads; tokenizers must not spawn more.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}


def local_num_cpus(cfg: RayConfig) -> int:
    if cfg.num_cpus:
        return int(cfg.num_cpus)
    return max(os.cpu_count() or 1, 4)


def cluster_address(cfg: RayConfig) -> Optional[str]:
    """The cluster to join, or None for a local Ray."""
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    if cfg.address and cfg.address != "local":
        return cfg.address
    return None


def init_ray(cfg: RayConfig, extra_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """``ray.init`` once (idempotent); returns a short description for the logs."""
    import ray

    if ray.is_initialized():
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
    return {"address": kind, "resources": resources}


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cpus_available() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))
