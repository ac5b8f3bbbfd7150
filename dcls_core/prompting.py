"""Label-aware prompting: one new token per class, prepended to the (masked) text.

Layout (the tokenizer's own pair template, so it works for BERT, RoBERTa, XLM-R, ...)::

    [CLS] <label:y> [SEP] x_1 ... x_n [SEP]        (BERT)
    <s> <label:y> </s></s> x_1 ... x_n </s>         (RoBERTa / XLM-R)

The prompt is never masked and never in the loss: ``maskable`` is True exactly on the
text tokens of the second segment. The classifier sees the plain encoding (no prompt);
``align_importance`` / ``place_importance`` carry per-token importance computed on the
plain encoding over to the prompted one (the k-th text token of one is the k-th text token
of the other; both tokenise the text alone, only truncation may cut them differently).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)


class PromptingError(ValueError):
    """The tokenizer/model pair is not set up for label prompts (e.g. tokens not added)."""


def label_token(name: str) -> str:
    """The prompt token string of a class: ``<label:name>``."""
    return f"<label:{name}>"


def label_name_piece_ids(tokenizer, name: str) -> List[int]:
    """Word-piece ids of a label *name* (underscores/hyphens read as spaces), no specials.

    These initialise the prompt token's embedding, so a prompt starts out meaning roughly
    what its class name means instead of being random noise.
    """
    words = name.replace("_", " ").replace("-", " ").strip() or name
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    known = [i for i in ids if i != unk]
    return known or ids


def add_label_tokens(tokenizer, model: Optional[nn.Module],
                     label_names: Sequence[str]) -> Dict[str, int]:
    """Add one special token per class to ``tokenizer`` and grow ``model``'s embeddings.

    Each new embedding row is the mean input embedding of the label name's word pieces
    (not random). Idempotent: tokens already in the tokenizer are reused, and only rows the
    model does not have yet are created and initialised, so calling it twice, or once more
    with a freshly loaded model and the same tokenizer, is safe. ``model`` may be None to
    only extend the tokenizer. Returns ``{label name: token id}``.
    """
    tokens = [label_token(n) for n in label_names]
    vocab = tokenizer.get_vocab()
    missing = [tok for tok in tokens if tok not in vocab]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing},
                                     replace_extra_special_tokens=False)
        log.info("added %d label prompt tokens to the tokenizer", len(missing))
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in zip(label_names, tokens)}
    for name, tok in zip(label_names, tokens):
        enc = tokenizer(tok, add_special_tokens=False)["input_ids"]
        if enc != [ids[name]]:
            raise PromptingError(f"{tok!r} does not tokenise to a single token ({enc})")
    if model is None:
        return ids
    emb = model.get_input_embeddings()
    old_rows = emb.weight.shape[0]
    need = max(len(tokenizer), max(ids.values()) + 1)
    if need > old_rows:
        model.resize_token_embeddings(need, mean_resizing=False)
        emb = model.get_input_embeddings()
    with torch.no_grad():
        for name, tid in ids.items():
            if tid < old_rows:
                continue  # the model already had this row (second call): keep what it learned
            pieces = label_name_piece_ids(tokenizer, name)
            piece_ids = torch.tensor(pieces, dtype=torch.long, device=emb.weight.device)
            emb.weight[tid] = emb.weight[piece_ids].mean(dim=0)
    return ids


# The prompt of every row when label prompting is off (generator.label_prompt=false): the same
# layout, one shared token that carries no label.
NO_LABEL = "*"


def prompt_token_ids(tokenizer, model: Optional[nn.Module], label_names: Sequence[str],
                     label_prompt: bool = True) -> Dict[str, int]:
    """``{label name: prompt token id}`` for ``encode_prompted``: one token per class
    (``add_label_tokens``), or with ``label_prompt=False`` the shared ``<label:*>`` for every class
    (the "w/o label prompting" ablation)."""
    if label_prompt:
        return add_label_tokens(tokenizer, model, label_names)
    shared = add_label_tokens(tokenizer, model, [NO_LABEL])[NO_LABEL]
    return {name: shared for name in label_names}


def _text_positions(enc, row: int, segment: int) -> List[bool]:
    seq = enc.sequence_ids(row)
    return [s == segment for s in seq]


def encode_prompted(tokenizer, texts: Sequence[str], labels: Sequence[str],
                    label_token_ids: Mapping[str, int], max_length: int) -> Dict[str, torch.Tensor]:
    """Encode ``(<label:y>, text)`` pairs with the tokenizer's pair template.

    Returns ``input_ids``, ``attention_mask`` (LongTensor [B, L], padded to the longest),
    ``maskable`` (bool: the text tokens, i.e. not special, not prompt, not padding),
    ``text_mask`` (same as ``maskable``; named for symmetry with ``encode_plain``) and
    ``prompt_mask`` (bool: the label token). Truncation only ever cuts the text.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    unknown = sorted({str(y) for y in labels} - set(label_token_ids))
    if unknown:
        raise PromptingError(f"no label token for {unknown}; call add_label_tokens first")
    # the prompt is whatever token the mapping gives (one per class, or the shared no-label token)
    prompts = tokenizer.convert_ids_to_tokens([int(label_token_ids[str(y)]) for y in labels])
    if any(p is None for p in prompts):
        raise PromptingError("a label token id is not in this tokenizer: was add_label_tokens called on it?")
    enc = tokenizer(prompts, [str(x) for x in texts], truncation="only_second",
                    max_length=max_length, padding=True, return_special_tokens_mask=True,
                    return_tensors="pt")
    input_ids = enc["input_ids"]
    attention = enc["attention_mask"]
    prompt_ids = torch.tensor([label_token_ids[str(y)] for y in labels], dtype=torch.long)
    prompt_mask = (input_ids == prompt_ids[:, None]) & attention.bool()
    if not bool((prompt_mask.sum(1) >= 1).all()):
        raise PromptingError("label token not found in the prompted encoding: was "
                             "add_label_tokens called on this tokenizer?")
    try:
        text = torch.tensor([_text_positions(enc, i, 1) for i in range(len(texts))], dtype=torch.bool)
    except (ValueError, AttributeError):  # slow tokenizer: no sequence_ids
        text = ~enc["special_tokens_mask"].bool() & ~prompt_mask
    maskable = text & attention.bool() & ~enc["special_tokens_mask"].bool() & ~prompt_mask
    return {"input_ids": input_ids, "attention_mask": attention, "maskable": maskable,
            "text_mask": maskable.clone(), "prompt_mask": prompt_mask}


def encode_plain(tokenizer, texts: Sequence[str], max_length: int) -> Dict[str, torch.Tensor]:
    """Encode texts alone (the classifier's input): ``input_ids``, ``attention_mask``,
    ``special_mask`` (bool, special tokens) and ``text_mask`` (bool, text tokens)."""
    enc = tokenizer([str(x) for x in texts], truncation=True, max_length=max_length,
                    padding=True, return_special_tokens_mask=True, return_tensors="pt")
    attention = enc["attention_mask"]
    special = enc["special_tokens_mask"].bool()
    return {"input_ids": enc["input_ids"], "attention_mask": attention,
            "special_mask": special, "text_mask": ~special & attention.bool()}


def importance_lists(plain_importance: torch.Tensor, plain_batch: Mapping[str, torch.Tensor]
                     ) -> List[List[float]]:
    """Per-row importance of the text tokens only, in order (drops specials and padding)."""
    text = plain_batch["text_mask"].bool()
    values = plain_importance.detach().float().cpu()
    return [values[i][text[i].cpu()].tolist() for i in range(values.shape[0])]


def place_importance(per_text: Optional[Sequence[Optional[Sequence[float]]]],
                     prompted_batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Put per-text-token importance lists onto the prompted layout: float [B, L].

    The k-th value goes to the k-th text token of the row. If one side was truncated more
    than the other, the extra text tokens of the prompted row get 0 (the plain linear
    schedule for them) and extra values are dropped. ``None`` (or a None row) means no
    importance: zeros, i.e. the plain linear schedule.
    """
    text = prompted_batch["maskable"].bool()
    out = torch.zeros(text.shape, dtype=torch.float32)
    if per_text is None:
        return out.to(text.device)
    if len(per_text) != text.shape[0]:
        raise ValueError(f"{len(per_text)} importance rows for a batch of {text.shape[0]}")
    text_cpu = text.cpu()
    for i, values in enumerate(per_text):
        if values is None:
            continue
        pos = text_cpu[i].nonzero(as_tuple=True)[0]
        n = min(len(pos), len(values))
        if n:
            out[i, pos[:n]] = torch.as_tensor(list(values)[:n], dtype=torch.float32)
    return out.to(text.device)


def align_importance(plain_importance: torch.Tensor, plain_batch: Mapping[str, torch.Tensor],
                     prompted_batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Map importance [B, Lp] computed on ``encode_plain`` onto ``encode_prompted``: [B, L]."""
    return place_importance(importance_lists(plain_importance, plain_batch), prompted_batch)
