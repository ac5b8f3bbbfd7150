"""Ray Train loops (one function per trained model), built from dcls_core's per-batch pieces.

Every loop: seeds, this rank's shard of the rows (equal length on every rank), the model
wrapped by ``ray_train.Engine`` (plain / DDP / DeepSpeed), one ``ray.train.report`` per epoch
on every rank, and a final report carrying a ``save_pretrained`` checkpoint. Data arrives as
records in the loop config (low-resource training sets are small); checkpoints to start from
are folder paths on the storage that every worker reads.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional

import pandas as pd
import torch

from jobs import ray_train as rt

log = logging.getLogger(__name__)


def _frame(records: Optional[List[Dict[str, Any]]]) -> Optional[pd.DataFrame]:
    if records is None:
        return None
    return pd.DataFrame.from_records(records)


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
    """Proxy (alpha=0, originals only) or final classifier (L_e + alpha L_c, static/reflective)."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.config import ModelConfig
    from dcls_core.losses import first_token_representation, noise_resistant_loss
    from dcls_core.models import load_classifier, load_tokenizer
    from dcls_core.training import combine_frames, evaluate, make_loader

    ray_cfg, rank, world, seed, names = _worker_start(config)
    model_cfg = ModelConfig(**config["model"])
    tokenizer = load_tokenizer(model_cfg)
    model = load_classifier(model_cfg, len(names), seed)
    train_df = _frame(config["train"])
    dev_df = _frame(config.get("dev"))
    pseudo_df = _frame(config.get("pseudo"))
    max_length = int(config["max_length"])
    engine = rt.Engine(model, ray_cfg, lr=float(config["lr"]), weight_decay=float(config["weight_decay"]),
                       batch_size=int(config["batch_size"]))

    reflective = config.get("mode") == "reflective"
    gen_state = None
    sources = None
    if reflective:
        gen_state = da.load_generator_checkpoint(config["generator_checkpoint"], names)
        sources = _frame(config["sources"])

    best_f1, best_epoch, best_state = -1.0, 0, None
    epochs = int(config["epochs"])
    for epoch in range(1, epochs + 1):
        regenerated = False
        if reflective and len(sources) and (epoch - 1) % int(config["regenerate_every"]) == 0:
            # Reflective: importance from the classifier being trained, this rank's share of sources.
            mine = pd.DataFrame.from_records(rt.shard(sources.to_dict("records"), rank, world)) if world > 1 \
                else sources
            mine = mine.drop_duplicates("id")
            mine = mine.assign(importance=da.score_frame(engine.unwrapped, tokenizer, mine, max_length))
            fresh = da.generate_for_plan(gen_state, mine, config["generator"], max_length,
                                         seed + 1000 * epoch)
            pseudo_df = _gather_frames(fresh, world).drop_duplicates("id").sort_values("id").reset_index(drop=True)
            regenerated = True
        frame = combine_frames(train_df, pseudo_df)
        order = frame.sample(frac=1.0, random_state=seed + epoch).to_dict("records")
        mine = pd.DataFrame.from_records(rt.shard(order, rank, world))
        loader = make_loader(mine, tokenizer, names, max_length, int(config["batch_size"]), shuffle=False)
        engine.train()
        total, seen = {"loss": 0.0, "ce": 0.0, "contrastive": 0.0}, 0
        for batch in loader:
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            out = engine.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=True, return_dict=True)
            loss, parts = noise_resistant_loss(out.logits, first_token_representation(out), batch["labels"],
                                               batch["is_original"], alpha=float(config["alpha"]),
                                               tau=float(config["tau"]))
            engine.backward(loss)
            engine.step()
            n = int(batch["labels"].shape[0])
            for key in total:
                total[key] += parts[key] * n
            seen += n
        metrics = {k: v / max(seen, 1) for k, v in total.items()}
        metrics.update({"epoch": epoch, "n_train": len(frame), "regenerated": regenerated,
                        "n_pseudo": 0 if pseudo_df is None else len(pseudo_df)})
        if dev_df is not None and len(dev_df):
            dev = evaluate(engine.model, dev_df, tokenizer, names, max_length)
            metrics.update({"dev_accuracy": dev["accuracy"], "dev_macro_f1": dev["macro_f1"]})
            if dev["macro_f1"] > best_f1:  # every rank sees the same weights and dev set
                best_f1, best_epoch = dev["macro_f1"], epoch
                full = engine.state_dict_for_save()
                best_state = copy.deepcopy(full if full is not None else engine.unwrapped.state_dict())
        if rank == 0:
            log.info("%s epoch %d/%d %s", config.get("name", "classifier"), epoch, epochs,
                     {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
        if epoch < epochs:
            rt.report(metrics)
    final_state = best_state
    if final_state is None:
        full = engine.state_dict_for_save()
        final_state = full if full is not None else engine.unwrapped.state_dict()
    metrics["best_epoch"] = best_epoch or epochs
    last_pseudo = pseudo_df

    def save(folder):
        da.save_checkpoint(engine.unwrapped, tokenizer, folder, state_dict=final_state)
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
    from dcls_core.config import ModelConfig
    from dcls_core.diffusion import GeneratorCollator, GeneratorDataset, batch_to, diffusion_loss
    from dcls_core.models import load_masked_lm, load_tokenizer
    from dcls_core.prompting import add_label_tokens

    ray_cfg, rank, world, seed, names = _worker_start(config)
    gen_cfg = config["generator"]
    if config.get("start_checkpoint"):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        model = AutoModelForMaskedLM.from_pretrained(config["start_checkpoint"], attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(config["start_checkpoint"])
    else:
        model_cfg = ModelConfig(**config["model"])
        model, tokenizer = load_masked_lm(model_cfg, seed), load_tokenizer(model_cfg)
    if config.get("proxy_checkpoint"):
        proxy, _ = da.load_classifier_checkpoint(config["proxy_checkpoint"])
        copied = da.init_encoder_from(model, proxy)
        if rank == 0:
            log.info("generator: encoder initialised from the proxy (%d tensors)", copied)
        del proxy
    label_ids = add_label_tokens(tokenizer, model, names)
    frame = _frame(config["train"])
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
