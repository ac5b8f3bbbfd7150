"""Conditional sample generation: mask an original at a chosen noise level, rebuild it.

For each planned ``(row, step)`` the source text is encoded with its label prompt, masked
with the forward process at ``step`` (``schedule.forward_masks``, importance-driven, so the
label-carrying tokens go first), and the masks are filled by the reverse process
(``reverse_fill``): over k iterations, predict every still-masked position, sample a token
(temperature / top-k / top-p), and commit the most confident share. k = 1 is the authors'
one-pass variant (they decode greedily with dropout on; we keep eval mode and sample).
The pseudo sample inherits its source's label.

Randomness is derived from ``seed`` per source and per pseudo sample (not per batch), so
the output does not depend on how the plan is cut into batches (e.g. by Ray Data), and
every step drawn for the same source uses the same forward-process uniforms: its masks
are nested across steps.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd
import torch
from torch import nn

from dcls_core.config import GeneratorConfig
from dcls_core.diffusion import ImportanceLike, importance_for_frame
from dcls_core.models import masked_lm_logits
from dcls_core.prompting import encode_prompted, place_importance
from dcls_core.schedule import forward_masks

log = logging.getLogger(__name__)

PlanItem = Tuple[int, int]  # (positional row index into the frame, diffusion step)
Generators = Union[None, torch.Generator, Sequence[torch.Generator]]

from dcls_core.augment import PSEUDO_COLUMNS  # the pseudo-row schema


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed from ``seed`` and labels (unlike ``hash``, not salted per process)."""
    key = "\x1f".join([str(seed)] + [str(p) for p in parts]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def forbidden_token_ids(tokenizer, label_token_ids: Mapping[str, int],
                        vocab_size: Optional[int] = None) -> List[int]:
    """Ids the reverse process must never emit: special tokens (incl. mask), label prompts,
    and model rows past the tokenizer's vocabulary (padding rows of some checkpoints)."""
    ids = set(int(i) for i in tokenizer.all_special_ids)
    ids.update(int(i) for i in label_token_ids.values())
    if tokenizer.mask_token_id is not None:
        ids.add(int(tokenizer.mask_token_id))
    if vocab_size is not None and vocab_size > len(tokenizer):
        ids.update(range(len(tokenizer), vocab_size))
    return sorted(ids)


def _uniforms(attention_mask: torch.Tensor, generator: Generators) -> torch.Tensor:
    """[B, L] uniforms on CPU (zeros on padding).

    One generator: a [B, L] draw. One generator per row: row b draws exactly as many
    numbers as it has attended tokens, so its stream does not depend on how much padding
    the batch it landed in has (results independent of batching).
    """
    attended = attention_mask.bool().cpu()
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return torch.rand(tuple(attended.shape), generator=generator, device=gen_device).cpu()
    if len(generator) != attended.shape[0]:
        raise ValueError(f"{len(generator)} generators for {attended.shape[0]} rows")
    u = torch.zeros(tuple(attended.shape))
    for b, g in enumerate(generator):
        pos = attended[b].nonzero(as_tuple=True)[0]
        u[b, pos] = torch.rand(len(pos), generator=g, device=g.device).cpu()
    return u


def _forbid_mask(vocab: int, forbidden: Sequence[int], device: torch.device) -> torch.Tensor:
    forbid = torch.zeros(vocab, dtype=torch.bool, device=device)
    inside = [i for i in forbidden if 0 <= i < vocab]
    if inside:
        forbid[torch.tensor(inside, dtype=torch.long, device=device)] = True
    if bool(forbid.all()):
        raise ValueError("every vocabulary id is forbidden")
    return forbid


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Column drawn from each row of non-negative ``weights`` [N, W] with the uniforms ``u`` [N]."""
    cdf = weights.cumsum(dim=-1)
    target = (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    pick = torch.searchsorted(cdf, target, right=True)
    # rounding can put u * total at the very top: fall back to the last allowed column, the first
    # where the cdf reaches its total (it rose there, so its weight is > 0)
    last_allowed = torch.searchsorted(cdf, cdf[:, -1:].contiguous())
    return torch.minimum(pick, last_allowed).squeeze(-1)


def _sorted_nucleus(vals: torch.Tensor, top_p: float) -> torch.Tensor:
    """``vals`` (descending) with the candidates past the nucleus set to 0."""
    if top_p >= 1.0:
        return vals
    before = vals.cumsum(dim=-1) - vals  # mass strictly above each candidate
    return vals.masked_fill(before > top_p, 0.0)  # keeps the token crossing top_p


def nucleus_mask(probs: torch.Tensor, top_p: float, coarse_shift: int = 19) -> torch.Tensor:
    """The nucleus of each row of ``probs`` [N, V] without sorting the vocabulary: bool [N, V].

    A token is kept when the mass of the tokens strictly more probable than it is <= ``top_p``
    (tokens tied at the boundary are all kept). Non-negative float32s order like their bit
    patterns, so one pass buckets the row's mass by the top bits; the bucket where the mass from
    the top passes ``top_p`` holds the boundary, and only its tokens are sorted. Costs about a
    third of sorting 30k tokens per row on CPU.
    """
    probs = probs.float().contiguous()
    n = probs.shape[0]
    key = probs.view(torch.int32)
    coarse = (key >> coarse_shift).long()
    mass = torch.zeros(n, 1 << (31 - coarse_shift), dtype=torch.float64, device=probs.device)
    mass.scatter_add_(1, coarse, probs.double())
    from_top = mass.flip(-1).cumsum(-1)
    crosses = from_top > top_p
    j = crosses.to(torch.uint8).argmax(-1, keepdim=True)
    bucket = mass.shape[1] - 1 - j
    above = from_top.gather(-1, j) - mass.gather(-1, bucket)  # mass of the buckets above it
    inside = (coarse == bucket) & crosses.any(-1, keepdim=True)
    rows, cols = inside.nonzero(as_tuple=True)
    k = key[rows, cols]
    order = ((rows << 31) | (2 ** 31 - 1 - k.long())).argsort()  # by row, most probable first
    rows, cols, k = rows[order], cols[order], k[order]
    v = probs[rows, cols].double()
    run = v.cumsum(0)
    starts = torch.searchsorted(rows, torch.arange(n, device=rows.device))
    before_row = torch.where(starts > 0, run[(starts - 1).clamp(min=0)], torch.zeros_like(run[:1]))
    # mass strictly above each token; ties take the mass above their first member
    before = above.squeeze(-1)[rows] + run - v - before_row[rows]
    tie_first = torch.ones_like(k, dtype=torch.bool)
    tie_first[1:] = (k[1:] != k[:-1]) | (rows[1:] != rows[:-1])
    group = tie_first.cumsum(0) - 1
    before = before[tie_first][group]
    keep = before <= top_p
    # a row whose whole mass is <= top_p (no bucket crosses) keeps every token with probability > 0
    thr = torch.ones(n, dtype=torch.int32, device=probs.device)  # the smallest kept bit pattern
    thr = thr.scatter_reduce(0, rows[keep], k[keep], reduce="amin", include_self=False)
    return key >= thr.unsqueeze(-1)


def _nucleus_sample(probs: torch.Tensor, u: torch.Tensor, top_p: float,
                    widths: Sequence[int] = (64, 1024)) -> torch.Tensor:
    """Token ids drawn from each row's nucleus. Peaked rows (whose top-``width`` already holds
    ``top_p`` of the mass) draw from their sorted top candidates; the rest, flat rows such as a
    fresh head predicts, draw in vocabulary order from ``nucleus_mask`` (a whole-vocabulary
    sort cost ~30x a top-64 on CPU, more than the forward pass it follows)."""
    n, vocab = probs.shape
    tokens = torch.empty(n, dtype=torch.long, device=probs.device)
    rows = torch.arange(n, device=probs.device)
    left = probs
    for width in widths:
        width = min(width, vocab)
        # a top-w holds at most w times the row's largest probability: skip the rows it cannot hold
        tried = (left.amax(-1) * width > top_p) | (width == vocab)
        if not bool(tried.any()):
            continue
        vals, idx = (left if bool(tried.all()) else left[tried]).topk(width, dim=-1)
        held = vals.sum(-1) > top_p
        done = tried.nonzero(as_tuple=True)[0][held]  # positions in ``left``
        picked = _inverse_cdf(_sorted_nucleus(vals[held], top_p), u[rows[done]])
        tokens[rows[done]] = idx[held].gather(-1, picked.unsqueeze(-1)).squeeze(-1)
        rest = torch.ones_like(tried)
        rest[done] = False
        rows, left = rows[rest], left[rest]
        if not rows.numel():
            return tokens
    weights = left.masked_fill(~nucleus_mask(left, top_p), 0.0)
    tokens[rows] = _inverse_cdf(weights, u[rows])
    return tokens


def _sample(logits: torch.Tensor, u: torch.Tensor, top_k: int,
            top_p: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF sampling from the top-k / nucleus-filtered distribution.

    ``logits`` [N, V] (already tempered, forbidden ids at -inf), ``u`` [N] uniforms.
    Returns (token ids [N], probability of each drawn token under the unfiltered
    distribution [N], used as the confidence for committing).
    """
    probs = torch.softmax(logits, dim=-1)
    if top_k and top_k < probs.shape[-1]:
        vals, idx = probs.topk(top_k, dim=-1)
        tokens = idx.gather(-1, _inverse_cdf(_sorted_nucleus(vals, top_p), u).unsqueeze(-1)).squeeze(-1)
    elif top_p < 1.0:
        tokens = _nucleus_sample(probs, u, top_p)
    else:  # plain sampling: no need to sort the vocabulary
        tokens = _inverse_cdf(probs, u)
    conf = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, conf


def reverse_fill(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 masked: torch.Tensor, steps: int = 1, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, forbidden_ids: Iterable[int] = (),
                 generator: Generators = None) -> torch.Tensor:
    """Reverse process: fill every ``masked`` position of ``input_ids`` in ``steps`` iterations.

    ``input_ids`` must already hold the mask token at the masked positions (that id is
    forbidden automatically, as are ``forbidden_ids``). Each iteration predicts all
    still-masked positions at once, samples a token per position with temperature /
    top-k / top-p, and commits the ``ceil(remaining / iterations_left)`` most confident
    ones per row; the rest stay masked and are predicted again with more context.
    ``steps = 1`` fills everything in one pass. ``generator`` is one seeded generator for
    the batch or one per row (row-wise draws make results independent of batching).
    Runs in eval mode without gradients and restores the previous mode. Returns new ids.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    ids = input_ids.clone()
    still = masked.bool() & attention_mask.bool()
    if not bool(still.any()):
        return ids
    forbidden = sorted({int(i) for i in forbidden_ids} | set(ids[still].unique().tolist()))
    forbid: Optional[torch.Tensor] = None  # built once the vocabulary size is known
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for it in range(steps):
                left = still.sum(dim=1)
                if int(left.max()) == 0:
                    break
                iters_left = steps - it
                n_commit = (left + iters_left - 1) // iters_left  # ceil
                logits = masked_lm_logits(model, ids, attention_mask, still).float() / temperature
                if forbid is None:
                    forbid = _forbid_mask(logits.shape[-1], forbidden, logits.device)
                logits[:, forbid] = float("-inf")
                u = _uniforms(attention_mask, generator).to(ids.device)[still]
                tokens, conf = _sample(logits, u, top_k, top_p)
                score = torch.full(ids.shape, float("-inf"), device=ids.device)
                score[still] = conf
                order = score.argsort(dim=1, descending=True, stable=True)
                rank = order.argsort(dim=1, stable=True)
                commit = still & (rank < n_commit.unsqueeze(1))
                proposal = ids.clone()
                proposal[still] = tokens
                ids = torch.where(commit, proposal, ids)
                still = still & ~commit
    finally:
        model.train(was_training)
    return ids


def source_masks(importance: torch.Tensor, maskable: torch.Tensor, attention_mask: torch.Tensor,
                 source_ids: Sequence[str], steps: Sequence[int], T: int, lam: float,
                 seed: int) -> torch.Tensor:
    """Forward-process masks for a batch of (source, step) rows: bool [B, L].

    Row b is masked by ``schedule.forward_masks`` at ``steps[b]`` with uniforms from a
    generator seeded by ``(seed, source_ids[b])`` over the row's attended positions, so every
    row of the same source (any step, any batch, any padding) sees the same uniforms and
    its masks are nested across steps.
    """
    masked = torch.zeros_like(maskable, dtype=torch.bool)
    attended = attention_mask.bool()
    for b, (sid, step) in enumerate(zip(source_ids, steps)):
        g = torch.Generator().manual_seed(derive_seed(seed, "mask", sid))
        pos = attended[b].nonzero(as_tuple=True)[0]  # works for left or right padding
        m = forward_masks(importance[b, pos].unsqueeze(0), maskable[b, pos].unsqueeze(0),
                          [int(step)], T, lam, g)
        masked[b, pos] = m[0, 0]
    return masked


def splice_text(tokenizer, text: str, new_ids: Sequence[int], max_length: int) -> Tuple[str, List[List[int]]]:
    """The original ``text`` with only its rebuilt words replaced: (new text, changed spans).

    ``new_ids`` are the text-token ids after the reverse process, in the order the tokenizer
    splits ``text`` alone (truncated texts: a prefix). A word whose pieces are all unchanged
    keeps its exact characters (casing, spacing, emoji, handles), as does everything between
    words and any truncated tail; a word with a changed piece is rebuilt from its new pieces,
    joined into one word. Spans are ``[start, end)`` character offsets in the new text.
    Tokenizers without offsets fall back to decoding the whole sequence.
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        words = enc.word_ids()
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        decoded = tokenizer.decode(list(new_ids), skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()
        return decoded, ([[0, len(decoded)]] if decoded != text else [])
    old_ids = enc["input_ids"]
    n = min(len(new_ids), len(old_ids))
    groups: List[List[int]] = []  # token positions of each word, in order
    for j in range(n):
        if groups and words[j] is not None and words[j] == words[groups[-1][0]]:
            groups[-1].append(j)
        else:
            groups.append([j])
    out, spans, cursor = [], [], 0
    for group in groups:
        if all(int(new_ids[j]) == int(old_ids[j]) for j in group):
            continue
        start, end = offsets[group[0]][0], offsets[group[-1]][1]
        pieces = tokenizer.convert_ids_to_tokens([int(new_ids[j]) for j in group])
        word = tokenizer.convert_tokens_to_string(pieces).strip()
        if word.startswith("##"):  # a continuation piece rebuilt at a word start
            word = word[2:]
        out.append(text[cursor:start])
        begin = sum(len(x) for x in out)
        out.append(word)
        spans.append([begin, begin + len(word)])
        cursor = end
    out.append(text[cursor:])
    return "".join(out), spans


def plan_per_sample(frame: pd.DataFrame, n: int, steps: Sequence[int]) -> List[PlanItem]:
    """G/E policy: ``n`` pseudo samples per original; the k-th uses ``steps[k % len(steps)]``
    (n = 4 with a 4-step group gives one per step, as in the paper). Rows are positional."""
    if not steps:
        raise ValueError("steps must not be empty")
    return [(i, int(steps[k % len(steps)])) for i in range(len(frame)) for k in range(n)]


def plan_balance(frame: pd.DataFrame, steps: Sequence[int], seed: int) -> List[PlanItem]:
    """B/D policy: pseudo samples for minority classes until each reaches the majority count.

    Sources of a class are taken round-robin in a seeded random order; within a round the
    steps rotate through the group, and a source's successive pseudo samples get
    successive steps (so the same source is not re-masked at the same level while steps
    remain). Rows are positional indices into ``frame``.
    """
    if not steps:
        raise ValueError("steps must not be empty")
    labels = frame["label"].astype(str).tolist()
    counts = pd.Series(labels).value_counts()
    if counts.empty:
        return []
    target = int(counts.max())
    gen = torch.Generator().manual_seed(int(seed))
    plan: List[PlanItem] = []
    for label in sorted(counts.index):
        rows = [i for i, y in enumerate(labels) if y == label]
        need = target - len(rows)
        if need <= 0:
            continue
        order = [rows[j] for j in torch.randperm(len(rows), generator=gen).tolist()]
        for j in range(need):
            rnd, pos = divmod(j, len(order))
            plan.append((order[pos], int(steps[(pos + rnd) % len(steps)])))
    return plan


def number_plan(plan: Sequence[Sequence[int]]) -> List[Tuple[int, int, int]]:
    """``(row, step)`` items -> ``(row, step, k)``, k counting each row's items in plan order.

    Items that already carry a k are kept as they are. Number a plan once, before
    splitting it across workers, so that pseudo ids (``<source_id>~p<k>``) and the random
    streams derived from them stay unique and identical however the work is split.
    """
    counts: dict = {}
    out: List[Tuple[int, int, int]] = []
    for item in plan:
        row, step = int(item[0]), int(item[1])
        if len(item) > 2:
            k = int(item[2])
        else:
            k = counts.get(row, 0)
        counts[row] = max(counts.get(row, 0), k + 1)
        out.append((row, step, k))
    return out


def generate_pseudo_samples(model: nn.Module, tokenizer, frame: pd.DataFrame,
                            importance: ImportanceLike, label_token_ids: Mapping[str, int],
                            cfg: GeneratorConfig, plan: Sequence[Sequence[int]], seed: int,
                            batch_size: int = 32, max_length: int = 128) -> pd.DataFrame:
    """Make one pseudo sample per plan item: mask the source at its step, rebuild, decode.

    ``frame`` follows the schema (``id``, ``text``, ``label``); ``importance`` is per-text-
    token importance per row (see ``diffusion.importance_for_frame``; None = plain linear
    schedule); ``plan`` holds ``(positional row, step)`` pairs, or ``(row, step, k)``
    triples from ``number_plan`` when a plan is split across workers. Returns a frame with
    ``PSEUDO_COLUMNS``: id ``<source_id>~p<k>`` (k counts that source's items in the plan),
    the decoded text part only, the inherited label, ``split="train"``, ``is_pseudo=True``,
    the source id, the step, ``mask_ratio`` (masked / maskable text tokens) and
    ``changed_ratio`` (text tokens that differ from the original / text tokens). A source
    too short to get any mask at its step is returned unchanged (mask_ratio 0).
    Deterministic for a fixed seed, independent of ``batch_size``.
    """
    if not plan:
        from dcls_core.augment import empty_pseudo_frame

        return empty_pseudo_frame()
    device = next(model.parameters()).device
    ids_col = frame["id"].astype(str).tolist()
    texts = frame["text"].astype(str).tolist()
    labels = frame["label"].astype(str).tolist()
    per_row_importance = importance_for_frame(frame, importance)
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError("the tokenizer has no mask token; a masked-LM tokenizer is needed")
    out_emb = model.get_output_embeddings()
    vocab = out_emb.weight.shape[0] if out_emb is not None else model.config.vocab_size
    forbidden = forbidden_token_ids(tokenizer, label_token_ids, vocab)

    keyed = number_plan(plan)
    for row, _, _ in keyed:
        if not 0 <= row < len(frame):
            raise IndexError(f"plan row {row} outside a frame of {len(frame)} rows")
    seen = {row for row, _, _ in keyed}
    # Batches of similar length pad little (the reverse process runs k forward passes per batch);
    # every draw is keyed by source and sample, so the samples do not depend on the batching,
    # and the records are put back in plan order at the end.
    sources = sorted(seen)
    tokens = tokenizer([texts[r] for r in sources], truncation=True, max_length=max_length)["input_ids"]
    lengths = {r: len(ids) for r, ids in zip(sources, tokens)}
    by_length = sorted(range(len(keyed)), key=lambda i: lengths[keyed[i][0]])

    records: List[Optional[Dict[str, Any]]] = [None] * len(keyed)
    for start in range(0, len(keyed), batch_size):
        positions = by_length[start:start + batch_size]
        chunk = [keyed[i] for i in positions]
        rows = [r for r, _, _ in chunk]
        batch = encode_prompted(tokenizer, [texts[r] for r in rows], [labels[r] for r in rows],
                                label_token_ids, max_length)
        imp = place_importance([per_row_importance[r] for r in rows], batch)
        maskable = batch["maskable"]
        masked = source_masks(imp, maskable, batch["attention_mask"], [ids_col[r] for r in rows],
                              [step for _, step, _ in chunk], cfg.T, cfg.lam, seed)
        original = batch["input_ids"]
        noisy = original.masked_fill(masked, int(mask_id))
        gens = [torch.Generator().manual_seed(derive_seed(seed, "fill", ids_col[r], k))
                for r, _, k in chunk]
        filled = reverse_fill(model, noisy.to(device), batch["attention_mask"].to(device),
                              masked.to(device), steps=cfg.reverse_steps,
                              temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                              forbidden_ids=forbidden, generator=gens).cpu()
        for b, (position, (r, step, k)) in enumerate(zip(positions, chunk)):
            text_pos = maskable[b]
            new_ids = filled[b][text_pos]
            n_text = int(text_pos.sum())
            n_masked = int(masked[b].sum())
            changed = int((new_ids != original[b][text_pos]).sum())
            text, spans = splice_text(tokenizer, texts[r], new_ids.tolist(), max_length)
            records[position] = {
                "id": f"{ids_col[r]}~p{k}", "text": text, "label": labels[r], "split": "train",
                "is_pseudo": True, "source_id": ids_col[r], "step": step,
                "mask_ratio": n_masked / n_text if n_text else 0.0,
                "changed_ratio": changed / n_text if n_text else 0.0,
                "changed_spans": spans,
            }
    log.info("generated %d pseudo samples from %d sources", len(records), len(seen))
    return pd.DataFrame.from_records(records, columns=PSEUDO_COLUMNS)
