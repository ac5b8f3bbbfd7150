"""Baseline augmenters behind the ``Augmenter`` interface: ``eda``, ``aeda``, ``mlm``, ``resample``,
``backtranslation``.

Every baseline follows the run's policy with DiffusionCLS's own plan code (``generation.plan_per_sample``
for G/E, ``generation.plan_balance`` for B/D, ``generation.number_plan`` for the ``k`` of a source),
writes the pseudo schema (``augment.PSEUDO_COLUMNS``: ids ``<source_id>~p<k>``, the inherited label,
``step`` 0, ``changed_ratio``, ``changed_spans``) and is deterministic for a seed: each pseudo sample's
randomness is derived from ``(seed, source id, k)``, so rows do not depend on the order or batching of
the plan (backtranslation: for a seed and batch size, see ``BacktranslationAugmenter``).

Word-level baselines (eda, aeda, backtranslation) edit *units*: whitespace-separated tokens, and single
characters of scripts written without spaces (Chinese, Japanese, Korean), so they work for any
language. Their ``changed_ratio`` counts changed units over the source's units (difflib), the masked-LM
ones (mlm, like diffusion) changed text tokens over text tokens; ``changed_spans`` are ``[start, end)``
character offsets of the changed parts in the new text for all of them. A text with nothing to edit
(empty, or no word an operation applies to) gives an unchanged pseudo row (``changed_ratio`` 0) rather
than none, so the plan's ids always all exist.
"""
from __future__ import annotations

import difflib
import io
import logging
import random
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd

from dcls_core.augment import PSEUDO_COLUMNS, empty_pseudo_frame, register_augmenter
from dcls_core.config import (AEDAConfig, AugmentConfig, BacktranslationConfig, ConfigError, EDAConfig,
                              GeneratorConfig, MLMConfig, ModelConfig)
from dcls_core.generation import derive_seed, number_plan, plan_balance, plan_per_sample

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
PlanKey = Tuple[int, int, int]  # (positional row, step, k)


class MissingResourceError(ConfigError):
    """The chosen augmenter needs something that is not installed (names what and how to install it)."""


# --------------------------------------------------------------------------- plan and records
def baseline_plan(train_df: pd.DataFrame, augment_cfg: AugmentConfig, seed: int) -> List[PlanKey]:
    """``(row, 0, k)`` items by the run's policy: G/E ``augment.n`` per original, B/D the minority
    classes up to the majority count (DiffusionCLS's plan code; baselines have no diffusion step)."""
    frame = train_df.reset_index(drop=True)
    if augment_cfg.policy == "balance":
        plan = plan_balance(frame, [0], seed)
    else:
        plan = plan_per_sample(frame, augment_cfg.n, [0])
    return number_plan(plan)


def pseudo_record(source: Dict[str, Any], k: int, text: str, changed_ratio: float,
                  changed_spans: List[List[int]], mask_ratio: float = 0.0) -> Dict[str, Any]:
    sid = str(source["id"])
    return {"id": f"{sid}~p{k}", "text": text, "label": str(source["label"]), "split": "train",
            "is_pseudo": True, "source_id": sid, "step": 0, "mask_ratio": float(mask_ratio),
            "changed_ratio": float(changed_ratio), "changed_spans": changed_spans}


def pseudo_frame(records: List[Dict[str, Any]]) -> pd.DataFrame:
    """Records -> the pseudo schema, sorted by id (an empty plan gives the typed empty frame)."""
    if not records:
        return empty_pseudo_frame()
    out = pd.DataFrame.from_records(records, columns=PSEUDO_COLUMNS)
    out["step"] = out["step"].astype("int64")
    return out.sort_values("id", kind="stable").reset_index(drop=True)


def _sources(train_df: pd.DataFrame) -> List[Dict[str, Any]]:
    frame = train_df.reset_index(drop=True)
    return [{"id": str(i), "text": "" if t is None else str(t), "label": str(y)}
            for i, t, y in zip(frame["id"], frame["text"], frame["label"])]


# --------------------------------------------------------------------------- word units
_NO_SPACE_SCRIPTS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_UNIT_RE = re.compile(f"[{_NO_SPACE_SCRIPTS}]|[^\\s{_NO_SPACE_SCRIPTS}]+")
_NO_SPACE_RE = re.compile(f"[{_NO_SPACE_SCRIPTS}]")

Unit = Tuple[Optional[str], str]  # (whitespace before it in the source, or None for an inserted unit; token)


def split_units(text: str) -> List[Unit]:
    """The text's units with the whitespace in front of each (so untouched spacing survives)."""
    units: List[Unit] = []
    cursor = 0
    for m in _UNIT_RE.finditer(text):
        units.append((text[cursor:m.start()], m.group(0)))
        cursor = m.end()
    return units


def _unspaced(token: str) -> bool:
    return bool(_NO_SPACE_RE.fullmatch(token))


def render_units(units: Sequence[Unit]) -> Tuple[str, List[Tuple[int, int]]]:
    """Units -> (text, each unit's [start, end)). Source whitespace is kept; an inserted unit, or
    two units that became neighbours without whitespace, get one space unless one of them is a
    character of a script written without spaces."""
    out: List[str] = []
    offsets: List[Tuple[int, int]] = []
    length = 0
    prev: Optional[str] = None
    for gap, token in units:
        if prev is None:
            gap = ""
        elif not gap:
            gap = "" if (_unspaced(prev) or _unspaced(token)) else " "
        length += len(gap)
        out.append(gap + token)
        offsets.append((length, length + len(token)))
        length += len(token)
        prev = token
    return "".join(out), offsets


def unit_changes(old: Sequence[Unit], new: Sequence[Unit], source_text: str
                 ) -> Tuple[str, float, List[List[int]]]:
    """(new text, changed_ratio, changed_spans) of an edit of ``old`` into ``new``.

    Unchanged tokens give the source text back exactly. Otherwise the units are aligned with
    difflib: every replaced, inserted or deleted stretch counts max(old, new) units, and each
    stretch with new units is one span of the new text.
    """
    old_tokens = [t for _, t in old]
    new_tokens = [t for _, t in new]
    if old_tokens == new_tokens:
        return source_text, 0.0, []
    text, offsets = render_units(new)
    changed = 0
    spans: List[List[int]] = []
    matcher = difflib.SequenceMatcher(None, old_tokens, new_tokens, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        changed += max(i2 - i1, j2 - j1)
        if j2 > j1:
            spans.append([offsets[j1][0], offsets[j2 - 1][1]])
    return text, min(1.0, changed / max(1, len(old_tokens))), spans


# --------------------------------------------------------------------------- WordNet
# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)). Debian's wordnet-base ships the database
# without this small index, which nltk's reader insists on opening; only Synset.lexname() uses it.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl").split()
_LEXNAME_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj",
                  "index.adv")
WORDNET_HINT = ("EDA needs WordNet: install Debian's wordnet-base (apt-get install -y --no-install-recommends "
                "wordnet-base; `make install` does it) or point augment.eda.wordnet_dir at a WordNet 3.0 "
                "database folder")


def check_wordnet(folder: PathLike) -> Path:
    """The WordNet folder, or ``MissingResourceError`` naming the missing package."""
    try:
        import nltk  # noqa: F401
    except ImportError:
        raise MissingResourceError("EDA reads WordNet with the Python package nltk, which is not installed: "
                                   "pip install nltk (a dependency of dcls: pip install -e .)") from None
    path = Path(folder).expanduser()
    missing = [name for name in _WORDNET_FILES if not (path / name).is_file()]
    if missing:
        raise MissingResourceError(f"WordNet not found in {path} (missing {', '.join(missing[:3])}). {WORDNET_HINT}")
    return path


def load_wordnet(folder: PathLike):
    """An nltk ``WordNetCorpusReader`` on a WordNet database folder (Debian's /usr/share/wordnet or an
    nltk_data ``corpora/wordnet`` folder); about a second."""
    path = check_wordnet(folder).resolve()
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # nltk only opens files under its data roots (nltk.pathsec): make this folder one
    if str(path) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(str(path))
    has_lexnames = (path / "lexnames").is_file()

    class _Reader(WordNetCorpusReader):
        def open(self, file):  # noqa: A003 - nltk's name
            if file == "lexnames" and not has_lexnames:
                return io.StringIO("".join(f"{i:02d}\t{name}\t{_LEXNAME_POS[name.split('.')[0]]}\n"
                                           for i, name in enumerate(_LEXNAMES)))
            return super().open(file)

        def map_wn(self, version="wordnet"):
            return None  # the map to nltk's own WordNet copy only serves Open Multilingual WordNet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
        return _Reader(str(path), None)


# Function words EDA never replaces or inserts synonyms for (the EDA paper skips stop words).
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just let me more
most my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves also s t don isn aren wasn weren hasn haven hadn doesn didn
won wouldn shan shouldn can't cannot couldn mustn needn ll re ve d m o y
""".split())
_AFFIX_RE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\-][^\W\d_]+)*")


def _word(token: str) -> Tuple[str, str, str]:
    """(leading punctuation, word, trailing punctuation) of a token."""
    m = _AFFIX_RE.match(token)
    return m.group(1), m.group(2), m.group(3)


def _match_case(synonym: str, like: str) -> str:
    return synonym[:1].upper() + synonym[1:] if like[:1].isupper() else synonym


class WordNetSynonyms:
    """word -> WordNet synonyms (lemma names of its synsets, '_' read as a space, letters only),
    cached; loads the database on first use."""

    def __init__(self, folder: PathLike):
        self.folder = folder
        self._wn = None
        self._cache: Dict[str, List[str]] = {}

    def __call__(self, word: str) -> List[str]:
        key = word.lower()
        if key not in self._cache:
            if self._wn is None:
                self._wn = load_wordnet(self.folder)
            found: Dict[str, None] = {}
            for synset in self._wn.synsets(key):
                for lemma in synset.lemmas():
                    name = lemma.name().replace("_", " ")
                    if name.lower() != key and re.fullmatch(r"[A-Za-z][A-Za-z '\-]*", name):
                        found[name] = None
            self._cache[key] = list(found)
        return self._cache[key]


# --------------------------------------------------------------------------- EDA operations
def _eligible(units: Sequence[Unit]) -> List[int]:
    """Positions of content words (letters, not a stop word)."""
    out = []
    for i, (_, token) in enumerate(units):
        word = _word(token)[1]
        if _WORD_RE.fullmatch(word) and word.lower() not in STOP_WORDS:
            out.append(i)
    return out


def synonym_replacement(units: List[Unit], n: int, synonyms: Callable[[str], List[str]],
                        rng: random.Random) -> List[Unit]:
    """Replace up to ``n`` distinct content words (every occurrence, as EDA does) by a random synonym."""
    out = list(units)
    words = list(dict.fromkeys(_word(units[i][1])[1].lower() for i in _eligible(units)))
    rng.shuffle(words)
    done = 0
    for word in words:
        options = synonyms(word)
        if not options:
            continue
        choice = rng.choice(options)
        for i, (gap, token) in enumerate(out):
            pre, core, post = _word(token)
            if core.lower() == word:
                out[i] = (gap, pre + _match_case(choice, core) + post)
        done += 1
        if done >= n:
            break
    return out


def random_insertion(units: List[Unit], n: int, synonyms: Callable[[str], List[str]],
                     rng: random.Random) -> List[Unit]:
    """Insert a synonym of a random content word at a random position, ``n`` times."""
    out = list(units)
    candidates = [w for w in dict.fromkeys(_word(units[i][1])[1].lower() for i in _eligible(units)) if synonyms(w)]
    if not candidates:
        return out
    for _ in range(n):
        synonym = rng.choice(synonyms(rng.choice(candidates)))
        out.insert(rng.randint(0, len(out)), (None, synonym))
    return out


def random_swap(units: List[Unit], n: int, rng: random.Random) -> List[Unit]:
    """Swap the tokens of two random positions ``n`` times (the whitespace stays in place)."""
    out = list(units)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.sample(range(len(out)), 2)
        (gi, ti), (gj, tj) = out[i], out[j]
        out[i], out[j] = (gi, tj), (gj, ti)
    return out


def random_deletion(units: List[Unit], p: float, rng: random.Random) -> List[Unit]:
    """Delete each unit with probability ``p``; a one-unit text stays, and one unit always survives."""
    if len(units) <= 1:
        return list(units)
    kept = [u for u in units if rng.random() >= p]
    return kept or [units[rng.randrange(len(units))]]


# --------------------------------------------------------------------------- augmenters
class _TextAugmenter:
    """Shared loop of the per-text baselines: one ``edit(source, k, rng) -> (text, ratio, spans)`` call
    per plan item, with ``rng`` seeded from ``(seed, name, source id, k)``."""

    name = "text"

    def __init__(self, augment_cfg: Optional[AugmentConfig] = None, **_: Any):
        self.augment_cfg = augment_cfg or AugmentConfig(method=self.name)
        self.stats: Dict[str, Any] = {}

    def edit(self, source: Dict[str, Any], k: int, rng: random.Random, seed: int
             ) -> Tuple[str, float, List[List[int]]]:
        raise NotImplementedError

    def augment(self, train_df: pd.DataFrame, label_names: List[str], seed: int) -> pd.DataFrame:
        sources = _sources(train_df)
        records = []
        for row, _, k in baseline_plan(train_df, self.augment_cfg, seed):
            source = sources[row]
            rng = random.Random(derive_seed(seed, self.name, source["id"], k))
            text, ratio, spans = self.edit(source, k, rng, seed)
            records.append(pseudo_record(source, k, text, ratio, spans))
        out = pseudo_frame(records)
        self.stats = {"pseudo_rows": len(out), "unchanged": int((out["changed_ratio"] == 0).sum()) if len(out) else 0}
        log.info("%s: %d pseudo samples from %d sources (%d unchanged)", self.name, len(out),
                 out["source_id"].nunique() if len(out) else 0, self.stats["unchanged"])
        return out


@register_augmenter("eda")
class EDAAugmenter(_TextAugmenter):
    """EDA (Wei & Zou, 2019): synonym replacement, random insertion, random swap, random deletion.

    Each pseudo sample applies one operation, as in the EDA code: a source's samples cycle through
    the operations (those with a rate > 0) in an order drawn per source, so n = 4 gives one of each.
    SR/RI change max(1, int(alpha * units)) words, RS swaps that many pairs, RD deletes each unit with
    probability p_rd (the paper's alpha = 0.1 for all four). Synonyms come from WordNet (English);
    for other languages SR/RI find none and leave the text as it is.
    """

    name = "eda"
    OPERATIONS = ("sr", "ri", "rs", "rd")

    def __init__(self, augment_cfg: Optional[AugmentConfig] = None,
                 synonyms: Optional[Callable[[str], List[str]]] = None, **kwargs: Any):
        super().__init__(augment_cfg, **kwargs)
        self.cfg: EDAConfig = self.augment_cfg.eda
        if synonyms is None:
            check_wordnet(self.cfg.wordnet_dir)  # fail now, with the install hint, not mid-run
            synonyms = WordNetSynonyms(self.cfg.wordnet_dir)
        self.synonyms = synonyms
        rates = {"sr": self.cfg.alpha_sr, "ri": self.cfg.alpha_ri, "rs": self.cfg.alpha_rs, "rd": self.cfg.p_rd}
        self.rates = {op: rate for op, rate in rates.items() if rate > 0}

    def operation(self, source_id: str, k: int, seed: int) -> str:
        """The operation of a source's k-th pseudo sample."""
        order = list(self.rates)
        random.Random(derive_seed(seed, "eda-order", source_id)).shuffle(order)
        return order[k % len(order)]

    def edit(self, source, k, rng, seed):
        units = split_units(source["text"])
        op = self.operation(source["id"], k, seed)
        rate = self.rates[op]
        n = max(1, int(rate * len(units)))
        if op == "sr":
            new = synonym_replacement(units, n, self.synonyms, rng)
        elif op == "ri":
            new = random_insertion(units, n, self.synonyms, rng)
        elif op == "rs":
            new = random_swap(units, n, rng)
        else:
            new = random_deletion(units, rate, rng)
        return unit_changes(units, new, source["text"])


@register_augmenter("aeda")
class AEDAAugmenter(_TextAugmenter):
    """AEDA (Karimi et al., 2021): insert between 1 and int(ratio * units + 1) punctuation marks at
    random positions (the paper's ratio 0.3 and marks . ; ? : ! ,). Nothing else changes, so it works
    for any language."""

    name = "aeda"

    def edit(self, source, k, rng, seed):
        cfg: AEDAConfig = self.augment_cfg.aeda
        units = split_units(source["text"])
        if not units:
            return source["text"], 0.0, []
        count = rng.randint(1, max(1, int(cfg.ratio * len(units) + 1)))
        before = set(rng.sample(range(len(units)), min(count, len(units))))
        new: List[Unit] = []
        for i, unit in enumerate(units):
            if i in before:
                new.append((None, rng.choice(list(cfg.marks))))
            new.append(unit)
        return unit_changes(units, new, source["text"])


@register_augmenter("resample")
class ResampleAugmenter(_TextAugmenter):
    """Copies of the sources: with ``augment.policy=balance`` the minority classes are duplicated up to
    the majority count, the control for DiffusionCLS's B/D policy (same rows, no new text); with
    ``per_sample`` each original is repeated ``augment.n`` times (upweighting)."""

    name = "resample"

    def edit(self, source, k, rng, seed):
        return source["text"], 0.0, []


# --------------------------------------------------------------------------- masked-LM substitution
def mlm_substitute(model, tokenizer, sources: Sequence[Dict[str, Any]], items: Sequence[Tuple[int, int]],
                   mask_prob: float, generator_cfg: GeneratorConfig, seed: int, max_length: int,
                   batch_size: int = 32) -> List[Dict[str, Any]]:
    """Pseudo records for ``items`` ``(source index, k)``: mask each text token with probability
    ``mask_prob`` (at least one), no label prompt, and fill the masks with the masked LM's reverse
    process (``generation.reverse_fill`` with the generator's decoding settings). The mask and fill
    draws are seeded per (source id, k), so batching changes no mask, and a fill only through the
    floating-point rounding of differently padded batches (as in ``generation``)."""
    import torch

    from dcls_core.generation import forbidden_token_ids, reverse_fill, splice_text
    from dcls_core.prompting import encode_plain

    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError("the tokenizer has no mask token; the mlm augmenter needs a masked LM")
    device = next(model.parameters()).device
    out_emb = model.get_output_embeddings()
    vocab = out_emb.weight.shape[0] if out_emb is not None else model.config.vocab_size
    forbidden = forbidden_token_ids(tokenizer, {}, vocab)
    records = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = encode_plain(tokenizer, [sources[r]["text"] for r, _ in chunk], max_length)
        text_mask = batch["text_mask"]
        masked = torch.zeros_like(text_mask)
        for b, (r, k) in enumerate(chunk):
            pos = text_mask[b].nonzero(as_tuple=True)[0]
            if len(pos) == 0:
                continue
            g = torch.Generator().manual_seed(derive_seed(seed, "mlm-mask", sources[r]["id"], k))
            u = torch.rand(len(pos), generator=g)
            pick = u < mask_prob
            if not bool(pick.any()):
                pick[int(u.argmin())] = True
            masked[b, pos[pick]] = True
        original = batch["input_ids"]
        gens = [torch.Generator().manual_seed(derive_seed(seed, "mlm-fill", sources[r]["id"], k)) for r, k in chunk]
        filled = reverse_fill(model, original.masked_fill(masked, int(mask_id)).to(device),
                              batch["attention_mask"].to(device), masked.to(device),
                              steps=generator_cfg.reverse_steps, temperature=generator_cfg.temperature,
                              top_k=generator_cfg.top_k, top_p=generator_cfg.top_p, forbidden_ids=forbidden,
                              generator=gens).cpu()
        for b, (r, k) in enumerate(chunk):
            source = sources[r]
            text_pos = text_mask[b]
            n_text = int(text_pos.sum())
            if n_text == 0:
                records.append(pseudo_record(source, k, source["text"], 0.0, []))
                continue
            new_ids = filled[b][text_pos]
            changed = int((new_ids != original[b][text_pos]).sum())
            text, spans = splice_text(tokenizer, source["text"], new_ids.tolist(), max_length)
            records.append(pseudo_record(source, k, text, changed / n_text, spans,
                                         mask_ratio=int(masked[b].sum()) / n_text))
    return records


@register_augmenter("mlm")
class MLMAugmenter:
    """Masked-LM word substitution (the CBERT / nlpaug ``ContextualWordEmbsAug`` family) with the run's
    generator *before* diffusion training: the warmed-up masked LM (or the checkpoint's own MLM head
    when it needs no warm-up), uniform masking (``augment.mlm.mask_prob``), no label prompt.

    ``checkpoint``: a warm-up folder already made (the pipeline's cached warm-up task); without it the
    warm-up runs here (cached under ``cache_dir``) on the run's corpus, as ``DiffusionAugmenter`` does.
    """

    name = "mlm"

    def __init__(self, model_cfg: Optional[ModelConfig] = None, generator_cfg: Optional[GeneratorConfig] = None,
                 augment_cfg: Optional[AugmentConfig] = None, max_length: int = 128,
                 cache_dir: PathLike = "runs/cache", data_root: Optional[PathLike] = None,
                 dev_df: Optional[pd.DataFrame] = None, exclude_texts: Sequence[str] = (),
                 checkpoint: Optional[PathLike] = None, **_: Any):
        self.model_cfg = model_cfg or ModelConfig()
        self.generator_cfg = generator_cfg or GeneratorConfig()
        self.augment_cfg = augment_cfg or AugmentConfig(method="mlm")
        self.max_length = max_length
        self.cache_dir = Path(cache_dir)
        self.data_root = data_root
        self.dev_df = dev_df
        self.exclude_texts = list(exclude_texts)
        self.checkpoint = checkpoint
        self.stats: Dict[str, Any] = {}

    def masked_lm(self, train_df: pd.DataFrame):
        """(model, tokenizer, warm-up stats) of the run's warmed-up generator."""
        from dcls_core.warmup import load_cached_warmup, load_or_warmup, run_corpus

        if self.checkpoint:
            model, tokenizer, stats = load_cached_warmup(self.checkpoint)
            return model, tokenizer, dict(stats, skipped=False, cached=True, path=str(self.checkpoint))
        texts = run_corpus(self.generator_cfg.warmup, train_df["text"].tolist(),
                           self.dev_df["text"].tolist() if self.dev_df is not None else [], self.exclude_texts,
                           self.data_root)
        return load_or_warmup(self.model_cfg, self.generator_cfg.warmup, texts, self.cache_dir,
                              self.generator_cfg.warmup.seed)

    def augment(self, train_df: pd.DataFrame, label_names: List[str], seed: int) -> pd.DataFrame:
        import torch

        items = baseline_plan(train_df, self.augment_cfg, seed)
        if not items:
            return empty_pseudo_frame()
        model, tokenizer, wstats = self.masked_lm(train_df)
        if torch.cuda.is_available():
            model = model.to("cuda")
        cfg: MLMConfig = self.augment_cfg.mlm
        records = mlm_substitute(model, tokenizer, _sources(train_df), [(r, k) for r, _, k in items],
                                 cfg.mask_prob, self.generator_cfg, seed, self.max_length, cfg.batch_size)
        out = pseudo_frame(records)
        self.stats = {"pseudo_rows": len(out), "warmup": {k: wstats.get(k) for k in ("skipped", "cached", "key")},
                      "mean_changed_ratio": float(out["changed_ratio"].mean())}
        log.info("mlm: %d pseudo samples, %.0f %% of text tokens changed on average", len(out),
                 100 * self.stats["mean_changed_ratio"])
        return out


# --------------------------------------------------------------------------- back-translation
@register_augmenter("backtranslation")
class BacktranslationAugmenter:
    """Round-trip translation (source -> pivot -> source) with two seq2seq checkpoints
    (``augment.backtranslation.forward_model`` / ``backward_model``, hub ids or local folders).

    The pivot translation is sampled (``sample``, ``top_p``, ``temperature``) so a source's n pseudo
    samples differ; the way back is greedy. Batched (``batch_size``); sampling draws from a torch
    stream seeded per batch, so rows are deterministic for a seed and batch size. When a model cannot
    be loaded (offline, unknown name), the method is skipped: one warning line, no pseudo samples,
    ``stats["skipped"]`` says why.
    """

    name = "backtranslation"

    def __init__(self, augment_cfg: Optional[AugmentConfig] = None, max_length: int = 128, **_: Any):
        self.augment_cfg = augment_cfg or AugmentConfig(method="backtranslation")
        self.max_length = max_length
        self.stats: Dict[str, Any] = {}

    def _load(self, name: str):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        return AutoModelForSeq2SeqLM.from_pretrained(name), AutoTokenizer.from_pretrained(name)

    def _translate(self, model, tokenizer, texts: List[str], sample: bool) -> List[str]:
        import torch

        cfg: BacktranslationConfig = self.augment_cfg.backtranslation
        enc = tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        device = next(model.parameters()).device
        kwargs: Dict[str, Any] = {"max_new_tokens": self.max_length, "num_beams": 1}
        if sample:
            kwargs.update(do_sample=True, top_p=cfg.top_p, temperature=cfg.temperature)
        else:
            kwargs.update(do_sample=False)
        with torch.no_grad():
            out = model.generate(input_ids=enc["input_ids"].to(device),
                                 attention_mask=enc["attention_mask"].to(device), **kwargs)
        return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]

    def augment(self, train_df: pd.DataFrame, label_names: List[str], seed: int) -> pd.DataFrame:
        import torch

        cfg: BacktranslationConfig = self.augment_cfg.backtranslation
        items = baseline_plan(train_df, self.augment_cfg, seed)
        if not items:
            return empty_pseudo_frame()
        models = {}
        for name in dict.fromkeys((cfg.forward_model, cfg.backward_model)):
            try:
                models[name] = self._load(name)
            except Exception as exc:  # offline, unknown id, missing files: every loader error means "skip"
                reason = f"translation model {name!r} not reachable ({type(exc).__name__}: " \
                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})"
                log.warning("backtranslation skipped: %s; no pseudo samples", reason)
                self.stats = {"skipped": reason, "pseudo_rows": 0}
                return empty_pseudo_frame()
        if torch.cuda.is_available():
            models = {n: (m.to("cuda"), t) for n, (m, t) in models.items()}
        for model, _ in models.values():
            model.eval()
        sources = _sources(train_df)
        records = []
        for start in range(0, len(items), cfg.batch_size):
            chunk = items[start:start + cfg.batch_size]
            texts = [sources[r]["text"] for r, _, _ in chunk]
            with torch.random.fork_rng(devices=[]):  # seeded sampling without touching the caller's stream
                torch.manual_seed(derive_seed(seed, "backtranslation", start))
                pivot = self._translate(*models[cfg.forward_model], texts, sample=cfg.sample)
            back = self._translate(*models[cfg.backward_model], pivot, sample=False)
            for (r, _, k), text in zip(chunk, back):
                source = sources[r]
                text, ratio, spans = unit_changes(split_units(source["text"]), split_units(text), source["text"])
                records.append(pseudo_record(source, k, text, ratio, spans))
        out = pseudo_frame(records)
        self.stats = {"pseudo_rows": len(out), "models": [cfg.forward_model, cfg.backward_model]}
        return out


def ensure_available(augment_cfg: AugmentConfig) -> None:
    """Fail before any compute when the chosen baseline's resources are missing (EDA: WordNet)."""
    if augment_cfg.method == "eda":
        check_wordnet(augment_cfg.eda.wordnet_dir)


__all__ = ["MissingResourceError", "EDAAugmenter", "AEDAAugmenter", "MLMAugmenter", "ResampleAugmenter",
           "BacktranslationAugmenter", "baseline_plan", "split_units", "render_units", "unit_changes",
           "load_wordnet", "check_wordnet", "WordNetSynonyms", "mlm_substitute", "ensure_available"]

