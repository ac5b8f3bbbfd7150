"""Noise-resistant training objective (DiffusionCLS, Eqs. 4-6).

For a batch holding K *original* samples with encoder representations h_i and labels
l_i, the negative set of i is N_i = {j original : l_j != l_i}. The contrastive term is
exactly the formula of the paper (see /shared/METHOD.md, item 8)::

    L_c = (1/K) * log  sum_i sum_{j in N_i}  exp( sim(h_i, h_j) / tau )

with sim the cosine similarity. Note where the operators sit: one ``log`` around the
double sum over all ordered (anchor, negative) pairs, then a division by K (the number
of originals in the batch). It is computed with ``torch.logsumexp`` over the
vector of pair scores, so large ``1/tau`` cannot overflow. Minimising it pushes the
representations of different-label originals apart; there is no positive term.

Pseudo samples (``is_original == False``) never enter L_c: they are removed before any
similarity is formed, so they get exactly zero gradient from it (noisy pseudo samples
cannot pull the geometry). When the batch has no negative pair (fewer than two
originals, or all originals share a label) L_c is 0 (still attached to the graph, with
zero gradient).

The full objective is L = L_e + alpha * L_c, with L_e the cross-entropy over originals
AND pseudo samples together (the paper uses alpha = 1 and leaves tau unspecified; the
authors' released code computed L_c and dropped it, here it is really optimised).

Representation choice: h is the pooled sentence representation the classifier's head reads
(``PooledClassifier``'s ``pooled`` output: mean pooling for sentence-transformers checkpoints
such as the embedded MiniLM, the first token otherwise), so the contrastive geometry is shaped
exactly where the head looks.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["contrastive_loss", "positive_contrastive_loss", "noise_resistant_loss"]


def contrastive_loss(h: torch.Tensor, labels: torch.Tensor, is_original: torch.Tensor,
                     tau: float) -> torch.Tensor:
    """L_c over the ORIGINAL rows of the batch (Eq. 5), a scalar tensor.

    h: float [B, H] representations; labels: int [B]; is_original: bool [B]; tau > 0.
    """
    if h.dim() != 2:
        raise ValueError(f"h must be [B, H], got shape {tuple(h.shape)}")
    if labels.shape[0] != h.shape[0] or is_original.shape[0] != h.shape[0]:
        raise ValueError("h, labels and is_original must have the same batch size")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    keep = is_original.to(device=h.device, dtype=torch.bool)
    ho = h[keep]  # pseudo rows are dropped here: no path from them to L_c
    lo = labels.to(h.device)[keep]
    k = ho.shape[0]
    zero = (h * 0.0).sum()  # a graph-attached 0 with zero gradient everywhere
    if k < 2:
        return zero
    if ho.dtype in (torch.float16, torch.bfloat16):
        ho = ho.float()  # similarities and logsumexp in at least fp32
    z = F.normalize(ho, p=2, dim=-1, eps=1e-8)
    sim = z @ z.t()  # cosine similarities [K, K]
    negative = lo.unsqueeze(0) != lo.unsqueeze(1)  # j in N_i  <=>  l_j != l_i (excludes i = j)
    if not bool(negative.any()):
        return zero
    scores = sim[negative] / tau  # every ordered pair (i, j in N_i)
    return (torch.logsumexp(scores, dim=0) / k).to(h.dtype)


def positive_contrastive_loss(h: torch.Tensor, labels: torch.Tensor, is_original: torch.Tensor,
                              source: torch.Tensor, tau: float) -> torch.Tensor:
    """A supervised-contrastive L_c with positives (``classifier.contrastive=positives``; not the
    paper's Eq. 5, which has negatives only). Anchors are the originals; the positives of anchor i
    are the other originals of its label and *its own* pseudo samples (``source[j] == source[i]``),
    the candidates of its softmax are every other original and its own pseudo samples:

        L = -(1/K) sum_i 1/|P_i| sum_{p in P_i} log( exp(s_ip/tau) / sum_{a in A_i} exp(s_ia/tau) )

    So a pseudo sample is pulled only towards its source (SetFit's pairs, with a generated
    partner) and a pseudo sample of another source never enters an anchor's term: noisy pseudo
    samples cannot pull the geometry of other classes. Without pseudo rows it is SupCon over the
    originals. Anchors with no positive are skipped; 0 (graph-attached) when none has one.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    device = h.device
    orig = is_original.to(device=device, dtype=torch.bool)
    labels, source = labels.to(device), source.to(device)
    zero = (h * 0.0).sum()
    anchors = torch.nonzero(orig).flatten()
    if len(anchors) == 0:
        return zero
    z = F.normalize(h.float(), p=2, dim=-1, eps=1e-8)
    sim = z[anchors] @ z.t() / tau  # [K, B]
    not_self = torch.ones_like(sim, dtype=torch.bool)
    not_self[torch.arange(len(anchors), device=device), anchors] = False
    own = source.unsqueeze(0) == source[anchors].unsqueeze(1)  # own pseudo samples (and self)
    candidates = not_self & (orig.unsqueeze(0) | own)
    positive = candidates & ((labels.unsqueeze(0) == labels[anchors].unsqueeze(1)) & orig.unsqueeze(0) | own)
    has_pos = positive.any(dim=1)
    if not bool(has_pos.any()):
        return zero
    log_prob = sim - torch.logsumexp(sim.masked_fill(~candidates, float("-inf")), dim=1, keepdim=True)
    per_anchor = (log_prob * positive).sum(dim=1)[has_pos] / positive.sum(dim=1)[has_pos]
    return (-per_anchor.mean()).to(h.dtype)


def noise_resistant_loss(logits: torch.Tensor, h: torch.Tensor, labels: torch.Tensor,
                         is_original: torch.Tensor, alpha: float, tau: float,
                         source: Optional[torch.Tensor] = None, contrastive: str = "negatives"
                         ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """L = L_e + alpha * L_c (Eq. 6) and its parts as floats {"loss", "ce", "contrastive"}.

    L_e is the mean cross-entropy over all rows (originals and pseudo samples together);
    L_c is ``contrastive_loss`` over the originals only (``contrastive="negatives"``, the paper)
    or ``positive_contrastive_loss`` (``"positives"``: needs ``source``, each row's original).
    With alpha == 0 the loss is exactly the cross-entropy (L_c is still reported, for monitoring).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if contrastive not in ("negatives", "positives"):
        raise ValueError(f"contrastive must be 'negatives' or 'positives', got {contrastive!r}")
    if contrastive == "positives" and source is None:
        raise ValueError("contrastive='positives' needs each row's source index")

    def term(hh: torch.Tensor) -> torch.Tensor:
        if contrastive == "positives":
            return positive_contrastive_loss(hh, labels, is_original, source, tau)
        return contrastive_loss(hh, labels, is_original, tau)

    ce = F.cross_entropy(logits, labels.to(logits.device))
    if alpha == 0:
        with torch.no_grad():
            lc = term(h.detach())
        loss = ce
    else:
        lc = term(h)
        loss = ce + alpha * lc
    parts = {"loss": float(loss.detach()), "ce": float(ce.detach()), "contrastive": float(lc.detach())}
    return loss, parts
