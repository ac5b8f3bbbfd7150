"""Ray Train plumbing: one entry point (``run_training``) and the pieces a loop uses inside.

``run_training(loop_fn, loop_config, ray_cfg, storage_path, name)`` picks
- local mode (``ray.num_workers=0``): the loop runs in the driver, no worker group (seconds);
- DDP (``ray.strategy=ddp``): ``TorchTrainer`` with ``num_workers`` workers, gloo on CPU, NCCL on GPU;
- DeepSpeed (``ray.strategy=deepspeed``): the same trainer; the loop wraps the model with
  ``deepspeed.initialize`` and ZeRO stage ``ray.zero_stage`` (gloo on CPU).
The loop's rows arrive as Ray Data datasets (``loop_config["datasets"]``: name -> Parquet, read
inside the loop with ``dataset_frame``). The loop reports a checkpoint (a ``save_pretrained``
folder) through ``ray.train.report``; ``run_training`` returns the path of the last one.

Inside a loop, ``Engine`` hides the strategy: ``engine.model`` for forward passes,
``engine.backward(loss)``, ``engine.step()``, ``engine.unwrapped`` for saving and evaluation;
``shard(items)`` gives this rank its equal-length share; ``report(metrics, save_fn)`` is the
collective report (every rank calls it the same number of times: it is a barrier).
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from dcls_core.config import RayConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- driver side
def run_training(loop_fn: Callable[[Dict[str, Any]], None], loop_config: Dict[str, Any],
                 ray_cfg: RayConfig, storage_path: Union[os.PathLike, str], name: str,
                 callbacks: Optional[list] = None, keep_checkpoints: Optional[int] = None) -> Path:
    """Run ``loop_fn`` under Ray Train and return the local path of its last reported checkpoint.

    ``storage_path``: a folder every worker sees, or a URI (``s3://bucket/train``; see
    ``dcls_core.storage``) that Ray Train writes through ``pyarrow.fs``; a checkpoint kept on a URI
    is downloaded to a local temporary folder. ``callbacks``: Ray Train callbacks (a Tune trial
    passes ``TuneReportCallback`` so the loop's reports reach Tune). ``keep_checkpoints``: how many
    of the latest checkpoints stay on the storage (default: all; a warm-up reports large ones)."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dcls_core.storage import parse_location, require_filesystem

    location = parse_location(str(storage_path), "storage_path")
    config = dict(loop_config)
    config["_ray"] = asdict(ray_cfg)
    # Local mode does not copy checkpoints to storage: the loop (in this process) writes them there
    # itself, or into a local folder when the storage is a URI.
    config["_checkpoint_root"] = str(location.local_path() / name / "local_checkpoints" if not location.is_remote
                                     else Path(tempfile.mkdtemp(prefix=f"dcls-{name}-")))
    config["_keep_checkpoints"] = keep_checkpoints
    if location.is_remote:
        require_filesystem(location)
        filesystem, path = location.filesystem()
        storage = {"storage_path": path, "storage_filesystem": filesystem}
    else:
        storage = {"storage_path": location.path}
    workers = int(ray_cfg.num_workers)
    # the rows travel as Ray Data datasets read from the stages' Parquet, not inside the config;
    # unsplit: every worker reads all of them and the loop shards (a pseudo sample rides with its source)
    datasets = {k: ray.data.read_parquet(str(v)) for k, v in config.get("datasets", {}).items()}
    trainer = TorchTrainer(
        loop_fn,
        train_loop_config=config,
        datasets=datasets or None,
        dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(ray_cfg.use_gpu) and workers > 0),
        run_config=RunConfig(name=name, failure_config=FailureConfig(max_failures=0), callbacks=callbacks or None,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints), **storage),
    )
    mode = "local mode" if workers == 0 else f"{workers} workers, {ray_cfg.strategy}"
    log.info("Ray Train %s: %s", name, mode)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name!r} reported no checkpoint")
    return _local_checkpoint(result.checkpoint, name)


def _local_checkpoint(checkpoint, name: str) -> Path:
    """A checkpoint's folder on this node: its own path when it is on a local (or mounted) path,
    else a download of it (a URI storage)."""
    import pyarrow.fs as pafs

    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        return Path(checkpoint.path)
    return Path(checkpoint.to_directory(tempfile.mkdtemp(prefix=f"dcls-{name}-checkpoint-")))


# --------------------------------------------------------------------------- worker side
def context() -> Dict[str, int]:
    """World rank/size (local mode: 0/1)."""
    import ray.train

    ctx = ray.train.get_context()
    return {"rank": ctx.get_world_rank(), "world": ctx.get_world_size()}


def set_threads(ray_cfg: Dict[str, Any]) -> int:
    """One share of the machine's cores per worker (2 workers on 2 cores: 1 thread each)."""
    import torch

    workers = max(1, int(ray_cfg.get("num_workers") or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return threads


def dataset_frame(config: Dict[str, Any], name: str):
    """This worker's copy of the loop's dataset ``name`` as a frame sorted by id (None if the loop
    has none; a frame without rows if it is empty)."""
    import pandas as pd
    import ray.train

    if name not in config.get("datasets", {}):
        return None
    parts = list(ray.train.get_dataset_shard(name).iter_batches(batch_format="pandas", batch_size=None))
    from dcls_core.artifacts import sort_rows

    return sort_rows(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame())


def shard(items: Sequence[Any], rank: int, world: int) -> List[Any]:
    """This rank's share, padded by wrapping so every rank gets the same count (DDP steps in lockstep)."""
    items = list(items)
    if world <= 1 or not items:
        return items
    per_rank = -(-len(items) // world)
    padded = items + items[: per_rank * world - len(items)]
    return padded[rank::world]


class Engine:
    """DDP / DeepSpeed / plain model behind one interface."""

    def __init__(self, model, ray_cfg: Dict[str, Any], lr: float, weight_decay: float = 0.0,
                 batch_size: int = 8, grad_clip: float = 1.0, param_groups: Optional[List[Dict[str, Any]]] = None,
                 **adam: Any):
        """``param_groups``: the loop's own AdamW groups (the warm-up's per-group learning rates);
        default: ``dcls_core.training.optimizer_groups`` (the same as the in-process
        ``LocalStepper``). ``adam``: further AdamW arguments (betas, eps)."""
        import torch

        self.strategy = ray_cfg.get("strategy", "ddp")
        self.distributed = int(ray_cfg.get("num_workers") or 0) > 0
        self.grad_clip = grad_clip
        self.deepspeed = self.strategy == "deepspeed" and self.distributed
        from dcls_core.training import adamw, optimizer_groups

        params = param_groups if param_groups is not None else optimizer_groups(model, weight_decay)
        # clip what is optimised, in the groups' order (the norm's float sum follows it): with the
        # loop's own groups, the same steps as its in-process loop, bit for bit
        self._clip = [p for g in param_groups for p in g["params"]] if param_groups is not None else None
        if self.deepspeed:
            import deepspeed
            import torch.distributed as dist

            use_gpu = bool(ray_cfg.get("use_gpu"))
            if not dist.is_initialized():  # Ray Train has set it up already; keep this safe
                deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")
            stage = int(ray_cfg.get("zero_stage", 2))
            ds_config = {
                "train_micro_batch_size_per_gpu": int(batch_size),
                "gradient_accumulation_steps": 1,
                "gradient_clipping": grad_clip,
                "zero_optimization": {"stage": stage},
                "steps_per_print": 10 ** 9,
                "wall_clock_breakdown": False,
            }
            if stage == 3:
                ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
            optimizer = adamw(params, lr=lr, **adam)  # fused: DeepSpeed steps it over its flat partition
            self.engine, self.optimizer, _, _ = deepspeed.initialize(
                model=model, optimizer=optimizer, config=ds_config)
            self.model = self.engine
            self._unwrapped = self.engine.module
            self.zero_stage = stage
        else:
            if self.distributed:
                import ray.train.torch

                self.model = ray.train.torch.prepare_model(model)
            else:  # local mode: the driver's GPU when asked for and present
                if ray_cfg.get("use_gpu") and torch.cuda.is_available():
                    model.to("cuda")
                self.model = model
            self._unwrapped = model
            self.optimizer = adamw(params, lr=lr, **adam)

    @property
    def unwrapped(self):
        return self._unwrapped

    @property
    def device(self):
        return next(self._unwrapped.parameters()).device

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()

    def backward(self, loss) -> None:
        if self.deepspeed:
            self.engine.backward(loss)
        else:
            loss.backward()

    def step(self) -> None:
        import torch

        if self.deepspeed:
            self.engine.step()
            return
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self._clip or self._unwrapped.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def snapshot(self) -> Dict[str, Any]:
        """A CPU copy of the full weights (collective under ZeRO-3)."""
        full = self.state_dict_for_save()
        state = full if full is not None else self._unwrapped.state_dict()
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def restore(self, state: Dict[str, Any]) -> None:
        if self.deepspeed and self.zero_stage == 3:  # partitioned weights: the saved state is used instead
            return
        self._unwrapped.load_state_dict(state)

    def state_dict_for_save(self) -> Optional[Dict[str, Any]]:
        """Full weights (collective under ZeRO-3: every rank must call it); None = use the module's."""
        if self.deepspeed and self.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return None


_REPORTS = {"n": 0}


def report(metrics: Dict[str, Any], save_fn: Optional[Callable[[Path], None]] = None,
           config: Optional[Dict[str, Any]] = None) -> None:
    """Collective report: rank 0 writes a checkpoint folder with ``save_fn`` (others pass none).

    Pass the loop's ``config`` so that local mode (which keeps checkpoints where they were
    written) writes into the run's storage instead of a temporary folder.
    """
    import ray.train
    from ray.train import Checkpoint

    rank = context()["rank"]
    if save_fn is None:
        ray.train.report(metrics)
        return
    local = config is not None and int(config["_ray"].get("num_workers") or 0) == 0
    if local:
        _REPORTS["n"] += 1
        folder = Path(config["_checkpoint_root"]) / f"checkpoint_{os.getpid()}_{_REPORTS['n']:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        save_fn(folder)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(folder)))
        keep = config.get("_keep_checkpoints")
        if keep:  # local mode keeps what it was given: drop the older ones as Ray Train would
            import shutil

            older = sorted(Path(config["_checkpoint_root"]).glob("checkpoint_*"), key=lambda p: p.stat().st_mtime)
            for stale in older[:-int(keep)]:
                shutil.rmtree(stale, ignore_errors=True)
        return
    with tempfile.TemporaryDirectory(prefix="dcls-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            save_fn(Path(tmp))
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
