"""``python jobs/benchmark.py quick``: the few-shot study, every arm and two peers on the same rows.

Settings (the embedded MiniLM, 5 seeds each): SST-2 with 5 and 10 labelled sentences per class
(as many dev rows per class), India-COVID-X with 10 % of its training split. For every setting
and seed, on exactly the same sampled rows, dev set and test set:

* ``probe``: logistic regression on the frozen encoder's pooled features (what a user tries first);
* ``raw``: the classifier recipe, cross-entropy only (alpha = 0); it is also the proxy;
* ``no_augmentation``: + the contrastive term L_c (the paper's "w/o D.A.");
* ``augmented``: + DiffusionCLS pseudo samples (riding with their sources: same steps, same K);
* ``dcls``: what the product hands the user: raw unless another arm beats it on dev with
  bootstrap confidence (``dcls_core.evaluation.select_arm``);
* ``setfit``: SetFit 1.2 (``pip install dcls[peers]``) on the same encoder, its default
  contrastive pairs capped at the arms' step budget, then its logistic-regression head.

The arms run the same dcls_core functions as the Ray pipeline, in one process (no Ray start-up
per fit on 2 cores). The generator warm-up is one per corpus (``warmup.corpus_only``: the
dataset's training split, test texts excluded), cached and shared by every seed. Every run is
appended to the results file as it finishes (a rerun skips what is there), with its rows,
metrics and wall time. ``--jobs 2`` runs two worker processes with one torch thread each (on 2
cores that is faster than two threads for one process) fed from one queue: each corpus's
warm-up first, then the (setting, seed) tasks, the costliest first, each once its warm-up is
cached, so the two workers stay busy until the end (:func:`schedule`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmark.quick")

COMMON = ["experiment=demo", "generator.warmup.corpus_only=true", "generator.warmup.max_steps=400"]
SETTINGS: Dict[str, Dict[str, Any]] = {
    "sst2_10shot": {"overrides": ["dataset=sst2", "data.protocol=k_shot", "data.k=10", "data.dev_k=10",
                                  "generator.warmup.corpus=[sst2]"], "paper": {"raw": 61.82, "dcls": 68.29}},
    "sst2_5shot": {"overrides": ["dataset=sst2", "data.protocol=k_shot", "data.k=5", "data.dev_k=5",
                                 "generator.warmup.corpus=[sst2]"], "paper": {"raw": 54.38, "dcls": 65.30}},
    "india_covid_x_10pct": {"overrides": ["dataset=india_covid_x", "data.protocol=fraction", "data.fraction=0.1",
                                          "generator.warmup.corpus=[india_covid_x]"],
                            # the paper reports macro-F1 at 5 % (44.89 -> 46.33) and 20 % (61.60 -> 63.44) only
                            "paper": None},
}
# Single-thread seconds of one (setting, seed) task on this machine, for ordering only.
COST = {"india_covid_x_10pct": 800, "sst2_10shot": 260, "sst2_5shot": 210}
SEEDS = [13, 42, 87, 21, 100]
# the retrieval method (not DiffusionCLS): its preset, configs/augment/retrieval.yaml
RETRIEVAL = ["augment=retrieval"]
METHODS = ["probe", "raw", "no_augmentation", "augmented", "dcls", "retrieval", "setfit"]
# What one ``quick`` runs unless told: the study (the arms, dcls, the two peers). Retrieval is
# our addition, not DiffusionCLS, and a quarter of the run time: ``--methods retrieval`` adds it.
DEFAULT_METHODS = [m for m in METHODS if m != "retrieval"]


def _load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def _save(path: Path, data: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def publish(path: Path, data: Dict[str, Any], table: str) -> None:
    """The results JSON, its Markdown table beside it (same name, .md), and the table on stdout."""
    _save(path, data)
    path.with_suffix(".md").write_text(table)
    print(table)


def _brief(m: Dict[str, Any]) -> Dict[str, float]:
    return {"accuracy": float(m["accuracy"]), "macro_f1": float(m["macro_f1"])}


def run_setfit(model_path: str, train, test, names: List[str], seed: int, max_steps: int, batch_size: int
               ) -> Dict[str, Any]:
    """SetFit on the same rows: contrastive pairs (its defaults, at most ``max_steps`` steps), then its head."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from dcls_core.evaluation import classification_metrics

    index = {n: i for i, n in enumerate(names)}
    data = Dataset.from_dict({"text": train["text"].astype(str).tolist(),
                              "label": [index[str(y)] for y in train["label"]]})
    model = SetFitModel.from_pretrained(model_path)
    with tempfile.TemporaryDirectory(prefix="dcls-setfit-") as tmp:  # its trainer writes checkpoints
        args = TrainingArguments(output_dir=tmp, batch_size=batch_size, num_epochs=1, max_steps=max_steps,
                                 seed=seed, report_to="none", show_progress_bar=False)
        Trainer(model=model, args=args, train_dataset=data).train()
    pred = model.predict(test["text"].astype(str).tolist(), as_numpy=True)
    return classification_metrics(test["label"].astype(str).tolist(), [int(p) for p in pred], names)


def heldout_pool(cfg, bundle, size: int = 1000):
    """Labelled rows that are neither sampled (train, dev) nor test, for choosing the recipe's
    defaults (a development set a few-shot user would not have; never the test split): the
    source's dev split minus the sampled dev rows when it has one (SST-2: 852 sentences), else the
    unsampled training rows (India-COVID-X 10 %: ~1,700 tweets); at most ``size`` rows, seed 0."""
    import dataclasses as dc

    from dcls_core.data import load_dataset

    full = load_dataset(cfg.dataset, dc.replace(cfg.data, protocol="full"))
    used = set(bundle.train["id"].astype(str)) | set(bundle.dev["id"].astype(str))
    pool = full.dev if "dev" in cfg.dataset.files else full.train  # else dev was carved from train
    pool = pool[~pool["id"].astype(str).isin(used) & ~pool["text"].isin(set(bundle.test["text"]))]  # no test duplicates
    return pool.sample(n=min(size, len(pool)), random_state=0).reset_index(drop=True)


def run_one(setting: str, seed: int, done: set, record, cache_dir: Path, overrides=(), heldout: bool = False) -> None:
    """Every method of one (setting, seed) not in ``done``; ``record(run)`` stores each as it
    finishes. ``overrides``: config overrides after the setting's (a variant of the recipe);
    ``heldout``: also score every method on ``heldout_pool`` (metrics key ``heldout``)."""
    from dcls_core import diffusion_augmenter as da
    from dcls_core.classifier import probe_classifier
    from dcls_core.config import load_config
    from dcls_core.data import load_dataset
    from dcls_core.evaluation import select_arm
    from dcls_core.models import embedded_model_path, load_classifier, load_tokenizer
    from dcls_core.training import evaluate, fit_classifier

    cfg = load_config(COMMON + SETTINGS[setting]["overrides"] + list(overrides) + [f"seed={seed}"])
    bundle = load_dataset(cfg.dataset, cfg.data)
    train, dev, test = bundle.train, bundle.dev, bundle.test
    pool = heldout_pool(cfg, bundle) if heldout else None
    names, ml, ccfg = bundle.vocab.names, cfg.data.max_length, cfg.classifier
    tok = load_tokenizer(cfg.model)
    rows = {"train": len(train), "dev": len(dev), "test": len(test), "train_ids": sorted(train["id"].astype(str))}
    steps = ccfg.steps_for(len(train))

    def both(model) -> Dict[str, Any]:
        d = evaluate(model, dev, tok, names, ml, keep_predictions=True)
        out = {"dev": dict(_brief(d), predictions=d["predictions"]), "test": _brief(evaluate(model, test, tok, names, ml))}
        if pool is not None:
            out["heldout"] = _brief(evaluate(model, pool, tok, names, ml))
        return out

    def emit(method: str, metrics: Dict[str, Any], seconds: float, **extra) -> None:
        run = {"setting": setting, "method": method, "seed": seed, "rows": rows, "metrics": metrics,
               "seconds": round(seconds, 1), **extra}
        log.info("%s seed %d %-15s dev %.4f test acc %.4f (%.0fs)", setting, seed, method,
                 metrics["dev"]["macro_f1"], metrics["test"]["accuracy"], seconds)
        record(run)

    def arm(alpha: float, pseudo=None):
        start = time.time()
        res = fit_classifier(load_classifier(cfg.model, len(names), seed), tok, train, dev, names,
                             dataclasses.replace(ccfg, alpha=alpha), ml, seed, pseudo_df=pseudo)
        return res, time.time() - start

    arms: Dict[str, Any] = {}
    if "probe" not in done:
        start = time.time()
        model = probe_classifier(cfg.model, train, names, ml, ccfg.probe_C, seed)
        emit("probe", both(model), time.time() - start)
    need_arms = bool({"raw", "no_augmentation", "augmented", "dcls", "retrieval"} - done)
    if need_arms:  # raw is the proxy of the others: always trained, recorded unless done
        raw, secs = arm(0.0)
        arms["raw"] = both(raw.model)
        if "raw" not in done:
            emit("raw", arms["raw"], secs, steps=raw.steps, best_step=raw.best_step)
        if {"no_augmentation", "dcls"} - done:
            noaug, secs = arm(ccfg.alpha)
            arms["no_augmentation"] = both(noaug.model)
            if "no_augmentation" not in done:
                emit("no_augmentation", arms["no_augmentation"], secs, steps=noaug.steps, best_step=noaug.best_step)
        if {"augmented", "dcls"} - done:
            start = time.time()
            augmenter = da.DiffusionAugmenter(cfg.model, cfg.generator, cfg.augment, ccfg, ml, cache_dir,
                                              cfg.data.resolved_root(), dev_df=dev,
                                              exclude_texts=test["text"].tolist())
            pseudo = augmenter.augment(train, names, seed, proxy=raw.model)  # filtered by min_confidence
            gen_seconds = time.time() - start
            aug, secs = arm(ccfg.alpha, pseudo)
            arms["augmented"] = both(aug.model)
            example = pseudo.iloc[0] if len(pseudo) else None
            if "augmented" not in done:
                emit("augmented", arms["augmented"], secs + gen_seconds, steps=aug.steps, best_step=aug.best_step,
                     generation_seconds=round(gen_seconds, 1), pseudo_rows=len(pseudo),
                     pseudo_consistency=float(pseudo["consistency"].mean()) if len(pseudo) else float("nan"),
                     warmup={k: augmenter.stats["warmup"].get(k) for k in ("cached", "steps", "seconds", "key")},
                     example=None if example is None else {
                         "original": str(train.set_index("id").loc[example["source_id"], "text"]),
                         "pseudo": str(example["text"]), "changed_spans": list(map(list, example["changed_spans"]))})
        if "dcls" not in done:
            choice = select_arm(arms, ccfg.fallback_on_dev, dev["label"].astype(str).tolist(), names,
                                ccfg.select_confidence)
            emit("dcls", arms[choice["arm"]], 0.0, selected=choice["arm"], reason=choice["reason"])
        if "retrieval" not in done:  # not DiffusionCLS: proxy-labelled neighbours from the unlabelled corpus
            from dcls_core.augment import augmenter_from_config

            rcfg = load_config(COMMON + SETTINGS[setting]["overrides"] + RETRIEVAL + list(overrides) + [f"seed={seed}"])
            start = time.time()
            held_texts = pool["text"].tolist() if pool is not None else []  # held-out rows stay unseen
            pseudo = augmenter_from_config(rcfg, dev_df=dev, exclude_texts=test["text"].tolist() + held_texts,
                                           proxy=raw.model, cache_dir=cache_dir).augment(train, names, seed)
            gen_seconds = time.time() - start
            res = fit_classifier(load_classifier(cfg.model, len(names), seed), tok, train, dev, names,
                                 rcfg.classifier, ml, seed, pseudo_df=pseudo)
            example = pseudo.iloc[0] if len(pseudo) else None
            emit("retrieval", both(res.model), time.time() - start, steps=res.steps, best_step=res.best_step,
                 generation_seconds=round(gen_seconds, 1), pseudo_rows=len(pseudo),
                 pseudo_consistency=float(pseudo["consistency"].mean()) if len(pseudo) else float("nan"),
                 example=None if example is None else {
                     "original": str(train.set_index("id").loc[example["source_id"], "text"]),
                     "pseudo": str(example["text"])})
    if "setfit" not in done:
        start = time.time()
        try:
            m = run_setfit(str(embedded_model_path()), train, test, names, seed, steps, 16)
            emit("setfit", {"dev": {"accuracy": float("nan"), "macro_f1": float("nan")}, "test": _brief(m)},
                 time.time() - start, max_steps=steps)
        except ImportError as exc:
            log.warning("setfit is not installed (pip install 'dcls[peers]'): %s", exc)


def corpus_of(setting: str) -> str:
    """The warm-up corpus a setting uses (settings with the same corpus share one cached warm-up)."""
    return next(o.split("=", 1)[1] for o in SETTINGS[setting]["overrides"] if o.startswith("generator.warmup.corpus="))


def warm_up(setting: str, seed: int, cache_dir: Path, overrides=()) -> Dict[str, Any]:
    """The setting's generator warm-up, computed once and cached (a cached one only loads)."""
    from dcls_core.config import load_config
    from dcls_core.data import load_dataset
    from dcls_core.warmup import load_or_warmup, run_corpus

    cfg = load_config(COMMON + SETTINGS[setting]["overrides"] + list(overrides) + [f"seed={seed}"])
    bundle = load_dataset(cfg.dataset, cfg.data)
    texts = run_corpus(cfg.generator.warmup, bundle.train["text"].tolist(), bundle.dev["text"].tolist(),
                       bundle.test["text"].tolist(), cfg.data.resolved_root())
    _, _, stats = load_or_warmup(cfg.model, cfg.generator.warmup, texts, cache_dir, seed)
    return {k: stats.get(k) for k in ("cached", "steps", "seconds", "key")}


def _done_methods(data: Dict[str, Any], setting: str, seed: int) -> set:
    return {r["method"] for r in data["runs"] if r["setting"] == setting and r["seed"] == seed}


def _part(out: Path, setting: str, seed: int) -> Path:
    return out.with_name(f"{out.stem}.part-{setting}-{seed}.json")


def merge_parts(out: Path) -> Dict[str, Any]:
    """Fold every part file (one per task, written as its methods finish) into ``out``; a part is
    removed once merged, so a stopped run loses nothing and a rerun skips what finished."""
    data = _load(out)
    parts = sorted(out.parent.glob(f"{out.stem}.part-*.json"))
    for part in parts:
        known = {(r["setting"], r["seed"], r["method"]) for r in data["runs"]}
        data["runs"] += [r for r in _load(part)["runs"] if (r["setting"], r["seed"], r["method"]) not in known]
    if parts:
        _save(out, data)
        for part in parts:
            part.unlink()
    return data


def run_task(task: tuple, out: str, cache_dir: str, threads: int, overrides=(), methods=METHODS,
             heldout: bool = False) -> tuple:
    """One queue item in a worker process: ("warmup", setting, seed) or ("seed", setting, seed).
    A seed task records each method into its own part file as it finishes."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    kind, setting, seed = task
    if kind == "warmup":
        return task, warm_up(setting, seed, Path(cache_dir), overrides)
    part = _part(Path(out), setting, seed)
    data = _load(part)
    done = _done_methods(_load(Path(out)), setting, seed) | _done_methods(data, setting, seed)
    done |= set(METHODS) - set(methods)  # methods not asked for

    def record(run):
        data["runs"].append(run)
        _save(part, data)

    run_one(setting, seed, done, record, Path(cache_dir), overrides, heldout)
    return task, None


def plan_tasks(settings: List[str], seeds: List[int], data: Dict[str, Any], methods=METHODS) -> List[tuple]:
    """The unfinished (setting, seed) tasks, costliest first, each corpus's warm-up before them."""
    seeds_left = [(s, seed) for s in settings for seed in seeds if not set(methods) <= _done_methods(data, s, seed)]
    seeds_left.sort(key=lambda t: -COST.get(t[0], 0))  # stable: settings and seeds keep their order
    warmups, seen = [], set()
    for setting, seed in seeds_left:
        if corpus_of(setting) not in seen:
            seen.add(corpus_of(setting))
            warmups.append(("warmup", setting, seed))
    return warmups + [("seed", setting, seed) for setting, seed in seeds_left]


def schedule(tasks: List[tuple], jobs: int, submit) -> None:
    """Run ``tasks`` on ``jobs`` workers: ``submit(task)`` returns a future. A seed task waits for its
    corpus's warm-up (two workers never warm one corpus at once); among ready tasks the first in
    ``tasks`` (the costliest) goes next, so the long ones do not end up alone at the end."""
    from concurrent.futures import FIRST_COMPLETED, wait

    pending, running, warmed, failed = list(tasks), {}, set(), []
    while pending or running:
        while len(running) < jobs:
            ready = [t for t in pending if t[0] == "warmup" or corpus_of(t[1]) in warmed]
            if not ready:
                break
            pending.remove(ready[0])
            running[submit(ready[0])] = ready[0]
        if not running:  # a warm-up failed: its seed tasks can never start
            raise SystemExit(f"tasks that cannot start (their warm-up failed): {pending}; failures: {failed}")
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            task = running.pop(future)
            try:
                _, info = future.result()
            except Exception as exc:  # keep the others going; report at the end
                log.error("task %s failed: %r", task, exc)
                failed.append((task, repr(exc)))
                continue
            if task[0] == "warmup":
                warmed.add(corpus_of(task[1]))
                log.info("warm-up for %s ready: %s", corpus_of(task[1]), info)
    if failed:
        raise SystemExit(f"{len(failed)} task(s) failed: {failed}")


def run_settings(settings: List[str], seeds: List[int], out: Path, cache_dir: Path, jobs: int,
                 threads: int, overrides=(), methods=METHODS, heldout: bool = False) -> None:
    """Every unfinished task, in this process (``jobs=1``) or on a pool of worker processes."""
    tasks = plan_tasks(settings, seeds, merge_parts(out), methods)
    extra = (list(overrides), list(methods), heldout)
    log.info("quick: %d tasks on %d worker(s): %s", len(tasks), jobs, tasks)
    if jobs <= 1:
        for task in tasks:
            run_task(task, str(out), str(cache_dir), threads, *extra)
            merge_parts(out)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: fresh interpreters (no forked torch thread pools); one torch thread each unless told
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as pool:
        try:
            schedule(tasks, jobs, lambda task: pool.submit(run_task, task, str(out), str(cache_dir), threads or 1, *extra))
        finally:
            merge_parts(out)


def _worker_init() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean ± std (population std over seeds) of test accuracy and macro-F1 per setting and method,
    over the seeds where every method finished (so all methods are compared on the same seeds)."""
    import numpy as np

    done: Dict[Any, set] = {}
    for r in runs:
        done.setdefault((r["setting"], r["seed"]), set()).add(r["method"])
    studied = {r["method"] for r in runs}  # a study may run a subset of METHODS (--methods)
    complete = {key for key, methods in done.items() if studied <= methods}
    table: Dict[str, Any] = {}
    for setting in SETTINGS:
        for method in METHODS:
            sel = [r for r in runs if r["setting"] == setting and r["method"] == method
                   and (setting, r["seed"]) in complete]
            if not sel:
                continue
            acc = np.array([r["metrics"]["test"]["accuracy"] for r in sel]) * 100
            f1 = np.array([r["metrics"]["test"]["macro_f1"] for r in sel]) * 100
            table.setdefault(setting, {})[method] = {
                "n": len(sel), "accuracy_mean": round(float(acc.mean()), 2), "accuracy_std": round(float(acc.std()), 2),
                "macro_f1_mean": round(float(f1.mean()), 2), "macro_f1_std": round(float(f1.std()), 2),
                "seconds_mean": round(float(np.mean([r.get("seconds", 0.0) for r in sel])), 1)}
            if all("heldout" in r["metrics"] for r in sel):
                held = np.array([r["metrics"]["heldout"]["macro_f1"] for r in sel]) * 100
                table[setting][method].update(heldout_macro_f1_mean=round(float(held.mean()), 2),
                                              heldout_macro_f1_std=round(float(held.std()), 2))
    return table


LABELS = {"probe": "probe (LR on frozen MiniLM)", "raw": "raw (alpha = 0)", "no_augmentation": "no_augmentation (L_c)",
          "augmented": "augmented (DiffusionCLS)", "dcls": "dcls (dev-selected arm)",
          "retrieval": "retrieval (corpus neighbours, not DiffusionCLS)", "setfit": "SetFit 1.2"}


def markdown(summary: Dict[str, Any]) -> str:
    """The results table: test accuracy and macro-F1, mean ± std over seeds, with the paper's numbers."""
    held = any("heldout_macro_f1_mean" in m for methods in summary.values() for m in methods.values())
    lines = ["| setting | method | seeds | test accuracy % | test macro-F1 % | wall s / run | paper (accuracy %) |"
             + (" held-out dev macro-F1 % |" if held else ""), "|---|---|---|---|---|---|---|" + ("---|" if held else "")]
    for setting, methods in summary.items():
        paper = SETTINGS[setting]["paper"] or {}
        for method in METHODS:
            m = methods.get(method)
            if m is None:
                continue
            ref = {"raw": paper.get("raw"), "dcls": paper.get("dcls")}.get(method)
            lines.append(f"| {setting} | {LABELS[method]} | {m['n']} | {m['accuracy_mean']:.2f} ± {m['accuracy_std']:.2f} "
                         f"| {m['macro_f1_mean']:.2f} ± {m['macro_f1_std']:.2f} | {m['seconds_mean']:.0f} "
                         f"| {'' if ref is None else ref} |"
                         + (f" {m['heldout_macro_f1_mean']:.2f} ± {m['heldout_macro_f1_std']:.2f} |"
                            if "heldout_macro_f1_mean" in m else (" |" if held else "")))
    return "\n".join(lines) + "\n"


def compare(paths: List[Path]) -> str:
    """A markdown table of recipe variants (one ``--out`` file each, ``--set`` overrides and
    ``--heldout`` scores): per setting, each augmenting method (``augmented``: DiffusionCLS,
    ``retrieval``) against raw on the same seeds, paired (mean ± std over seeds of method - raw), on
    held-out dev and on test."""
    import numpy as np

    lines = ["| variant (overrides) | setting | method | seeds | held-out dev macro-F1: raw → method "
             "| Δ held-out (paired) | Δ test accuracy (paired) | pseudo consistency (proxy) |",
             "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        data = _load(path)
        overrides = [o for o in data.get("protocol", {}).get("overrides", []) if o not in COMMON]
        by = {(r["setting"], r["seed"], r["method"]): r for r in data["runs"]}
        for setting in SETTINGS:
            for method in ("augmented", "retrieval"):
                seeds = sorted({k[1] for k in by if k[0] == setting and (setting, k[1], "raw") in by
                                and (setting, k[1], method) in by})
                if not seeds:
                    continue
                raw = [by[(setting, s, "raw")]["metrics"] for s in seeds]
                aug = [by[(setting, s, method)]["metrics"] for s in seeds]
                held = "heldout" in raw[0] and all("heldout" in m for m in raw + aug)
                hr = np.array([m["heldout"]["macro_f1"] for m in raw]) * 100 if held else None
                ha = np.array([m["heldout"]["macro_f1"] for m in aug]) * 100 if held else None
                dt = (np.array([m["test"]["accuracy"] for m in aug])
                      - np.array([m["test"]["accuracy"] for m in raw])) * 100
                cons = np.nanmean([by[(setting, s, method)].get("pseudo_consistency", np.nan) for s in seeds])
                lines.append(
                    f"| {path.stem} ({' '.join(overrides) or 'defaults'}) | {setting} | {method} | {len(seeds)} | "
                    + (f"{hr.mean():.2f} → {ha.mean():.2f} | {(ha - hr).mean():+.2f} ± {(ha - hr).std():.2f}" if held
                       else "– | –")
                    + f" | {dt.mean():+.2f} ± {dt.std():.2f} | {cons:.3f} |")
    return "\n".join(lines) + "\n"


def run_quick(args: argparse.Namespace) -> None:
    import torch

    if args.compare:
        print(compare([Path(p) for p in args.compare]))
        return
    out = Path(args.out)
    cache_dir = Path(args.cache_dir)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge_only:  # a stopped run: fold in what its tasks finished and write the summary
        merge_parts(out)
    else:
        if args.rerun:  # a changed default: these methods' earlier runs go (git keeps them), the rest stay
            data = merge_parts(out)
            data["runs"] = [r for r in data["runs"] if not (r["method"] in args.rerun and r["setting"] in args.settings)]
            _save(out, data)
        run_settings(args.settings, args.seeds, out, cache_dir, args.jobs, args.threads, args.set,
                     args.methods, args.heldout)
    data = _load(out)
    data["summary"] = summarise(data["runs"])
    data["paper"] = {s: v["paper"] for s, v in SETTINGS.items()}
    if not args.merge_only:
        data["wall_seconds_last_invocation"] = round(time.time() - start, 1)
    data["protocol"] = {"seeds": args.seeds, "overrides": COMMON + list(args.set),
                        "settings": {s: SETTINGS[s]["overrides"] for s in SETTINGS}}
    publish(out, data, markdown(data["summary"]))


def add_quick(sub) -> None:
    p = sub.add_parser("quick", help="few-shot arms + probe + SetFit, 3 settings x 5 seeds")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "quick.json"))
    p.add_argument("--cache-dir", default=str(REPO / "runs" / "cache"))
    p.add_argument("--jobs", type=int, default=2, help="worker processes fed from one task queue")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every setting: a variant of the recipe (use its own --out)")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS,
                   help="run these methods (default: all but retrieval; its records are kept and tabled)")
    p.add_argument("--heldout", action="store_true",
                   help="also score every method on held-out labelled rows (not sampled, not test): "
                        "the development set the recipe's defaults are chosen on")
    p.add_argument("--rerun", nargs="+", default=[], choices=METHODS,
                   help="drop these methods' finished runs of the chosen settings first, so they run again")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="run nothing: print the method-vs-raw table (augmented, retrieval) of these variant files")
    p.add_argument("--merge-only", action="store_true",
                   help="run nothing: merge the finished runs of the part files and rewrite the summary")
    p.set_defaults(func=run_quick)
