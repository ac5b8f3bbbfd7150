"""Generator warm-up (dcls_core.warmup) on the tiny random model: fast, CPU only."""
import dataclasses
from pathlib import Path

import pytest
import torch

from dcls_core.config import ConfigError, ModelConfig, WarmupConfig
from dcls_core.models import load_masked_lm

# A toy corpus with strong regularities: a masked LM can learn it within a few dozen steps.
SUBJECTS = ["the film", "this movie", "the story", "the acting", "the script", "the ending"]
VERDICTS = ["is great", "is awful", "is wonderful", "is boring", "is brilliant", "is dull"]
TOY = [f"{s} {v} and i {w} it" for s in SUBJECTS for v in VERDICTS for w in ("loved", "hated")]
HELD_OUT = [f"{s} {v} and we {w} it ." for s in SUBJECTS[:3] for v in VERDICTS for w in ("loved", "hated")]


def _cfg(**kw) -> WarmupConfig:
    base = dict(max_steps=60, max_seconds=60, batch_size=16, lr=1e-3, head_lr=3e-3, mask_prob=0.15,
                mask_prob_max=0.4, max_length=32, seed=0)
    base.update(kw)
    return WarmupConfig(**base)


def test_warmup_lowers_held_out_masked_lm_loss(tiny_model_cfg, tokenizer):
    from dcls_core.warmup import masked_lm_eval, warmup_masked_lm

    torch.manual_seed(0)
    model = load_masked_lm(tiny_model_cfg, seed=0)
    before = masked_lm_eval(model, tokenizer, HELD_OUT, 0.15, seed=1)
    stats = warmup_masked_lm(model, tokenizer, TOY, _cfg(), eval_texts=HELD_OUT, log_every=20)
    after = masked_lm_eval(model, tokenizer, HELD_OUT, 0.15, seed=1)
    assert stats["steps"] == 60
    assert stats["vocab_restricted"] == stats["vocab_seen"] < len(tokenizer)
    assert after["ce"] < before["ce"] - 1.0, (before, after)
    assert after["accuracy"] > before["accuracy"]
    # the saved model stays a full-vocabulary masked LM
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)


def test_restricted_vocab_keeps_unseen_tokens_improbable(tiny_model_cfg, tokenizer):
    from dcls_core.warmup import warmup_masked_lm

    model = load_masked_lm(tiny_model_cfg, seed=0)
    warmup_masked_lm(model, tokenizer, TOY, _cfg(max_steps=5), log_every=5)
    bias = model.cls.predictions.decoder.bias.detach()
    seen = set(tokenizer(TOY)["input_ids"][0][1:-1])
    unseen = [i for i in range(len(tokenizer)) if i not in seen][:1000]
    assert bias[list(seen)].min() > bias[unseen].max()


def test_cache_key_and_load_or_warmup(tmp_path: Path, tiny_model_cfg, monkeypatch):
    import dcls_core.warmup as W

    cfg = _cfg(max_steps=3)
    key = W.warmup_cache_key(tiny_model_cfg, cfg, TOY)
    assert key == W.warmup_cache_key(tiny_model_cfg, cfg, list(TOY))
    assert key != W.warmup_cache_key(tiny_model_cfg, cfg, TOY[:-1])
    assert key != W.warmup_cache_key(tiny_model_cfg, dataclasses.replace(cfg, lr=2e-3), TOY)
    assert key != W.warmup_cache_key(ModelConfig(name="tiny", tiny_hidden=32), cfg, TOY)
    # the corpus is keyed by content, not by the names of its sources
    assert key == W.warmup_cache_key(tiny_model_cfg, dataclasses.replace(cfg, corpus=["x.txt"]), TOY)

    model, tok, stats = W.load_or_warmup(tiny_model_cfg, cfg, TOY, tmp_path, seed=1)
    assert stats["cached"] is False and stats["steps"] == 3
    assert (tmp_path / f"warmup-{key}" / W.STATS_FILE).exists()

    def boom(*a, **k):
        raise AssertionError("second call must load from the cache")

    monkeypatch.setattr(W, "warmup_masked_lm", boom)
    model2, tok2, stats2 = W.load_or_warmup(tiny_model_cfg, cfg, TOY, tmp_path, seed=2)
    assert stats2["cached"] is True
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    ids = tok2(["the film is great"], return_tensors="pt")
    assert model2(**ids).logits.shape[-1] == len(tok2)


def test_needs_warmup(tiny_model_cfg, tmp_path: Path):
    from dcls_core.warmup import needs_warmup

    assert needs_warmup(tiny_model_cfg, WarmupConfig())  # a fresh head
    assert not needs_warmup(tiny_model_cfg, WarmupConfig(enabled="false"))
    # a checkpoint that ships its own MLM head (as bert-base-uncased does) skips the warm-up
    model = load_masked_lm(tiny_model_cfg, seed=0)
    model.save_pretrained(str(tmp_path / "with_head"))
    with_head = ModelConfig(name=str(tmp_path / "with_head"))
    assert not needs_warmup(with_head, WarmupConfig())
    assert needs_warmup(with_head, WarmupConfig(enabled="true"))
    assert not needs_warmup(ModelConfig(name="bert-base-uncased"), WarmupConfig())


def test_corpus_texts(tmp_path: Path):
    from dcls_core.warmup import corpus_texts

    (tmp_path / "a.txt").write_text("extra one\nextra two\n\nTrain  A\n")
    (tmp_path / "b.csv").write_text("id,text,label\n1,csv text,pos\n2,dev text,neg\n")
    cfg = WarmupConfig(corpus=["a.txt", str(tmp_path / "b.csv")], max_sentences=100)
    out = corpus_texts(cfg, ["train a", "train b"], tmp_path, exclude=["DEV text"])
    assert out[:2] == ["train a", "train b"]  # training texts first, kept
    assert sorted(out[2:]) == ["csv text", "extra one", "extra two"]  # dedup (case), no dev
    capped = corpus_texts(WarmupConfig(corpus=["a.txt"], max_sentences=3), ["train a", "train b"], tmp_path)
    assert len(capped) == 3 and capped[:2] == ["train a", "train b"]


def test_corpus_selection_longest_or_random(tmp_path: Path):
    from dcls_core.warmup import corpus_texts

    lines = [" ".join(["w"] * n) + f" s{n}" for n in (1, 7, 3, 9, 2, 5)]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")
    longest = corpus_texts(WarmupConfig(corpus=["c.txt"], max_sentences=2, selection="longest"), [], tmp_path)
    assert longest == [lines[3], lines[1]]  # 9 and 7 words
    picks = {tuple(corpus_texts(WarmupConfig(corpus=["c.txt"], max_sentences=2, selection="random", seed=s),
                                [], tmp_path)) for s in range(6)}
    assert len(picks) > 1 and all(len(p) == 2 and set(p) <= set(lines) for p in picks)


def test_sst2_preset_as_corpus(data_root):
    from dcls_core.warmup import corpus_texts

    out = corpus_texts(WarmupConfig(corpus=["sst2"], max_sentences=50), [], data_root)
    assert len(out) == 50 and all(isinstance(t, str) and t for t in out)


def test_warmup_config_validation():
    with pytest.raises(ConfigError):
        WarmupConfig(mask_prob=0.3, mask_prob_max=0.2)
    with pytest.raises(ConfigError):
        WarmupConfig(selection="shortest")


def _weights_digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _ray_warmup_cfg(workers: int):
    from dcls_core.config import load_config

    return load_config(["model=tiny", f"ray.num_workers={workers}", "ray.num_cpus=4", "generator.warmup.enabled=true",
                        "generator.warmup.max_steps=12", "generator.warmup.max_seconds=0",
                        "generator.warmup.batch_size=16", "generator.warmup.max_length=32",
                        "ray.warmup_checkpoint_every=2"])


def _run_killed_then_resumed(cfg, cache: Path):
    """A warm-up that dies after step 7 (checkpoints at 2, 4, 6), then the same call again."""
    import ray

    from jobs.ray_executor import warm_up_on_ray
    from jobs.ray_runtime import init_ray

    init_ray(cfg.ray)
    try:
        with pytest.raises(Exception, match="_fail_at_step=7"):
            warm_up_on_ray(cfg, TOY, cache, fail_at_step=7)
        left = sorted(int(__import__("json").loads(p.read_text())["step"]) for p in cache.rglob("warmup_step.json"))
        stats = warm_up_on_ray(cfg, TOY, cache)
        again = warm_up_on_ray(cfg, TOY, cache)
    finally:
        ray.shutdown()
    return left, stats, again


@pytest.mark.ray
def test_ray_warmup_killed_resumes_from_its_last_checkpoint_and_matches_one_process(tmp_path, tiny_model_cfg,
                                                                                 tokenizer):
    """Ray Train local mode: the killed warm-up kept its last two checkpoints, the rerun continues
    from step 6 (not 0), and the result is the very same model as one uninterrupted warm-up in
    this process (same batches, masks, dropout)."""
    from dcls_core.warmup import load_cached_warmup, warmup_masked_lm

    cfg = _ray_warmup_cfg(0)
    left, stats, again = _run_killed_then_resumed(cfg, tmp_path)
    assert left == [4, 6]  # older checkpoints pruned
    assert stats["resumed_from_step"] == 6 and stats["steps"] == 12 and stats["cached"] is False
    assert again["cached"] is True and again["path"] == stats["path"]
    assert not list(tmp_path.glob("*.train"))  # the checkpoints go once the cache entry exists
    resumed, _, saved = load_cached_warmup(stats["path"])
    assert saved["steps"] == 12 and [h["step"] for h in saved["history"]] == [12]

    reference = load_masked_lm(tiny_model_cfg, cfg.generator.warmup.seed)
    warmup_masked_lm(reference, tokenizer, TOY, cfg.generator.warmup)
    assert _weights_digest(resumed) == _weights_digest(reference)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_warmup_ddp_two_workers_resumes_and_learns(tmp_path, tokenizer):
    from dcls_core.warmup import load_cached_warmup, masked_lm_eval

    cfg = _ray_warmup_cfg(2)
    left, stats, _ = _run_killed_then_resumed(cfg, tmp_path)
    assert left == [4, 6]  # Ray Train kept the last two
    assert stats["workers"] == 2 and stats["resumed_from_step"] == 6 and stats["steps"] == 12
    model, _, _ = load_cached_warmup(stats["path"])
    fresh = load_masked_lm(cfg.model, cfg.generator.warmup.seed)
    assert masked_lm_eval(model, tokenizer, TOY, 0.15, seed=1)["ce"] < masked_lm_eval(fresh, tokenizer, TOY, 0.15,
                                                                                      seed=1)["ce"] - 1.0
