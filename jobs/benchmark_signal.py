"""``python jobs/benchmark.py signal``: where extra label signal is, measured on a linear probe.

For the ``quick`` settings and seeds (the same sampled rows), a logistic-regression probe on the frozen
encoder's pooled features (the classifier's step 0) is fitted on the originals alone, and on the
originals plus each kind of extra row, and scored on held-out labelled rows (never test; what the
defaults are chosen on) and on test:

* ``diffusion g<k>``: DiffusionCLS pseudo samples (4 per original) at the k-th diffusion group, the
  run's warmed-up generator trained on the originals, importance from the probe (so this isolates the
  pseudo samples, not the proxy);
* ``retrieval q<q> n<n>``: the retrieval augmenter's rows (``dcls_core.retrieval``, frozen-probe proxy)
  for a grid of confidence quantiles and neighbours per original.

A probe is seconds where a fine-tuned arm is minutes, so a grid is affordable; the chosen point is then
measured on the real classifier by ``quick --heldout``. Results: ``benchmarks/results/dev_study/signal.json``
(every seed) and ``signal.md`` (mean ± std over seeds of the held-out difference to the probe, paired).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List

from jobs.benchmark_quick import COMMON, SEEDS, SETTINGS, _load, _save, heldout_pool, publish

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmark.signal")


def _scores(weight, bias, features, labels, names) -> Dict[str, float]:
    from dcls_core.evaluation import classification_metrics

    pred = (features @ weight.T + bias).argmax(axis=1)
    m = classification_metrics([str(y) for y in labels], pred.tolist(), names)
    return {"accuracy": float(m["accuracy"]), "macro_f1": float(m["macro_f1"])}


def run_seed(setting: str, seed: int, cache_dir: Path, quantiles: List[float], ns: List[int], groups: List[int],
             embed, test_features) -> Dict[str, Any]:
    """Every probe of one (setting, seed): {variant: {heldout, test, rows}}."""
    import dataclasses

    import numpy as np

    from dcls_core.augment import augmenter_from_config
    from dcls_core.classifier import fit_probe, probe_classifier
    from dcls_core.config import load_config
    from dcls_core.data import load_dataset
    from dcls_core.diffusion_augmenter import DiffusionAugmenter
    from dcls_core.models import load_tokenizer

    cfg = load_config(COMMON + SETTINGS[setting]["overrides"] + [f"seed={seed}"])
    bundle = load_dataset(cfg.dataset, cfg.data)
    names = bundle.vocab.names
    index = {n: i for i, n in enumerate(names)}
    train, dev, test = bundle.train, bundle.dev, bundle.test
    pool = heldout_pool(cfg, bundle)
    held_features = embed(pool["text"])
    train_features = embed(train["text"])
    y_train = np.array([index[str(y)] for y in train["label"]])
    out: Dict[str, Any] = {}

    def probe(name: str, extra=None, extra_labels=None) -> None:
        x, y = train_features, y_train
        if extra is not None and len(extra):
            x = np.vstack([x, extra])
            y = np.concatenate([y, [index[str(v)] for v in extra_labels]])
        w, b = fit_probe(x, y, len(names), cfg.classifier.probe_C)
        out[name] = {"heldout": _scores(w, b, held_features, pool["label"], names),
                     "test": _scores(w, b, test_features, test["label"], names), "rows": int(len(y))}

    probe("probe")
    exclude = test["text"].tolist() + pool["text"].tolist()
    for q in quantiles:
        rcfg = load_config(COMMON + SETTINGS[setting]["overrides"] + ["augment=retrieval", f"augment.n={max(ns)}",
                                                                       f"augment.retrieval.quantile={q}", f"seed={seed}"])
        rows = augmenter_from_config(rcfg, dev_df=dev, exclude_texts=exclude, cache_dir=cache_dir).augment(
            train, names, seed)
        k = rows["id"].str.rsplit("~p", n=1).str[1].astype(int)  # a source's k-th nearest neighbour
        feats = embed(rows["text"])
        for n in ns:
            keep = (k < n).to_numpy()
            probe(f"retrieval q{q} n{n}", feats[keep], rows["label"][keep])
    if groups:
        tok = load_tokenizer(cfg.model)
        proxy = probe_classifier(cfg.model, train, names, cfg.data.max_length, cfg.classifier.probe_C, seed)
        aug = DiffusionAugmenter(cfg.model, cfg.generator, cfg.augment, cfg.classifier, cfg.data.max_length,
                                 cache_dir, cfg.data.resolved_root(), dev_df=dev, exclude_texts=test["text"].tolist(),
                                 progress=False)
        importance = aug.normalise(aug.importance(train, proxy, tok))
        state, _ = aug.train_generator(train, importance, names, seed, proxy)
        for g in groups:
            aug.generator_cfg = dataclasses.replace(cfg.generator, group_index=g)
            pseudo = aug.generate(state, train, importance, names, seed, proxy, tok)
            probe(f"diffusion g{g}", embed(pseudo["text"]), pseudo["label"])
    return out


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per setting and variant: held-out and test macro-F1 / accuracy minus the probe's, paired by seed."""
    import numpy as np

    table: Dict[str, Any] = {}
    for setting in sorted({r["setting"] for r in runs}):
        sel = [r for r in runs if r["setting"] == setting]
        for variant in sel[0]["probes"]:
            have = [r for r in sel if variant in r["probes"]]
            d_held = np.array([r["probes"][variant]["heldout"]["macro_f1"] - r["probes"]["probe"]["heldout"]["macro_f1"]
                               for r in have]) * 100
            d_test = np.array([r["probes"][variant]["test"]["accuracy"] - r["probes"]["probe"]["test"]["accuracy"]
                               for r in have]) * 100
            held = np.array([r["probes"][variant]["heldout"]["macro_f1"] for r in have]) * 100
            table.setdefault(setting, {})[variant] = {
                "seeds": len(have), "heldout_macro_f1": round(float(held.mean()), 2),
                "delta_heldout_mean": round(float(d_held.mean()), 2), "delta_heldout_std": round(float(d_held.std()), 2),
                "delta_heldout_min": round(float(d_held.min()), 2),
                "delta_test_accuracy_mean": round(float(d_test.mean()), 2)}
    return table


def markdown(summary: Dict[str, Any]) -> str:
    lines = ["| setting | probe fitted on originals + | seeds | held-out macro-F1 % | Δ held-out vs probe (paired) "
             "| worst seed | Δ test accuracy |", "|---|---|---|---|---|---|---|"]
    for setting, variants in summary.items():
        for variant, m in variants.items():
            lines.append(f"| {setting} | {'nothing (the probe)' if variant == 'probe' else variant} | {m['seeds']} "
                         f"| {m['heldout_macro_f1']:.2f} | {m['delta_heldout_mean']:+.2f} ± {m['delta_heldout_std']:.2f} "
                         f"| {m['delta_heldout_min']:+.2f} | {m['delta_test_accuracy_mean']:+.2f} |")
    return "\n".join(lines) + "\n"


def run_signal(args: argparse.Namespace) -> None:
    import torch

    from dcls_core.config import load_config
    from dcls_core.data import load_dataset
    from dcls_core.models import load_classifier, load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = _load(out)
    start = time.time()
    for setting in args.settings:
        cfg = load_config(COMMON + SETTINGS[setting]["overrides"] + ["seed=13"])
        tok = load_tokenizer(cfg.model)
        encoder = load_classifier(cfg.model, 2, 0).eval()  # its pooled features only (the head is unused)

        def embed(texts, _enc=encoder, _tok=tok, _ml=cfg.data.max_length):
            return _enc.embed(_tok, [str(t) for t in texts], _ml).numpy()

        test_features = embed(load_dataset(cfg.dataset, cfg.data).test["text"])  # the same test set for every seed
        for seed in args.seeds:
            if any(r["setting"] == setting and r["seed"] == seed for r in data["runs"]):
                continue  # finished earlier
            t = time.time()
            probes = run_seed(setting, seed, Path(args.cache_dir), args.quantiles, args.n, args.groups, embed,
                              test_features)
            data["runs"].append({"setting": setting, "seed": seed, "probes": probes, "seconds": round(time.time() - t, 1)})
            log.info("%s seed %d: %d probes (%.0fs)", setting, seed, len(probes), time.time() - t)
            _save(out, data)
    data["summary"] = summarise(data["runs"])
    data["protocol"] = {"settings": args.settings, "seeds": args.seeds, "quantiles": args.quantiles, "n": args.n,
                        "groups": args.groups, "overrides": COMMON}
    data["wall_seconds_last_invocation"] = round(time.time() - start, 1)
    publish(out, data, markdown(data["summary"]))


def add_signal(sub) -> None:
    p = sub.add_parser("signal", help="probe-level study: what diffusion pseudo samples and retrieved rows add")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    p.add_argument("--quantiles", nargs="+", type=float, default=[0.5, 0.75, 0.9])
    p.add_argument("--n", nargs="+", type=int, default=[4, 16, 64], help="retrieved rows per original")
    p.add_argument("--groups", nargs="*", type=int, default=[1, 2, 4], help="diffusion groups (none: skip diffusion)")
    p.add_argument("--cache-dir", default=str(REPO / "runs" / "cache"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "dev_study" / "signal.json"))
    p.set_defaults(func=run_signal)
