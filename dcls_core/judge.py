"""Label-consistency judge: for measurement only, never used to train or select pseudo samples.

A classifier trained on the *full* training split of a dataset (not the low-resource sample
the pipeline trains on) scores whether a pseudo sample still carries its inherited label.
Two kinds:

* ``embedding`` (default, cheap on CPU): the encoder frozen, mean-pooled token states
  (all-MiniLM-L6-v2 is a sentence-embedding model, so these are good features) and a
  multinomial logistic regression on top, trained with L-BFGS;
* ``finetune``: the encoder fine-tuned with ``dcls_core.training.fit_classifier``
  (plain cross-entropy, ``alpha = 0``), better but much slower on a CPU.

Judges are cached under ``<cache_dir>/judge-<key>/`` keyed by model, kind, training data
and settings, so a benchmark reuses them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from dcls_core.config import ClassifierConfig, ModelConfig
from dcls_core.models import load_classifier, load_tokenizer, resolve_model

log = logging.getLogger(__name__)

JUDGE_VERSION = 2


@dataclass
class Judge:
    kind: str  # embedding | finetune
    label_names: List[str]
    encoder: nn.Module  # embedding: the base encoder; finetune: the sequence classifier
    tokenizer: Any
    head: Optional[nn.Linear] = None  # embedding only
    max_length: int = 64
    stats: Dict[str, Any] = field(default_factory=dict)


def _key(model_cfg: ModelConfig, train_df: pd.DataFrame, label_names: Sequence[str], kind: str,
         seed: int, epochs: int, max_length: int) -> str:
    h = hashlib.sha256()
    for t, y in zip(train_df["text"].astype(str), train_df["label"].astype(str)):
        h.update(t.encode("utf-8") + b"\x00" + y.encode("utf-8") + b"\x01")
    res = resolve_model(model_cfg)
    payload = json.dumps({"v": JUDGE_VERSION, "model": res.name, "kind": kind, "labels": list(label_names),
                          "seed": seed, "epochs": epochs, "max_length": max_length, "data": h.hexdigest()},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@torch.no_grad()
def _embed(encoder: nn.Module, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 128
           ) -> torch.Tensor:
    """Mean-pooled last hidden states, L2-normalised (sentence-transformers style)."""
    encoder.eval()
    order = np.argsort([len(t) for t in texts])  # length-sorted: little padding
    out = torch.zeros(len(texts), encoder.config.hidden_size)
    for s in range(0, len(texts), batch_size):
        idx = order[s:s + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        hid = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hid * m).sum(1) / m.sum(1).clamp(min=1)
        out[torch.as_tensor(idx)] = torch.nn.functional.normalize(pooled, dim=-1)
    return out


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-4, iters: int = 200) -> nn.Linear:
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x * 10.0), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def _label_ids(labels: Sequence[Any], label_names: Sequence[str]) -> torch.Tensor:
    index = {str(n): i for i, n in enumerate(label_names)}
    unknown = sorted({str(v) for v in labels} - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the judge's labels {list(index)}")
    return torch.tensor([index[str(v)] for v in labels], dtype=torch.long)


def train_judge(model_cfg: ModelConfig, train_df: pd.DataFrame, dev_df: Optional[pd.DataFrame],
                label_names: Sequence[str], seed: int = 0, epochs: int = 1,
                cache_dir: Union[str, Path, None] = None, kind: str = "embedding", max_length: int = 64,
                classifier_cfg: Optional[ClassifierConfig] = None) -> Judge:
    """A judge trained on ``train_df`` (the dataset's full training split); cached when
    ``cache_dir`` is given. ``stats`` holds its dev accuracy / macro-F1 when ``dev_df`` is given."""
    if kind not in ("embedding", "finetune"):
        raise ValueError(f"judge kind must be 'embedding' or 'finetune', got {kind!r}")
    names = [str(n) for n in label_names]
    tokenizer = load_tokenizer(model_cfg)
    key = _key(model_cfg, train_df, names, kind, seed, epochs, max_length)
    folder = Path(cache_dir) / f"judge-{key}" if cache_dir is not None else None
    if folder is not None and (folder / "judge.json").exists():
        meta = json.loads((folder / "judge.json").read_text())
        if kind == "embedding":
            clf = load_classifier(model_cfg, len(names), seed)
            encoder = getattr(clf, clf.base_model_prefix)
            head = nn.Linear(encoder.config.hidden_size, len(names))
            head.load_state_dict(torch.load(folder / "head.pt"))
            judge = Judge(kind, names, encoder, tokenizer, head, max_length, meta)
        else:
            from dcls_core.classifier import PooledClassifier

            model = PooledClassifier.from_pretrained(folder / "model")
            judge = Judge(kind, names, model, tokenizer, None, max_length, meta)
        judge.stats["cached"] = True
        return judge

    start = time.time()
    texts = train_df["text"].astype(str).tolist()
    y = _label_ids(train_df["label"].tolist(), names)
    clf = load_classifier(model_cfg, len(names), seed)
    if kind == "embedding":
        encoder = getattr(clf, clf.base_model_prefix)
        x = _embed(encoder, tokenizer, texts, max_length)
        head = _fit_logreg(x, y, len(names))
        judge = Judge(kind, names, encoder, tokenizer, head, max_length)
    else:
        from dcls_core.training import fit_classifier

        cfg = classifier_cfg or ClassifierConfig(epochs=max(1, epochs), min_steps=0, lr=3e-5, batch_size=32,
                                                 alpha=0.0, eval_every=10 ** 9)
        res = fit_classifier(clf, tokenizer, train_df, dev_df, names, cfg, max_length, seed,
                             schedule="linear", warmup_ratio=0.06)
        judge = Judge(kind, names, res.model, tokenizer, None, max_length)
    judge.stats = {"kind": kind, "train_rows": len(train_df), "train_seconds": round(time.time() - start, 1),
                   "model": model_cfg.name, "key": key}
    if dev_df is not None and len(dev_df):
        from dcls_core.evaluation import classification_metrics

        probs = judge_probs(judge, tokenizer, dev_df["text"].astype(str).tolist())
        m = classification_metrics(dev_df["label"].astype(str).tolist(), probs.argmax(1).tolist(), names)
        judge.stats.update({"dev_accuracy": m["accuracy"], "dev_macro_f1": m["macro_f1"], "dev_rows": len(dev_df)})
    log.info("judge: %s", judge.stats)
    if folder is not None:
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if kind == "embedding":
            torch.save(judge.head.state_dict(), tmp / "head.pt")
        else:
            judge.encoder.save_pretrained(str(tmp / "model"))
        (tmp / "judge.json").write_text(json.dumps(judge.stats, indent=1, default=str))
        try:
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return judge


@torch.no_grad()
def judge_probs(judge: Judge, tokenizer, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Class probabilities ``float32 [N, C]`` in ``judge.label_names`` order."""
    tok = tokenizer or judge.tokenizer
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, len(judge.label_names)), dtype=np.float32)
    if judge.kind == "embedding":
        x = _embed(judge.encoder, tok, texts, judge.max_length, batch_size)
        return torch.softmax(judge.head(x * 10.0), -1).numpy().astype(np.float32)
    from dcls_core.training import predict

    frame = pd.DataFrame({"text": texts})
    _, probs = predict(judge.encoder, frame, tok, judge.label_names, judge.max_length, batch_size)
    return probs


def label_consistency(judge: Judge, tokenizer, texts: Sequence[str], labels: Sequence[Any]) -> Dict[str, float]:
    """Share of ``texts`` the judge assigns to their (inherited) ``labels``, and the mean
    probability it gives those labels."""
    probs = judge_probs(judge, tokenizer, texts)
    y = _label_ids(labels, judge.label_names).numpy()
    if len(y) == 0:
        return {"consistency": float("nan"), "mean_prob": float("nan"), "n": 0}
    return {"consistency": float((probs.argmax(1) == y).mean()),
            "mean_prob": float(probs[np.arange(len(y)), y].mean()), "n": int(len(y))}
