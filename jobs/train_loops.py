"""Ray Train loops (one function per trained model), built from dcls_core's per-batch pieces.

Every loop: seeds, this rank's shard of the rows (equal length on every rank), the model
wrapped by ``ray_train.Engine`` (plain / DDP / DeepSpeed), one ``ray.train.report`` per epoch
on every rank, and a final report carrying a ``save_pretrained`` checkpoint. Rows arrive as Ray
Data datasets (``ray_train.dataset_frame``), each worker reading all of a fit's rows and keeping
its shard; checkpoints to start from are folder paths on the storage that every worker reads.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List, Optional

import pandas as pd
import torch

from jobs import ray_train as rt

log = logging.getLogger(__name__)


def _gather_frames(frame: pd.DataFrame, world: int) -> pd.DataFrame:
    """All ranks' frames, concatenated in rank order (identity without a process group)."""
    import torch.distributed as dist

    if world <= 1 or not dist.is_available() or not dist.is_initialized():
        return frame
    parts: List[Any] = [None] * world
    dist.all_gather_object(parts, frame.to_dict("records"))
    return pd.DataFrame.from_records([r for part in parts for r in part])


def _worker_start(config: Dict[str, Any]):
    """Every loop starts alike: this worker's rank, its share of the cores, the seed, the labels."""
    from dcls_core.training import set_seed

    ray_cfg = config["_ray"]
    ctx = rt.context()
    rt.set_threads(ray_cfg)
    seed = int(config["seed"])
    set_seed(seed)
    return ray_cfg, ctx["rank"], ctx["world"], seed, list(config["label_names"])


# --------------------------------------------------------------------------- classifier
def classifier_loop(config: Dict[str, Any]) -> None:
    """Proxy or one classifier arm: ``dcls_core.training.fit_classifier`` with the Ray ``Engine``
    as its stepper (the same loop ``dcls augment`` and the benchmarks run in one process)."""
    from dcls_core.classifier import init_head_from_frame
    from dcls_core.config import ClassifierConfig, ModelConfig
    from dcls_core.models import load_classifier, load_tokenizer
    from dcls_core.training import fit_classifier, probe_frame

    ray_cfg, rank, world, seed, names = _worker_start(config)
    model_cfg = ModelConfig(**config["model"])
    ccfg = ClassifierConfig(**config["classifier"])
    tokenizer = load_tokenizer(model_cfg)
    model = load_classifier(model_cfg, len(names), seed)
    train_df, dev_df, pseudo_df = (rt.dataset_frame(config, name) for name in ("train", "dev", "pseudo"))
    max_length = int(config["max_length"])
    if ccfg.head_init == "probe":  # before wrapping: every rank computes the same probe
        init_head_from_frame(model, tokenizer, probe_frame(train_df, pseudo_df, ccfg), names, max_length, ccfg.probe_C)
    engine = rt.Engine(model, ray_cfg, lr=ccfg.lr, weight_decay=ccfg.weight_decay, batch_size=ccfg.batch_size)

    regenerate: Optional[Callable] = None
    if config.get("mode") == "reflective":  # this rank's share of the sources, the union gathered
        from dcls_core.stages import reflective_regenerator

        regenerate = reflective_regenerator(config, tokenizer, shard=lambda rows: rt.shard(rows, rank, world)
                                            if world > 1 else rows, gather=lambda f: _gather_frames(f, world))

    def on_eval(record, _model):
        if rank == 0:
            log.info("%s %s", config.get("name", "classifier"),
                     {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        rt.report(record)

    result = fit_classifier(model, tokenizer, train_df, dev_df, names, ccfg, max_length, seed,
                            pseudo_df=pseudo_df, mode=config.get("mode", "static"), regenerate=regenerate,
                            regenerate_every=int(config.get("regenerate_every", 1)), on_eval=on_eval,
                            stepper=engine, rank=rank, world=world, init_head=False)
    final_state = result.best_state
    if final_state is None:
        full = engine.state_dict_for_save()
        final_state = full if full is not None else engine.unwrapped.state_dict()
    metrics = {"best_step": result.best_step, "steps": result.steps,
               "best_dev_macro_f1": (result.best_dev_metrics or {}).get("macro_f1"),
               "best_dev_accuracy": (result.best_dev_metrics or {}).get("accuracy")}
    last_pseudo = result.pseudo_df

    def save(folder):
        engine.unwrapped.save_pretrained(folder, state_dict=final_state, label_names=names)
        tokenizer.save_pretrained(str(folder))
        (folder / "history.json").write_text(json.dumps(result.history, indent=1, default=str))
        (folder / "fit.json").write_text(json.dumps(metrics, indent=1, default=str))
        if last_pseudo is not None:
            last_pseudo.to_parquet(folder / "pseudo.parquet", index=False)

    rt.report(metrics, save, config)


# --------------------------------------------------------------------------- generator
class MaskedLMLogits(torch.nn.Module):
    """forward(ids, mask, positions) -> vocabulary logits at masked positions, so that DDP and
    DeepSpeed see the whole computation go through their wrapper's forward."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, positions):
        from dcls_core.models import masked_lm_logits

        return masked_lm_logits(self.inner, input_ids, attention_mask, positions)


def generator_loop(config: Dict[str, Any]) -> None:
    """Diffusion LM training (label prompts, importance-driven masking, CE on masked tokens)."""
    from torch.utils.data import DataLoader

    from dcls_core import diffusion_augmenter as da
    from dcls_core.diffusion import GeneratorCollator, GeneratorDataset, batch_to, diffusion_loss
    from dcls_core.prompting import prompt_token_ids
    from dcls_core.stages import generator_start

    ray_cfg, rank, world, seed, names = _worker_start(config)
    gen_cfg = config["generator"]
    model, tokenizer = generator_start(config)  # the warm-up's masked LM (or the model's own), as in-process
    label_ids = prompt_token_ids(tokenizer, model, names, bool(gen_cfg.get("label_prompt", True)))
    from dcls_core.stages import generator_rows

    frame = generator_rows(config, rt.dataset_frame(config, "train"))  # scored rows, importance normalised
    rows = rt.shard(list(range(len(frame))), rank, world)
    mine = frame.iloc[rows].reset_index(drop=True)
    dataset = GeneratorDataset(mine, list(mine["importance"]) if "importance" in mine.columns else None)
    collator = GeneratorCollator(tokenizer, label_ids, int(config["max_length"]))
    loader = DataLoader(dataset, batch_size=int(gen_cfg["batch_size"]), shuffle=True,
                        generator=torch.Generator().manual_seed(seed + rank), collate_fn=collator)
    mask_gen = torch.Generator().manual_seed(seed + 7919 + rank)
    engine = rt.Engine(MaskedLMLogits(model), ray_cfg, lr=float(gen_cfg["lr"]), weight_decay=0.01,
                       batch_size=int(gen_cfg["batch_size"]))
    epochs = int(config["epochs"])
    if config.get("min_steps"):  # the step floor counts global steps: each rank steps once per batch
        epochs = max(epochs, -(-int(config["min_steps"]) // max(1, len(loader))))
    max_steps = config.get("max_steps")
    steps = 0
    for epoch in range(1, epochs + 1):
        engine.train()
        losses, ratios = [], []
        for batch in loader:
            batch = batch_to(batch, engine.device)
            # the logits go through the (DDP/DeepSpeed-wrapped) engine model
            loss, stats = diffusion_loss(model, batch, int(gen_cfg["T"]), float(gen_cfg["lam"]), mask_gen,
                                         logits_fn=engine.model)
            engine.backward(loss)
            engine.step()
            losses.append(stats["loss"])
            ratios.append(stats["mask_ratio"])
            steps += 1
            if max_steps and steps >= int(max_steps):
                break
        metrics = {"epoch": epoch, "loss": sum(losses) / max(len(losses), 1),
                   "mask_ratio": sum(ratios) / max(len(ratios), 1), "steps": steps}
        if rank == 0:
            log.info("generator epoch %d/%d loss %.4f mask ratio %.2f", epoch, epochs, metrics["loss"],
                     metrics["mask_ratio"])
        if epoch < epochs:
            rt.report(metrics)
    state = engine.state_dict_for_save()
    if state is not None:  # ZeRO-3 consolidated weights of the wrapper: drop its prefix
        state = {k[len("inner."):]: v for k, v in state.items() if k.startswith("inner.")}
    rt.report(metrics, lambda folder: da.save_checkpoint(model, tokenizer, folder, state_dict=state), config)


# --------------------------------------------------------------------------- warm-up
WARMUP_STATE = "warmup_state.pt"  # in a resumable warm-up checkpoint, beside the weights


def warmup_loop(config: Dict[str, Any]) -> None:
    """The generator warm-up (``dcls_core.warmup.WarmupRun``) across the Train workers: every rank
    trains on its rows of the same global batch (DDP averages the gradients), a checkpoint with
    the optimiser and the run's state is reported every ``checkpoint_every`` steps, and a run that
    finds one (``ray.train.get_checkpoint()`` or ``config["resume_from"]``) continues from it.
    The last report carries the warmed-up masked LM (``save_pretrained``) and its stats."""
    import time

    import torch.distributed as dist

    from dcls_core.config import ModelConfig, WarmupConfig
    from dcls_core.models import load_masked_lm, load_tokenizer
    from dcls_core.warmup import WarmupRun

    ray_cfg = config["_ray"]
    ctx = rt.context()
    rank, world = ctx["rank"], ctx["world"]
    if config.get("threads"):  # ray.warmup_threads
        torch.set_num_threads(int(config["threads"]))
    else:
        rt.set_threads(ray_cfg)
    model_cfg, wcfg = ModelConfig(**config["model"]), WarmupConfig(**config["warmup"])
    tokenizer = load_tokenizer(model_cfg)
    model = load_masked_lm(model_cfg, wcfg.seed)
    texts = rt.dataset_frame(config, "corpus")["text"].astype(str).tolist()
    run = WarmupRun(model, tokenizer, texts, wcfg)
    engine = rt.Engine(run.objective, ray_cfg, lr=wcfg.lr, batch_size=wcfg.batch_size,
                       param_groups=run.param_groups, betas=(0.9, 0.98), eps=1e-6)
    spent = 0.0
    resume = _resume_folder(config)
    if resume is not None:
        state = torch.load(resume / WARMUP_STATE, map_location="cpu", weights_only=False)
        engine.unwrapped.load_state_dict(state["objective"])
        if state.get("optimizer") is not None and not engine.deepspeed:
            engine.optimizer.load_state_dict(state["optimizer"])
        spent = run.restore(state["run"])
        if rank == 0:
            log.info("warm-up: resumed from step %d (%s)", run.step, resume)
    resumed_from = run.step
    every = int(config.get("checkpoint_every") or 0)
    fail_at = config.get("_fail_at_step")  # test hook: the worker dies after this step
    device = engine.device
    start = time.time() - spent

    def elapsed() -> float:  # every rank stops and schedules its lr on the same clock: rank 0's
        seconds = torch.tensor([time.time() - start], dtype=torch.float64)
        if world > 1 and dist.is_initialized():
            dist.broadcast(seconds, src=0)
        return float(seconds)

    def save_state(folder):
        import os

        optimizer = None if engine.deepspeed else engine.optimizer.state_dict()
        tmp = folder / f"{WARMUP_STATE}.tmp"  # whole or absent: a driver may look for it after a kill
        torch.save({"objective": engine.unwrapped.state_dict(), "optimizer": optimizer,
                    "run": run.state(now)}, tmp)
        os.replace(tmp, folder / WARMUP_STATE)
        (folder / "warmup_step.json").write_text(json.dumps({"step": run.step}))

    engine.train()
    now = elapsed()
    while not run.done(now):
        factor = run.set_lr(engine.optimizer, now)
        batch = run.next_batch(rank, world)
        logits = engine.model(*(batch[k].to(device) for k in ("ids", "att", "masked")))
        engine.backward(run.loss(logits, batch, world))
        engine.step()
        now = elapsed()
        run.end_step(now, factor, log_every=int(config.get("log_every", 50)))
        if fail_at is not None and run.step == int(fail_at):
            raise RuntimeError(f"warm-up: test hook _fail_at_step={fail_at}")
        if every and run.step % every == 0 and not run.done(now):
            rt.report({"step": run.step, "seconds": round(now, 1), **run.last}, save_state, config)
    stats = run.finish(now)
    stats["resumed_from_step"] = resumed_from
    stats["workers"] = world

    def save_final(folder):
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        (folder / "warmup_run.json").write_text(json.dumps(stats, indent=1, default=str))

    rt.report({"step": run.step, "seconds": round(now, 1), "done": True}, save_final, config)


def _resume_folder(config: Dict[str, Any]):
    """The checkpoint a warm-up continues from: Ray Train's (a restarted run) or the driver's."""
    from pathlib import Path

    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        folder = Path(rt._local_checkpoint(checkpoint, "warmup"))
        if (folder / WARMUP_STATE).exists():
            return folder
    return Path(config["resume_from"]) if config.get("resume_from") else None
