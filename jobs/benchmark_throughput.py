"""``python jobs/benchmark.py throughput``: how close generation and importance scoring run to the
speed of the bare model on the same inputs, and a peer, side by side in one process.

Each figure is measured in the same run, on the same machine, the same texts and the same model
(the embedded MiniLM; a fresh masked-LM head, since the weights do not change the cost):

* ``generation``: the generation stage's function (``generate_pseudo_samples``: masking, k reverse
  steps with sampling, splicing the text back) against a bare batched loop of the same model over
  the same batches: k forward passes each, vocabulary logits at the masked positions, nothing else.
  ``ratio`` = bare time / stage time (1.0: the stage costs no more than the forward passes).
* ``scoring``: token importance (``importance.score_texts``: eager attention, Eq. 1) against a bare
  batched forward loop with attentions over the same batches.
* ``peer``: nlpaug-style masked-LM word substitution (``ContextualWordEmbsAug``'s way: one text at a
  time, 15 % of the tokens masked, the top prediction put in), same model and texts.

Writes ``benchmarks/results/throughput.json``. Ray Train steps, actor scaling and corpus-size
scaling are not measured yet (``docs/performance.md`` says what is and is not).
"""
from __future__ import annotations

import argparse
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
                       model: str = "minilm") -> Dict[str, Any]:
    import pandas as pd
    import torch

    from dcls_core.config import GeneratorConfig, ModelConfig
    from dcls_core.generation import generate_pseudo_samples, plan_per_sample
    from dcls_core.models import load_masked_lm, load_tokenizer, masked_lm_logits
    from dcls_core.prompting import add_label_tokens, encode_prompted

    cfg = GeneratorConfig(reverse_steps=4)
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
    return {"pseudo_samples": samples, "reverse_steps": cfg.reverse_steps, "batch_size": batch_size,
            "masked_share": round(masked_share, 3), "tokens_x_steps": tokens,
            "stage_seconds": round(stage_s, 2), "bare_seconds": round(bare_s, 2),
            "pseudo_per_s": round(samples / stage_s, 1), "tokens_per_s": round(tokens / stage_s, 0),
            "bare_pseudo_per_s": round(samples / bare_s, 1), "ratio": round(bare_s / stage_s, 3),
            "sampling": {"top_k": cfg.top_k, "top_p": cfg.top_p, "temperature": cfg.temperature}}


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


def run_throughput(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    texts = _texts(args.sentences, args.data_root)
    result: Dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(), "gpu": torch.cuda.is_available()},
        "model": f"{args.model} (a fresh masked-LM head where it has none)", "texts": f"first {len(texts)} SST-2 training sentences",
        "max_length": args.max_length, "repeats": f"best of {args.repeats} after one warm-up call"}
    log.info("generation: %d sentences x %d pseudo samples", len(texts), args.n)
    result["generation"] = measure_generation(texts, args.n, args.batch_size, args.max_length, args.repeats,
                                              args.model)
    log.info("generation: %s", result["generation"])
    result["scoring"] = measure_scoring(texts, args.batch_size, args.max_length, args.repeats, args.model)
    log.info("scoring: %s", result["scoring"])
    result["peer"] = measure_peer(texts[:args.peer_texts], args.max_length, args.repeats, args.model)
    log.info("peer: %s", result["peer"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    print(json.dumps(result, indent=1))


def add_throughput(sub) -> None:
    p = sub.add_parser("throughput", help="generation and scoring against the bare model; a masked-LM peer")
    p.add_argument("--sentences", type=int, default=256, help="SST-2 training sentences (x n pseudo samples)")
    p.add_argument("--n", type=int, default=4, help="pseudo samples per sentence")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--peer-texts", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--model", default="minilm", help="model config name (minilm, tiny, a hub id or path)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput.json"))
    p.set_defaults(func=run_throughput)
