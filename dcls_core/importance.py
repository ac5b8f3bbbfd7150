"""Token importance from the classifier's attention (paper Eq. 1), and its normalisation.

w_i = (1/H) * sum_h s_i^h, where s_i^h is the attention *from* the pooled position *to* token
i in head h of the **last** layer. For a classifier that reads the first token ([CLS] / <s>)
this is Eq. 1 exactly. A mean-pooling classifier (sentence-transformers checkpoints) reads
every token equally, so its "query" is all of them: the attention is averaged over the
attended query positions as well. Special and padding tokens get 0 (they are never masked),
so each row sums to at most 1.

Raw weights are small (about 1/length each), so in q_t = 1 - t/T - lambda sin(pi t/T) w the
label-aware term moves a 15-token sentence's masking probability by ~2 points.
``normalise_importance`` rescales them (``max``: divided by the sentence's largest weight;
``rank``: evenly spaced in (0, 1] by rank) so that lambda has the effect the paper describes;
``raw`` keeps Eq. 1's values (the paper presets).
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import torch
from torch import nn

from dcls_core.prompting import encode_plain, importance_lists

log = logging.getLogger(__name__)


class ImportanceError(RuntimeError):
    """The classifier cannot provide attention weights (e.g. not eager attention)."""


def _fallback_special_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Without a tokenizer: the first token and the last attended token are special."""
    attn = attention_mask.bool()
    special = torch.zeros_like(attn)
    special[:, 0] = True
    last = attn.long().cumsum(1).argmax(1)  # index of the last attended position
    special[torch.arange(attn.shape[0], device=attn.device), last] = True
    return special


def token_importance(classifier: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     special_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. 1: last-layer attention from the first token to each token, head mean: float [B, L].

    Runs in eval mode without gradients and restores the module's previous mode.
    ``special_mask`` (bool [B, L]) marks special tokens; if omitted, the first token and
    the last attended token of each row are taken as special (the [CLS] x [SEP] /
    <s> x </s> single-sequence layout). Special and padding positions are set to 0.
    """
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            out = classifier(input_ids=input_ids, attention_mask=attention_mask,
                             output_attentions=True)
    finally:
        classifier.train(was_training)
    attentions = getattr(out, "attentions", None)
    if attentions is None or len(attentions) == 0 or attentions[-1] is None:
        raise ImportanceError(
            "the classifier returned no attention weights; token importance (Eq. 1) needs "
            "eager attention: load it with attn_implementation='eager' "
            "(dcls_core.models.load_classifier does)")
    last = attentions[-1].float().mean(dim=1)  # head mean: [B, L(query), L(key)]
    if getattr(classifier, "pooling", "cls") == "mean":  # every attended token is read: average them
        q = attention_mask.to(last.dtype).unsqueeze(-1)
        w = (last * q).sum(dim=1) / q.sum(dim=1).clamp(min=1.0)
    else:
        w = last[:, 0, :]  # from the first token
    if special_mask is None:
        special_mask = _fallback_special_mask(attention_mask)
    keep = attention_mask.bool() & ~special_mask.bool().to(attention_mask.device)
    return torch.where(keep, w, torch.zeros_like(w))


NORMALISATIONS = ("raw", "max", "rank")


def normalise_importance(values: Optional[Sequence[float]], mode: str) -> Optional[List[float]]:
    """One sentence's importance list rescaled (``raw`` / ``max`` / ``rank``, see the module doc)."""
    if mode not in NORMALISATIONS:
        raise ValueError(f"importance normalisation must be one of {list(NORMALISATIONS)}, got {mode!r}")
    if values is None:
        return None
    w = [float(x) for x in values]
    if mode == "raw" or not w:
        return w
    if mode == "max":
        top = max(w)
        return [x / top for x in w] if top > 0 else w
    order = sorted(range(len(w)), key=lambda i: (w[i], i))  # rank 1 = least important
    ranks = [0.0] * len(w)
    for r, i in enumerate(order, start=1):
        ranks[i] = r / len(w)
    return ranks


def _device(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def score_texts(classifier: nn.Module, tokenizer, texts: Sequence[str], max_length: int,
                batch_size: int = 32) -> List[List[float]]:
    """Importance of each text token of each text (specials dropped), in token order.

    The k-th value belongs to the k-th text token of the same text in
    ``prompting.encode_prompted`` (same tokenizer, text tokenised alone in both);
    ``prompting.place_importance`` puts these lists onto the prompted layout.
    """
    texts = [str(x) for x in texts]
    device = _device(classifier)
    result: List[List[float]] = []
    for start in range(0, len(texts), batch_size):
        batch = encode_plain(tokenizer, texts[start:start + batch_size], max_length)
        w = token_importance(classifier, batch["input_ids"].to(device),
                             batch["attention_mask"].to(device),
                             special_mask=batch["special_mask"].to(device))
        result.extend(importance_lists(w, batch))
    log.debug("scored %d texts", len(result))
    return result
