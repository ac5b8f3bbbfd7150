"""``python jobs/benchmark.py throughput``: how close generation and importance scoring run to the
speed of the bare model on the same inputs, and a peer, side by side in one process.

Each figure is measured in the same run, on the same machine, the same texts and the same model
(the embedded MiniLM with a fresh masked-LM head, whose flat predictions take nucleus sampling's
costliest path; rows whose top-64 already holds the nucleus skip it):

* ``generation``: the generation stage's function (``generate_pseudo_samples``: masking, k reverse
  steps with sampling, splicing the text back) against a bare batched loop of the same model over
  the same batches: k forward passes each, vocabulary logits at the masked positions, nothing else.
  ``ratio`` = bare time / stage time (1.0: the stage costs no more than the forward passes).
* ``scoring``: token importance (``importance.score_texts``: eager attention, Eq. 1) against a bare
  batched forward loop with attentions over the same batches.
* ``peer``: nlpaug-style masked-LM word substitution (``ContextualWordEmbsAug``'s way: one text at a
  time, 15 % of the tokens masked, the top prediction put in), same model and texts.

* ``scaling``: the pipeline's streaming batch stages (``dcls_core.stages.score_importance`` and
  ``generate_pseudo`` on Ray Data actors) over growing corpora (wall time, the driver's and the
  largest worker's peak resident memory; each size in a fresh process), and generation with 1 and
  2 actors.

* ``training``: samples/s of the classifier step at steady state in a plain PyTorch loop against
  the same step through the Ray Train loop's ``Engine`` in local mode, DDP and DeepSpeed ZeRO-2.

Writes ``benchmarks/results/throughput.json`` (``docs/performance.md`` reads it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmark.throughput")


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    """The best of ``repeats`` wall times (the least disturbed run), after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _texts(n: int, data_root: str | None) -> List[str]:
    from dcls_core.config import load_config
    from dcls_core.data import load_dataset

    overrides = ["dataset=sst2", "data.protocol=full"] + ([f"data.root={data_root}"] if data_root else [])
    cfg = load_config(overrides)
    return load_dataset(cfg.dataset, cfg.data).train["text"].astype(str).head(n).tolist()


def measure_generation(texts: List[str], n: int, batch_size: int, max_length: int, repeats: int,
                       model: str = "minilm", reverse_steps: int = 4, profile: int = 0) -> Dict[str, Any]:
    import pandas as pd
    import torch

    from dcls_core.config import GeneratorConfig, ModelConfig
    from dcls_core.generation import generate_pseudo_samples, plan_per_sample
    from dcls_core.models import load_masked_lm, load_tokenizer, masked_lm_logits
    from dcls_core.prompting import add_label_tokens, encode_prompted

    cfg = GeneratorConfig(reverse_steps=reverse_steps)
    model_cfg = ModelConfig(name=model)
    tok, model = load_tokenizer(model_cfg), load_masked_lm(model_cfg, seed=0).eval()
    label_ids = add_label_tokens(tok, model, ["negative", "positive"])
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts,
                          "label": ["negative", "positive"] * (len(texts) // 2) + ["negative"] * (len(texts) % 2)})
    plan = plan_per_sample(frame, n, cfg.group_steps())
    samples = len(plan)  # (row, step) items

    def stage():
        return generate_pseudo_samples(model, tok, frame, None, label_ids, cfg, plan, seed=0,
                                       batch_size=batch_size, max_length=max_length)

    # the bare bound: the same rows in the same length-sorted batches, k forward passes each, logits
    # at the positions the stage masks (its masked share, measured from its output)
    pseudo = stage()
    masked_share = float(pseudo["mask_ratio"].mean())
    rows = sorted((item[0] for item in plan), key=lambda r: len(tok(texts[r], truncation=True, max_length=max_length)["input_ids"]))
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        enc = encode_prompted(tok, [texts[r] for r in chunk], [frame["label"][r] for r in chunk], label_ids, max_length)
        g = torch.Generator().manual_seed(start)
        masked = enc["maskable"] & (torch.rand(enc["maskable"].shape, generator=g) < masked_share)
        batches.append((enc["input_ids"], enc["attention_mask"], masked))
    tokens = sum(int(b[1].sum()) for b in batches) * cfg.reverse_steps

    def bare():
        with torch.inference_mode():
            for ids, mask, masked in batches:
                for _ in range(cfg.reverse_steps):
                    masked_lm_logits(model, ids, mask, masked)

    stage_s, bare_s = _timed(stage, repeats), _timed(bare, repeats)
    out = {"pseudo_samples": samples, "reverse_steps": cfg.reverse_steps, "batch_size": batch_size,
            "masked_share": round(masked_share, 3), "tokens_x_steps": tokens,
            "stage_seconds": round(stage_s, 2), "bare_seconds": round(bare_s, 2),
            "pseudo_per_s": round(samples / stage_s, 1), "tokens_per_s": round(tokens / stage_s, 0),
            "bare_pseudo_per_s": round(samples / bare_s, 1), "ratio": round(bare_s / stage_s, 3),
            "sampling": {"top_k": cfg.top_k, "top_p": cfg.top_p, "temperature": cfg.temperature}}
    if profile:
        out["profile"] = profile_top(stage, profile)
    return out


def profile_top(fn: Callable[[], Any], top: int) -> Dict[str, Any]:
    """One cProfiled call of ``fn``: its wall time and the ``top`` functions by own time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.runcall(fn)
    total = time.perf_counter() - start
    stats = pstats.Stats(prof).stats  # {(file, line, name): (calls, _, own, cumulative, _)}
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {"seconds": round(total, 2),
            "top_own_seconds": [{"function": f"{Path(f).name}:{line}({name})", "calls": v[0],
                                 "own_s": round(v[2], 3), "cumulative_s": round(v[3], 3)}
                                for (f, line, name), v in rows]}


def measure_scoring(texts: List[str], batch_size: int, max_length: int, repeats: int,
                    model: str = "minilm") -> Dict[str, Any]:
    import torch

    from dcls_core.config import ModelConfig
    from dcls_core.importance import score_texts
    from dcls_core.models import load_classifier, load_tokenizer
    from dcls_core.prompting import encode_plain

    model_cfg = ModelConfig(name=model)
    tok, clf = load_tokenizer(model_cfg), load_classifier(model_cfg, 2, seed=0).eval()
    batches = [encode_plain(tok, texts[s:s + batch_size], max_length) for s in range(0, len(texts), batch_size)]

    def bare():
        with torch.inference_mode():
            for b in batches:
                clf.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_attentions=True)

    stage_s = _timed(lambda: score_texts(clf, tok, texts, max_length, batch_size), repeats)
    bare_s = _timed(bare, repeats)
    return {"sentences": len(texts), "batch_size": batch_size, "stage_seconds": round(stage_s, 2),
            "bare_seconds": round(bare_s, 2), "sentences_per_s": round(len(texts) / stage_s, 1),
            "bare_sentences_per_s": round(len(texts) / bare_s, 1), "ratio": round(bare_s / stage_s, 3)}


def measure_peer(texts: List[str], max_length: int, repeats: int, model: str = "minilm") -> Dict[str, Any]:
    """Masked-LM word substitution one text at a time (nlpaug's ContextualWordEmbsAug way)."""
    import torch

    from dcls_core.config import ModelConfig
    from dcls_core.models import load_masked_lm, load_tokenizer

    model_cfg = ModelConfig(name=model)
    tok, model = load_tokenizer(model_cfg), load_masked_lm(model_cfg, seed=0).eval()

    def substitute():
        g = torch.Generator().manual_seed(0)
        out = []
        with torch.inference_mode():
            for text in texts:
                enc = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
                ids = enc["input_ids"].clone()
                inner = torch.arange(1, ids.shape[1] - 1)
                if len(inner) == 0:
                    out.append(text)
                    continue
                pick = inner[torch.randperm(len(inner), generator=g)[:max(1, int(0.15 * len(inner)))]]
                ids[0, pick] = tok.mask_token_id
                logits = model(input_ids=ids, attention_mask=enc["attention_mask"]).logits
                ids[0, pick] = logits[0, pick].argmax(-1)
                out.append(tok.decode(ids[0, 1:-1]))
        return out

    seconds = _timed(substitute, repeats)
    return {"texts": len(texts), "seconds": round(seconds, 2), "texts_per_s": round(len(texts) / seconds, 1)}


def _train_batches(model_name: str, texts: List[str], batch_size: int, max_length: int, count: int):
    """``count`` fixed classifier batches (ids, mask, labels) of the texts, cycled."""
    import torch

    from dcls_core.config import ModelConfig
    from dcls_core.models import load_tokenizer
    from dcls_core.prompting import encode_plain

    tok = load_tokenizer(ModelConfig(name=model_name))
    out = []
    for b in range(count):
        chunk = [texts[(b * batch_size + i) % len(texts)] for i in range(batch_size)]
        enc = encode_plain(tok, chunk, max_length)
        out.append((enc["input_ids"], enc["attention_mask"], torch.tensor([i % 2 for i in range(batch_size)])))
    return out


def _timed_steps(forward_backward_step, batches, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` optimiser steps after ``warmup`` untimed ones (steady state)."""
    for i in range(warmup):
        forward_backward_step(batches[i % len(batches)])
    start = time.perf_counter()
    for i in range(steps):
        forward_backward_step(batches[(warmup + i) % len(batches)])
    return time.perf_counter() - start


def train_bench_loop(config: Dict[str, Any]) -> None:
    """Ray Train loop: the classifier step through ``jobs.ray_train.Engine`` (local, DDP or
    DeepSpeed, as the pipeline's fits), this rank's own batches; reports global samples/s."""
    import torch

    from dcls_core.config import ModelConfig
    from dcls_core.models import load_classifier
    from jobs import ray_train as rt

    ctx = rt.context()
    rt.set_threads(config["_ray"])
    torch.manual_seed(0)
    model = load_classifier(ModelConfig(name=config["model"]), 2, seed=0)
    engine = rt.Engine(model, config["_ray"], lr=5e-5, weight_decay=0.01, batch_size=config["batch_size"])
    batches = _train_batches(config["model"], config["texts"][ctx["rank"]::ctx["world"]], config["batch_size"],
                             config["max_length"], 4)

    def step(batch):
        ids, mask, labels = (t.to(engine.device) for t in batch)
        loss = torch.nn.functional.cross_entropy(engine.model(input_ids=ids, attention_mask=mask).logits, labels)
        engine.backward(loss)
        engine.step()

    engine.train()
    seconds = _timed_steps(step, batches, config["warmup"], config["steps"])
    metrics = {"samples_per_s": ctx["world"] * config["batch_size"] * config["steps"] / seconds, "seconds": seconds}
    if config.get("profile"):  # as many steps again, untimed: every rank steps, rank 0 profiles its own
        again = lambda: _timed_steps(step, batches, 0, config["steps"])  # noqa: E731
        if ctx["rank"] == 0:
            metrics["profile"] = profile_top(again, config["profile"])
        else:
            again()
    # Ray Train V2 hands the driver a run's metrics with its checkpoint: rank 0's figures go in one
    rt.report(metrics, lambda folder: (folder / "metrics.json").write_text(json.dumps(metrics)), config)


def measure_training(texts: List[str], model: str, batch_size: int, max_length: int, warmup: int,
                     steps: int, profile: int = 0) -> Dict[str, Any]:
    """Samples/s of the classifier step at steady state: a plain PyTorch loop in this process (all
    cores, the same AdamW and clipping as ``dcls_core.training.LocalStepper``) against the Ray Train
    loop through ``Engine`` in local mode, DDP and DeepSpeed ZeRO-2 (2 workers each)."""
    import tempfile

    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dcls_core.config import ModelConfig, RayConfig
    from dcls_core.models import load_classifier
    from dcls_core.training import LocalStepper
    from jobs.ray_runtime import init_ray

    torch.manual_seed(0)
    clf = load_classifier(ModelConfig(name=model), 2, seed=0)
    stepper = LocalStepper(clf, lr=5e-5, weight_decay=0.01)
    batches = _train_batches(model, texts, batch_size, max_length, 4)

    def plain_step(batch):
        ids, mask, labels = batch
        loss = torch.nn.functional.cross_entropy(clf(input_ids=ids, attention_mask=mask).logits, labels)
        loss.backward()
        stepper.step()

    clf.train()
    plain = batch_size * steps / _timed_steps(plain_step, batches, warmup, steps)
    out: Dict[str, Any] = {"batch_size_per_worker": batch_size, "steps": steps, "warmup_steps": warmup,
                           "plain_samples_per_s": round(plain, 1)}
    init_ray(RayConfig())
    try:
        for name, workers, strategy in (("local", 0, "ddp"), ("ddp", 2, "ddp"), ("deepspeed", 2, "deepspeed")):
            ray_cfg = RayConfig(num_workers=workers, strategy=strategy, zero_stage=2)
            storage = Path(tempfile.mkdtemp(prefix="dcls-train-bench-"))
            trainer = TorchTrainer(
                train_bench_loop, scaling_config=ScalingConfig(num_workers=workers),
                train_loop_config={"_ray": dataclasses.asdict(ray_cfg), "model": model, "texts": texts,
                                   "batch_size": batch_size, "max_length": max_length, "warmup": warmup,
                                   "steps": steps, "profile": profile,
                                   "_checkpoint_root": str(storage / "local_checkpoints")},
                run_config=RunConfig(name=f"train-{name}", storage_path=str(storage)))
            result = trainer.fit()
            if result.error is not None:
                raise result.error
            metrics = json.loads((Path(result.checkpoint.path) / "metrics.json").read_text())
            rate = float(metrics["samples_per_s"])
            out[name] = {"workers": workers, "samples_per_s": round(rate, 1), "ratio": round(rate / plain, 3)}
            if "profile" in metrics:
                out[name]["profile_rank0"] = metrics["profile"]
            log.info("training %s: %s", name, out[name])
    finally:
        ray.shutdown()
    return out


class PeakMemory:
    """Peak resident memory (MiB) of this process (``driver``) and of the largest of its Ray worker
    processes (``worker``: actors and tasks, ``ray::`` processes), sampled every ``every`` seconds
    while the ``with`` block runs; ``driver_start``: this process at entry."""

    def __init__(self, every: float = 0.05):
        self.every = every
        self.driver = self.worker = self.driver_start = 0.0

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        self.driver = max(self.driver, me.memory_info().rss / 2 ** 20)
        for child in me.children(recursive=True):
            try:
                if child.cmdline()[:1] and child.cmdline()[0].startswith("ray::"):
                    self.worker = max(self.worker, child.memory_info().rss / 2 ** 20)
            except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                continue

    def __enter__(self) -> "PeakMemory":
        import threading

        import psutil

        self.driver_start = psutil.Process().memory_info().rss / 2 ** 20
        self._stop = threading.Event()

        def loop():
            while not self._stop.is_set():
                self._sample()
                self._stop.wait(self.every)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def stage_checkpoints(model: str, names: List[str], folder: Path) -> Dict[str, str]:
    """A classifier (the proxy for importance) and a masked LM (the generator) of ``model``, saved
    as the stages save theirs (fresh heads: the weights do not change the cost)."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.config import ModelConfig
    from dcls_core.models import load_classifier, load_masked_lm, load_tokenizer
    from dcls_core.prompting import add_label_tokens

    model_cfg = ModelConfig(name=model)
    tok = load_tokenizer(model_cfg)
    clf = load_classifier(model_cfg, len(names), seed=0)
    clf.save_pretrained(folder / "proxy", label_names=names)
    tok.save_pretrained(str(folder / "proxy"))
    mlm = load_masked_lm(model_cfg, seed=0)
    add_label_tokens(tok, mlm, names)
    da.save_checkpoint(mlm, tok, folder / "generator")
    return {"proxy": str(folder / "proxy"), "generator": str(folder / "generator")}


def stream_stages(rows_path: Path, work: Path, checkpoints: Dict[str, str], names: List[str], cfg) -> Dict[str, Any]:
    """The pipeline's batch stages (``dcls_core.stages.score_importance`` then ``generate_pseudo``)
    over the Parquet ``rows_path`` with the Ray executor, as a pipeline run does: counts and
    seconds. The driver reads only the row count and ids' counts."""
    import pyarrow.parquet as pq

    from dcls_core import diffusion_augmenter as da
    from dcls_core.stages import generate_pseudo, score_importance
    from jobs.ray_executor import RayExecutor

    executor = RayExecutor(cfg)
    rows = pq.ParquetFile(str(rows_path)).metadata.num_rows
    start = time.perf_counter()
    (work / "importance").mkdir(parents=True, exist_ok=True)
    scored = score_importance(executor, work / "importance", rows_path, Path(checkpoints["proxy"]),
                              cfg.data.max_length, rows)
    mid = time.perf_counter()
    plan = da.plan_spec(None, cfg.augment, cfg.generator, cfg.seed)  # G/E: the same steps for every row
    summary = generate_pseudo(executor, work / "generation", work / "importance" / "importance.parquet",
                              Path(checkpoints["generator"]), Path(checkpoints["proxy"]), names, cfg, plan,
                              da.planned_count(plan, rows))
    end = time.perf_counter()
    return {"rows": rows, "scored": scored, "pseudo_rows": summary["rows"], "summary": summary,
            "importance_seconds": round(mid - start, 2), "generation_seconds": round(end - mid, 2)}


def _scale_one(rows_path: str, work: str, checkpoints: Dict[str, str], names: List[str], overrides: List[str],
               queue) -> None:
    """One corpus size in a fresh process (spawned): its own Ray, its own peak memory."""
    from dcls_core.config import load_config
    from jobs.ray_runtime import init_ray

    cfg = load_config(overrides)
    init_ray(cfg.ray)
    try:
        with PeakMemory() as peak:
            out = stream_stages(Path(rows_path), Path(work), checkpoints, names, cfg)
        out.update({"driver_peak_mb": round(peak.driver, 1), "driver_start_mb": round(peak.driver_start, 1),
                    "worker_peak_mb": round(peak.worker, 1)})
    finally:
        import ray

        ray.shutdown()
    queue.put(out)


def _result_of(proc, queue, what: str) -> Dict[str, Any]:
    """The child's result, or an error naming it if the child died without one (never a hang)."""
    import queue as queue_mod

    while True:
        try:
            out = queue.get(timeout=5)
            break
        except queue_mod.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{what}: the process exited with code {proc.exitcode} and no result")
    proc.join()
    return out


def measure_scale(texts: List[str], sizes: List[int], model: str, n: int, actors: int, work: Path,
                  max_length: int, batch_size: int) -> Dict[str, Any]:
    """Cost against corpus size: the batch stages on the first ``size`` texts, each size in a fresh
    process (a driver whose peak memory is its own). Sizes beyond ``texts`` repeat them."""
    import multiprocessing as mp

    import pandas as pd

    names = ["negative", "positive"]
    checkpoints = stage_checkpoints(model, names, work / "checkpoints")
    overrides = [f"model={model}" if model in ("tiny", "minilm") else f"model.name={model}",
                 f"augment.n={n}", f"data.max_length={max_length}", f"ray.actors={actors}",
                 "ray.cpus_per_actor=1", f"ray.batch_size={batch_size}", "generator.reverse_steps=4"]
    ctx = mp.get_context("spawn")
    runs = []
    for size in sizes:
        rows_path = work / f"corpus-{size}.parquet"
        pd.DataFrame({"id": [f"s{i:06d}" for i in range(size)], "text": [texts[i % len(texts)] for i in range(size)],
                      "label": [names[i % 2] for i in range(size)]}).to_parquet(rows_path, index=False)
        queue = ctx.Queue()
        proc = ctx.Process(target=_scale_one, args=(str(rows_path), str(work / f"run-{size}-a{actors}"), checkpoints,
                                                    names, overrides, queue))
        proc.start()
        out = _result_of(proc, queue, f"scale run of {size} rows")
        log.info("scale %d rows, %d actor(s): %s", size, actors, out)
        runs.append(dict(out, size=size, actors=actors))
    return {"model": model, "n": n, "actors": actors, "runs": runs}


SECTIONS = ("generation", "scoring", "peer", "training", "scaling")


def _sections(spec: str) -> List[str]:
    names = [x.strip() for x in spec.split(",") if x.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        raise SystemExit(f"--sections: unknown {unknown or spec!r}; choose from {', '.join(SECTIONS)}")
    return names


def _commit() -> str:
    """The checkout's commit (with ``+changes`` when its tracked files differ), or ``unknown``."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def run_throughput(args: argparse.Namespace) -> None:
    import datetime

    import torch

    sections = _sections(args.sections)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    texts = _texts(args.sentences, args.data_root)
    out = Path(args.out)
    # a partial run updates its sections of the file and keeps the others (each section says when)
    result: Dict[str, Any] = json.loads(out.read_text()) if set(sections) != set(SECTIONS) and out.exists() else {}
    result.update({
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(), "gpu": torch.cuda.is_available()},
        "model": f"{args.model} (a fresh masked-LM head where it has none)", "texts": f"first {len(texts)} SST-2 training sentences",
        "max_length": args.max_length, "repeats": f"best of {args.repeats} after one warm-up call"})
    measured = result.setdefault("measured", {})
    commit = _commit()

    def save(*names: str) -> None:  # after every section: a stopped run keeps what it measured
        for name in names:
            measured[name] = {"at": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, out)

    if "generation" in sections:
        log.info("generation: %d sentences x %d pseudo samples", len(texts), args.n)
        result["generation"] = measure_generation(texts, args.n, args.batch_size, args.max_length, args.repeats,
                                                  args.model, args.reverse_steps, args.profile)
        log.info("generation: %s", result["generation"])
        # the peer comparison at one reverse step (the authors' one-pass decoding) as well
        result["generation_one_step"] = measure_generation(texts, args.n, args.batch_size, args.max_length,
                                                           args.repeats, args.model, 1)
        save("generation")
    if "scoring" in sections:
        result["scoring"] = measure_scoring(texts, args.batch_size, args.max_length, args.repeats, args.model)
        log.info("scoring: %s", result["scoring"])
        save("scoring")
    if "peer" in sections:
        result["peer"] = measure_peer(texts[:args.peer_texts], args.max_length, args.repeats, args.model)
        log.info("peer: %s", result["peer"])
        save("peer")
    if "generation" in result and "peer" in result:
        peer_rate = result["peer"]["texts_per_s"]
        gen, one = result["generation"], result["generation_one_step"]
        # the ceiling: the bare forward loop's rate over the peer's (a stage at ratio 1.0 reaches it)
        result["vs_peer"] = {"default_steps": round(gen["pseudo_per_s"] / peer_rate, 2),
                             "one_step": round(one["pseudo_per_s"] / peer_rate, 2),
                             "ceiling_default_steps": round(gen["bare_pseudo_per_s"] / peer_rate, 2),
                             "ceiling_one_step": round(one["bare_pseudo_per_s"] / peer_rate, 2)}
    if "training" in sections and args.train_steps:
        result["training"] = measure_training(texts, args.model, args.train_batch_size, args.max_length,
                                              args.train_warmup, args.train_steps, args.profile)
        save("training")
    if "scaling" in sections and args.scale_sizes:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="dcls-scale-") as tmp:
            sizes = [int(x) for x in args.scale_sizes.split(",")]
            corpus = _texts(max(sizes), args.data_root)
            result["scaling"] = {
                "corpus": measure_scale(corpus, sizes, args.scale_model, args.scale_n, 1, Path(tmp) / "corpus",
                                        args.max_length, args.batch_size),
                "actors": [measure_scale(corpus, [args.actor_rows], args.model, args.n, a, Path(tmp) / f"actors{a}",
                                         args.max_length, args.batch_size) for a in (1, 2)]}
        save("scaling")
    save()
    print(json.dumps(result, indent=1))


def add_throughput(sub) -> None:
    p = sub.add_parser("throughput", help="generation and scoring against the bare model; a masked-LM peer")
    p.add_argument("--sentences", type=int, default=256, help="SST-2 training sentences (x n pseudo samples)")
    p.add_argument("--n", type=int, default=4, help="pseudo samples per sentence")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="what to measure; a subset updates those sections of --out and keeps the rest")
    p.add_argument("--reverse-steps", type=int, default=4, help="k of the main generation figure")
    p.add_argument("--profile", type=int, default=0,
                   help="also cProfile one generation call and each trainer's steps (rank 0); record the N costliest functions")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--peer-texts", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--model", default="minilm", help="model config name (minilm, tiny, a hub id or path)")
    p.add_argument("--train-steps", type=int, default=30, help="timed classifier steps per trainer (0: skip)")
    p.add_argument("--train-warmup", type=int, default=5, help="untimed steps before them")
    p.add_argument("--train-batch-size", type=int, default=16, help="rows per worker per step")
    p.add_argument("--scale-sizes", default="1000,4000,16000,64000",
                   help="corpus sizes for the streaming stages' cost and peak memory ('' to skip)")
    p.add_argument("--scale-model", default="tiny", help="model of the corpus-size runs (memory, not speed)")
    p.add_argument("--scale-n", type=int, default=1, help="pseudo samples per sentence in the corpus-size runs")
    p.add_argument("--actor-rows", type=int, default=512, help="sentences of the 1- vs 2-actor generation runs")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput.json"))
    p.set_defaults(func=run_throughput)
