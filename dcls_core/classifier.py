"""The sentence classifier: an encoder, its own pooling, and a linear head.

Every classifier in dcls (proxy, the three arms, the judge's probe) is a ``PooledClassifier``:

* **pooling** is the encoder's own. A sentence-transformers checkpoint (such as the embedded
  all-MiniLM-L6-v2) says in ``modules.json`` / ``1_Pooling/config.json`` that it was trained for
  mean pooling (and L2 normalisation); its first token was never trained as a sentence summary,
  so a head on [CLS] starts from a poor feature. Other checkpoints get the first token ([CLS] /
  <s>), which their pre-training (NSP, fine-tuning heads) shaped. ``model.pooling`` overrides.
* **the head starts as a linear probe** (``init_head_from_probe``): a logistic regression on the
  frozen pooled features of the training originals. Fine-tuning then starts from the
  classifier a user would build first (LP-FT, Kumar et al. 2022) instead of from noise, which on
  20 rows is what keeps a fine-tuned model from losing to a probe of its own encoder.

The forward pass returns ``logits``, ``pooled`` (what the head reads and what L_c shapes),
and, when asked, ``hidden_states`` / ``attentions`` like a ``transformers`` model.
A checkpoint is a folder: the encoder's ``save_pretrained`` files + tokenizer, ``classifier.json``
(pooling, normalisation, labels) and ``classifier_head.safetensors``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
META_FILE = "classifier.json"
HEAD_FILE = "classifier_head.safetensors"


# --------------------------------------------------------------------------- pooling of a checkpoint
def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _hub_file(name: str, filename: str) -> Optional[Path]:
    """A small file of a hub checkpoint (cache first; None when offline or absent)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name, filename))
    except Exception:  # offline, no such file, no such repo: the caller falls back to [CLS]
        return None


def checkpoint_pooling(source: Optional[str]) -> Tuple[str, bool]:
    """(pooling, normalise) declared by a checkpoint: sentence-transformers folders / hub repos
    name their pooling module; anything else (plain masked LMs, random tiny models) -> ("cls", False)."""
    if not source:
        return "cls", False
    local = Path(source).expanduser()
    if (local / META_FILE).is_file():  # a dcls checkpoint remembers what it was trained with
        meta = _read_json(local / META_FILE) or {}
        return str(meta.get("pooling", "cls")), bool(meta.get("normalize", False))
    modules_path = local / "modules.json" if local.exists() else _hub_file(source, "modules.json")
    modules = _read_json(modules_path) if modules_path is not None else None
    if not modules:
        return "cls", False
    pooling, normalize = "cls", False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        if kind.endswith("Pooling"):
            sub = module.get("path") or ""
            conf_path = local / sub / "config.json" if local.exists() else _hub_file(source, f"{sub}/config.json")
            conf = (_read_json(conf_path) if conf_path is not None else None) or {}
            if conf.get("pooling_mode_mean_tokens"):
                pooling = "mean"
            elif conf.get("pooling_mode_cls_token"):
                pooling = "cls"
            else:  # max / sqrt-len / weighted pooling: mean is the closest we implement
                log.warning("%s declares a pooling mode dcls does not implement (%s): using mean pooling",
                            source, {k: v for k, v in conf.items() if k.startswith("pooling_mode") and v})
                pooling = "mean"
    return pooling, normalize


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


# --------------------------------------------------------------------------- the model
@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    pooled: torch.Tensor
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


class PooledClassifier(nn.Module):
    """Encoder -> pooling (mean / first token, optionally L2-normalised) -> linear head."""

    base_model_prefix = "encoder"  # where dcls_core finds the encoder (init_encoder_from, judge)

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "cls", normalize: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.num_labels = int(num_labels)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)
        # the encoder's own pooler (BERT's tanh layer on [CLS]) is not read: freeze it so that
        # DDP does not wait for gradients that never come
        for name, param in encoder.named_parameters():
            if name.startswith("pooler."):
                param.requires_grad_(False)

    @property
    def config(self):
        return self.encoder.config

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        return F.normalize(pooled, p=2, dim=-1, eps=1e-8) if self.normalize else pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False, output_attentions: bool = False, **_: Any
                ) -> ClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                           return_dict=True)
        pooled = self.pool(out.last_hidden_state, attention_mask)
        return ClassifierOutput(logits=self.head(pooled), pooled=pooled,
                                hidden_states=getattr(out, "hidden_states", None),
                                attentions=getattr(out, "attentions", None))

    @torch.no_grad()
    def embed(self, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
        """Pooled features [N, H] of ``texts`` (eval mode, length-sorted batches, input order kept)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        texts = [str(t) for t in texts]
        out = torch.zeros(len(texts), self.encoder.config.hidden_size)
        order = np.argsort([len(t) for t in texts], kind="stable")
        try:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
                mask = enc["attention_mask"].to(device)
                hidden = self.encoder(input_ids=enc["input_ids"].to(device), attention_mask=mask).last_hidden_state
                out[torch.as_tensor(idx)] = self.pool(hidden, mask).float().cpu()
        finally:
            self.train(was_training)
        return out

    # ----------------------------------------------------------------------- folders
    def save_pretrained(self, folder: Union[str, Path], state_dict: Optional[Dict[str, torch.Tensor]] = None,
                        label_names: Optional[Sequence[str]] = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        head_state = {k[len("head."):]: v.detach().cpu().contiguous() for k, v in state.items()
                      if k.startswith("head.")}
        self.encoder.save_pretrained(str(folder), state_dict=enc_state)
        save_file(head_state, str(folder / HEAD_FILE))
        meta = {"pooling": self.pooling, "normalize": self.normalize, "num_labels": self.num_labels}
        if label_names is not None:
            meta["label_names"] = [str(n) for n in label_names]
        (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: Union[str, Path]) -> "PooledClassifier":
        from safetensors.torch import load_file
        from transformers import AutoModel

        folder = Path(folder)
        meta = _read_json(folder / META_FILE)
        if meta is None:
            raise FileNotFoundError(f"{folder} is not a dcls classifier checkpoint (no {META_FILE})")
        encoder = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
        model = cls(encoder, int(meta["num_labels"]), meta["pooling"], meta["normalize"])
        model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
        return model.eval()


# --------------------------------------------------------------------------- head initialisation
def fit_probe(features: np.ndarray, labels: np.ndarray, num_labels: int, C: float = 1.0
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Logistic regression (scikit-learn, L2, ``C``) on features -> (weight [C, H], bias [C]).

    A class missing from ``labels`` gets a zero row and a very negative bias; a binary model's
    single decision function is split evenly over the two rows (softmax gives the same odds).
    """
    from sklearn.linear_model import LogisticRegression

    present = np.unique(labels)
    weight = np.zeros((num_labels, features.shape[1]), dtype=np.float32)
    bias = np.full(num_labels, -10.0, dtype=np.float32)
    if len(present) < 2:
        bias[present] = 0.0
        return weight, bias
    lr = LogisticRegression(C=C, max_iter=2000).fit(features, labels)
    if len(present) == 2:
        a, b = lr.classes_
        weight[a], weight[b] = -lr.coef_[0] / 2, lr.coef_[0] / 2
        bias[a], bias[b] = -lr.intercept_[0] / 2, lr.intercept_[0] / 2
    else:
        weight[lr.classes_] = lr.coef_
        bias[lr.classes_] = lr.intercept_
    return weight, bias


def init_head_from_frame(model: PooledClassifier, tokenizer, frame, label_names: Sequence[str], max_length: int,
                         C: float = 1.0) -> None:
    """``init_head_from_probe`` on a schema frame (``text``, ``label`` = class names)."""
    index = {str(n): i for i, n in enumerate(label_names)}
    init_head_from_probe(model, tokenizer, frame["text"].astype(str).tolist(),
                         [index[str(y)] for y in frame["label"]], max_length, C)


def init_head_from_probe(model: PooledClassifier, tokenizer, texts: Sequence[str], label_ids: Sequence[int],
                         max_length: int, C: float = 1.0) -> None:
    """Set ``model.head`` to the logistic-regression probe of its frozen pooled features."""
    x = model.embed(tokenizer, texts, max_length).numpy()
    w, b = fit_probe(x, np.asarray(label_ids), model.num_labels, C)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w))
        model.head.bias.copy_(torch.as_tensor(b))


def probe_classifier(model_cfg, train_df, label_names: Sequence[str], max_length: int, C: float = 1.0,
                     seed: int = 0) -> PooledClassifier:
    """The peer a user tries first: the frozen encoder with a logistic-regression head on its pooled
    features (exactly the arms' step-0 model with ``classifier.head_init=probe``)."""
    from dcls_core.models import load_classifier, load_tokenizer

    model = load_classifier(model_cfg, len(label_names), seed)
    init_head_from_frame(model, load_tokenizer(model_cfg), train_df, label_names, max_length, C)
    return model.eval()
