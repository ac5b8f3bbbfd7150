"""Benchmarks: ``python jobs/benchmark.py <name> ...``; each writes ``benchmarks/results/<name>.json``.

Subcommands:

``generator``
    The generator warm-up and the pseudo samples it leads to, per dataset: masked-token
    accuracy / cross-entropy on held-out in-domain sentences (15 % random masking and the
    generation noise level, T = 32, 4th step group), warm-up wall time and corpus size, then
    label-aware diffusion training on the low-resource training set and generation at the
    paper's noise level, scored by a judge classifier trained on the dataset's full training
    split (label consistency) and by the share of tokens changed. Examples
    (original -> masked -> generated) per label are stored with the figures.

``quick``
    The few-shot study: the three arms, the dev-selected result, a frozen-encoder probe and
    SetFit on the same rows, 3 settings x 5 seeds (``jobs/benchmark_quick.py``).

``signal``
    Probe-level study on the ``quick`` rows: what DiffusionCLS pseudo samples (per noise level) and
    retrieved corpus rows (a grid of its settings) add to a linear probe, on held-out rows
    (``jobs/benchmark_signal.py``).

``throughput``
    Generation and importance scoring against a bare forward loop of the same model on the same
    batches, and a masked-LM substitution peer (``jobs/benchmark_throughput.py``).

``fewshot``, ``partial``, ``domain``, ``ablation`` (and ``suite <name or file>``)
    The paper's benchmark suites: every method (the baseline augmenters, DiffusionCLS and its
    ablations) and the peers on the same rows and seeds, one pipeline run per (setting, method,
    seed) sharing cached stages (``jobs/benchmark_suite.py``, presets in ``configs/suite/``).

Further benchmarks register themselves in ``SUBCOMMANDS``.
Results are merged into the JSON file per dataset, so datasets can be run one at a time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("benchmark")
RESULTS = REPO / "benchmarks" / "results"

# Per-dataset defaults of the generator benchmark (the protocol).
GENERATOR_DATASETS: Dict[str, Dict[str, Any]] = {
    # warm-up corpus: up to 20,000 SST-2 training sentences, labels ignored (dev/test excluded);
    # pseudo samples from the 10-shot training set; MLM held out: 500 GLUE dev sentences
    # judge: MiniLM fine-tuned for 1 epoch on all 67k training rows (~40 min here)
    "sst2": {"corpus": ["sst2"], "protocol": "k_shot", "k": 10, "heldout_split": "dev",
             "heldout_n": 500, "warmup_seconds": 1800, "judge_epochs": 1},
    # warm-up corpus: its own training texts (~2.1k tweets, so several epochs); pseudo samples
    # from 25 training rows per class; MLM held out: 500 test tweets
    "india_covid_x": {"corpus": [], "protocol": "k_shot", "k": 25, "heldout_split": "test",
                      "heldout_n": 500, "warmup_seconds": 900, "judge_epochs": 4},
}


def _merge_json(path: Path, update: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(update)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _parse_set(items: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` pairs; values parsed as YAML scalars (numbers, booleans, lists)."""
    import yaml

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        for cast in (int, float):  # YAML 1.1 reads "2e-4" as a string
            try:
                out[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = yaml.safe_load(value)
    return out


def _apply(cfg, overrides: Dict[str, Any], prefix: str):
    own = {k[len(prefix):]: v for k, v in overrides.items() if k.startswith(prefix)}
    if not own:
        return cfg
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = [k for k in own if k not in names]
    if bad:
        raise SystemExit(f"unknown {prefix}fields: {bad}")
    return dataclasses.replace(cfg, **own)


def generation_level_mask(T: int, steps: Sequence[int]):
    """Mask function at the generation noise level: per sentence a step t from the group,
    each text token masked with probability t/T (the schedule with zero importance: Eq. 1
    attention weights are ~1/length, so lam * S(t) * w_i moves this by a few points only)."""
    import torch

    from dcls_core.warmup import ensure_one

    def fn(ids, maskable, gen):
        idx = torch.randint(len(steps), (ids.shape[0], 1), generator=gen)
        rate = torch.tensor([float(s) / T for s in steps])[idx]
        mask = (torch.rand(ids.shape, generator=gen) < rate) & maskable
        return ensure_one(mask, maskable, gen)

    return fn


def _masked_view(tokenizer, frame, importance, label_ids, gcfg, plan, seed, max_length) -> List[str]:
    """The masked input of every plan item, decoded (what the reverse process starts from)."""
    from dcls_core.diffusion import importance_for_frame
    from dcls_core.generation import source_masks
    from dcls_core.prompting import encode_prompted, place_importance

    per_row = importance_for_frame(frame, importance)
    out = []
    for row, step in plan:
        batch = encode_prompted(tokenizer, [frame["text"].iloc[row]], [frame["label"].iloc[row]], label_ids,
                                max_length)
        imp = place_importance([per_row[row]], batch)
        masked = source_masks(imp, batch["maskable"], batch["attention_mask"], [str(frame["id"].iloc[row])],
                              [step], gcfg.T, gcfg.lam, seed)
        ids = batch["input_ids"].masked_fill(masked, tokenizer.mask_token_id)[0][batch["maskable"][0]]
        text = tokenizer.decode(ids.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=True)
        out.append(text.replace(f"{tokenizer.mask_token} ", tokenizer.mask_token + " ").strip())
    return out


def run_generator(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from dcls_core.config import ClassifierConfig, ModelConfig
    from dcls_core.config import load_config
    from dcls_core.data import k_shot, load_dataset
    from dcls_core.diffusion import train_generator
    from dcls_core.diffusion_augmenter import score_frame
    from dcls_core.generation import generate_pseudo_samples, plan_per_sample
    from dcls_core.judge import judge_probs, train_judge
    from dcls_core.models import load_classifier, load_tokenizer
    from dcls_core.prompting import add_label_tokens
    from dcls_core.training import train_proxy
    from dcls_core.warmup import corpus_texts, load_or_warmup, masked_lm_eval

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    overrides = _parse_set(args.set)
    command = "python jobs/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out_path = Path(args.out)
    cache_dir = Path(args.cache_dir)
    model_cfg = ModelConfig(name=args.model)
    for name in args.datasets:
        if name not in GENERATOR_DATASETS:
            raise SystemExit(f"no generator benchmark settings for dataset {name!r} ({list(GENERATOR_DATASETS)})")
        spec = dict(GENERATOR_DATASETS[name])
        t_all = time.time()
        cfg = load_config([f"dataset={name}"] + ([f"data.root={args.data_root}"] if args.data_root else []))
        data_root = cfg.data.resolved_root()
        full = load_dataset(cfg.dataset, dataclasses.replace(cfg.data, protocol="full"))
        train_full, dev, test = full.frames["train"], full.frames["dev"], full.frames["test"]
        label_names = list(full.vocab.names) if hasattr(full, "vocab") else sorted(train_full["label"].unique())
        heldout_frame = dev if spec["heldout_split"] == "dev" else test
        heldout = heldout_frame["text"].astype(str).tolist()[: spec["heldout_n"]]

        wcfg = dataclasses.replace(cfg.generator.warmup, corpus=list(spec["corpus"]),
                                   max_seconds=float(args.warmup_seconds or spec["warmup_seconds"]))
        wcfg = _apply(wcfg, overrides, "warmup.")
        gcfg = _apply(dataclasses.replace(cfg.generator, warmup=wcfg), overrides, "generator.")
        seed = args.seed
        low = k_shot(train_full, spec["k"], seed) if spec["protocol"] == "k_shot" else train_full
        low = low.reset_index(drop=True)
        exclude = dev["text"].astype(str).tolist() + test["text"].astype(str).tolist()
        texts = corpus_texts(wcfg, low["text"].astype(str).tolist() if wcfg.corpus else
                             train_full["text"].astype(str).tolist(), data_root, exclude=exclude)
        log.info("%s: warm-up corpus %d sentences, held-out %d, low-resource train %d", name, len(texts),
                 len(heldout), len(low))

        # 1. warm-up (cached) and masked-LM quality
        tok = load_tokenizer(model_cfg)
        from dcls_core.models import load_masked_lm

        fresh = load_masked_lm(model_cfg, seed)
        before15 = masked_lm_eval(fresh, tok, heldout, 0.15, seed=1, max_length=wcfg.max_length)
        del fresh
        gen, gen_tok, wstats = load_or_warmup(model_cfg, wcfg, texts, cache_dir, seed, log_every=50)
        mlm15 = masked_lm_eval(gen, gen_tok, heldout, 0.15, seed=1, max_length=wcfg.max_length)
        gen_level = generation_level_mask(gcfg.T, gcfg.group_steps())
        mlm_gen = masked_lm_eval(gen, gen_tok, heldout, gen_level, seed=1, max_length=wcfg.max_length)
        log.info("%s: MLM 15%% %s, generation level %s", name, mlm15, mlm_gen)

        # 2. judge on the full training split (measurement only)
        judge = train_judge(model_cfg, train_full, dev, label_names, seed=0, cache_dir=cache_dir,
                            kind=args.judge_kind, epochs=args.judge_epochs or spec["judge_epochs"])
        judge_test = judge_probs(judge, tok, test["text"].astype(str).tolist())
        y_test = np.array([label_names.index(str(v)) for v in test["label"]])
        judge_stats = dict(judge.stats)
        judge_stats["test_accuracy"] = float((judge_test.argmax(1) == y_test).mean())

        # 3. label-aware diffusion training on the low-resource set, then generation
        proxy_cfg = dataclasses.replace(ClassifierConfig(), proxy_epochs=args.proxy_epochs,
                                        proxy_lr=args.proxy_lr, batch_size=16)
        proxy = load_classifier(model_cfg, len(label_names), seed)
        t0 = time.time()
        train_proxy(proxy, tok, low, None, label_names, proxy_cfg, gcfg.warmup.max_length, seed)
        importance = score_frame(proxy, tok, low, gcfg.warmup.max_length)
        proxy_seconds = time.time() - t0
        label_ids = add_label_tokens(gen_tok, gen, label_names)
        t0 = time.time()
        gstats = train_generator(gen, gen_tok, low, list(importance), label_ids, gcfg, seed,
                                 max_length=gcfg.warmup.max_length)
        diffusion_seconds = time.time() - t0
        plan = plan_per_sample(low, args.n, gcfg.group_steps())
        t0 = time.time()
        pseudo = generate_pseudo_samples(gen, gen_tok, low, list(importance), label_ids, gcfg, plan, seed,
                                         max_length=gcfg.warmup.max_length)
        generation_seconds = time.time() - t0
        probs = judge_probs(judge, tok, pseudo["text"].astype(str).tolist())
        y = np.array([label_names.index(str(v)) for v in pseudo["label"]])
        pseudo["judge_label"] = [label_names[i] for i in probs.argmax(1)]
        pseudo["consistent"] = probs.argmax(1) == y
        orig_probs = judge_probs(judge, tok, low["text"].astype(str).tolist())
        y_low = np.array([label_names.index(str(v)) for v in low["label"]])
        masked_texts = _masked_view(gen_tok, low, list(importance), label_ids, gcfg, plan, seed,
                                    gcfg.warmup.max_length)
        pseudo["masked"] = masked_texts

        examples = []
        for label in label_names:
            rows = pseudo[pseudo["label"] == label].drop_duplicates("source_id").head(args.examples)
            for _, r in rows.iterrows():
                src = low[low["id"].astype(str) == str(r["source_id"])].iloc[0]
                examples.append({"label": label, "step": int(r["step"]), "original": src["text"],
                                 "masked": r["masked"], "generated": r["text"],
                                 "judge": r["judge_label"], "changed_ratio": round(float(r["changed_ratio"]), 3)})
        per_step = {int(s): {"consistency": float(g["consistent"].mean()),
                             "changed_ratio": float(g["changed_ratio"].mean()),
                             "mask_ratio": float(g["mask_ratio"].mean())} for s, g in pseudo.groupby("step")}
        result = {
            "masked_token_accuracy": mlm15["accuracy"], "masked_lm_ce": mlm15["ce"],
            "masked_token_accuracy_generation_level": mlm_gen["accuracy"],
            "masked_lm_ce_generation_level": mlm_gen["ce"],
            "masked_token_accuracy_before_warmup": before15["accuracy"], "masked_lm_ce_before_warmup": before15["ce"],
            "heldout": f"{len(heldout)} {spec['heldout_split']} texts",
            "label_consistency": float(pseudo["consistent"].mean()),
            "changed_ratio": float(pseudo["changed_ratio"].mean()),
            "mask_ratio": float(pseudo["mask_ratio"].mean()),
            "judge_consistency_of_originals": float((orig_probs.argmax(1) == y_low).mean()),
            "pseudo_samples": len(pseudo), "sources": len(low),
            "low_resource": f"{spec['protocol']} k={spec['k']}" if spec["protocol"] == "k_shot" else spec["protocol"],
            "per_step": per_step,
            "warmup_seconds": wstats.get("seconds"), "warmup_steps": wstats.get("steps"),
            "warmup_cached": wstats.get("cached"), "warmup_key": wstats.get("key"),
            "warmup_tokens_seen": wstats.get("tokens_seen"), "warmup_vocab": wstats.get("vocab_restricted"),
            "warmup_history": wstats.get("history"),
            "corpus_sentences": len(texts),
            "warmup_config": dataclasses.asdict(wcfg),
            "generation_config": {k: v for k, v in dataclasses.asdict(gcfg).items() if k != "warmup"},
            "judge": judge_stats,
            "proxy_seconds": round(proxy_seconds, 1), "diffusion": gstats,
            "diffusion_seconds": round(diffusion_seconds, 1), "generation_seconds": round(generation_seconds, 1),
            "total_seconds": round(time.time() - t_all, 1),
            "threads": torch.get_num_threads(), "load_average_at_end": list(os.getloadavg()),
            "examples": examples,
            "command": command,
        }
        _merge_json(out_path, {f"{name}_{args.tag}" if args.tag else name: result})
        if args.pseudo_dir:
            Path(args.pseudo_dir).mkdir(parents=True, exist_ok=True)
            pseudo.to_csv(Path(args.pseudo_dir) / f"{name}_pseudo.csv", index=False)
        log.info("%s: consistency %.3f, changed %.3f, MLM acc %.3f -> %s", name, result["label_consistency"],
                 result["changed_ratio"], result["masked_token_accuracy"], out_path)


def add_generator(sub) -> None:
    p = sub.add_parser("generator", help="generator warm-up + pseudo-sample quality")
    p.add_argument("--datasets", nargs="+", default=["sst2", "india_covid_x"], choices=sorted(GENERATOR_DATASETS))
    p.add_argument("--model", default="minilm")
    p.add_argument("--data-root", default=None)
    p.add_argument("--cache-dir", default=str(REPO / "runs" / "cache"))
    p.add_argument("--out", default=str(RESULTS / "generator.json"))
    p.add_argument("--warmup-seconds", type=float, default=None, help="default: per dataset")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--n", type=int, default=4, help="pseudo samples per original")
    p.add_argument("--proxy-epochs", type=int, default=15)
    p.add_argument("--proxy-lr", type=float, default=4e-5)
    p.add_argument("--judge-kind", default="finetune", choices=["embedding", "finetune"],
                   help="finetune: MiniLM fine-tuned on the full training split; embedding: frozen "
                        "MiniLM + logistic regression (minutes, but ~8 points less accurate)")
    p.add_argument("--judge-epochs", type=int, default=None, help="default: per dataset")
    p.add_argument("--examples", type=int, default=3, help="examples per label in the JSON")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: all cores); 1 is much faster than 2 when other processes "
                        "share the cores, and the warm-up is budgeted in wall-clock time")
    p.add_argument("--pseudo-dir", default=None, help="also write the pseudo samples (CSV) here")
    p.add_argument("--tag", default=None,
                   help="store the result as <dataset>_<tag> (a variant beside the main figures)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="warmup.<field>=... / generator.<field>=... overrides")
    p.set_defaults(func=run_generator)


from jobs.benchmark_quick import add_quick  # noqa: E402
from jobs.benchmark_signal import add_signal  # noqa: E402
from jobs.benchmark_suite import add_suites  # noqa: E402
from jobs.benchmark_throughput import add_throughput  # noqa: E402

SUBCOMMANDS: List[Callable] = [add_quick, add_signal, add_suites, add_generator, add_throughput]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args.func(args)


if __name__ == "__main__":
    main()
