"""Baseline augmenters (eda, aeda, mlm, resample, backtranslation) and the ablation flags of diffusion.

Every augmenter: deterministic for a seed, the pseudo schema, a changed text for a long enough input,
no crash on a one-word or an empty-after-cleaning text. Models are the tiny random ones (no download:
back-translation runs on a tiny random seq2seq folder made here, and its offline skip on a name that
is not cached). EDA reads the real WordNet (Debian's wordnet-base, installed by `make test`).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dcls_core.augment import PSEUDO_COLUMNS, augmenter_from_config, available_augmenters, get_augmenter
from dcls_core.baselines import (MissingResourceError, WordNetSynonyms, random_deletion, random_insertion,
                                 random_swap, split_units, synonym_replacement, unit_changes)
from dcls_core.config import (AugmentConfig, BacktranslationConfig, ConfigError, EDAConfig, GeneratorConfig,
                              MLMConfig, WarmupConfig, load_config)

REPO = Path(__file__).resolve().parents[1]
WORDNET = "/usr/share/wordnet"
LONG = "The movie was truly wonderful, and the actors were great in every single scene!"
TRAIN = pd.DataFrame({
    "id": ["a", "b", "c", "d", "e"],
    "text": [LONG, "Terrible plot and a boring, painfully slow ending.", "wow", "!!! :) 123", ""],
    "label": ["pos", "neg", "pos", "neg", "neg"],
})
LABELS = ["neg", "pos"]


def _no_warmup_generator(**kw) -> GeneratorConfig:
    return GeneratorConfig(reverse_steps=2, warmup=WarmupConfig(enabled="false"), **kw)


@pytest.fixture(scope="module")
def seq2seq_dir(tmp_path_factory, tokenizer):
    """A tiny random BART with the MiniLM tokenizer, saved like a hub translation model."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny_seq2seq")
    conf = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                      max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                      decoder_start_token_id=tokenizer.cls_token_id, forced_eos_token_id=None,
                      init_std=0.3)  # the default 0.02 decodes the same tokens whatever the input
    torch.manual_seed(0)
    BartForConditionalGeneration(conf).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def make(method: str, tiny_model_cfg, seq2seq_dir=None, tmp_path=None, **augment):
    cfg = AugmentConfig(method=method, n=augment.pop("n", 4), **augment)
    if method == "mlm":
        return get_augmenter("mlm", model_cfg=tiny_model_cfg, generator_cfg=_no_warmup_generator(),
                             augment_cfg=cfg, max_length=32, cache_dir=tmp_path)
    if method == "backtranslation":
        cfg.backtranslation.forward_model = cfg.backtranslation.backward_model = str(seq2seq_dir)
        cfg.backtranslation.batch_size = 3
        return get_augmenter("backtranslation", augment_cfg=cfg, max_length=24)
    if method == "eda":
        cfg.eda.wordnet_dir = WORDNET
    return get_augmenter(method, augment_cfg=cfg)


METHODS = ["eda", "aeda", "mlm", "resample", "backtranslation"]


def test_every_baseline_is_registered():
    assert set(METHODS) | {"diffusion", "none"} <= set(available_augmenters())


@pytest.mark.parametrize("method", METHODS)
def test_baseline_schema_determinism_and_edge_texts(method, tiny_model_cfg, seq2seq_dir, tmp_path):
    aug = make(method, tiny_model_cfg, seq2seq_dir, tmp_path)
    out = aug.augment(TRAIN, LABELS, seed=3)
    assert list(out.columns) == PSEUDO_COLUMNS
    # n = 4 per original, ids <source>~p<k>, inherited label, pseudo flags
    assert len(out) == 4 * len(TRAIN)
    assert sorted(out["id"]) == sorted(f"{s}~p{k}" for s in TRAIN["id"] for k in range(4))
    by_id = TRAIN.set_index("id")
    assert (out["label"] == by_id.loc[out["source_id"], "label"].to_numpy()).all()
    assert out["is_pseudo"].all() and (out["split"] == "train").all() and (out["step"] == 0).all()
    assert out["changed_ratio"].between(0, 1).all()
    for text, spans in zip(out["text"], out["changed_spans"]):
        for start, end in spans:
            assert 0 <= start < end <= len(text)
    # the same seed gives the same rows; another seed other rows (resample copies, whatever the seed)
    again = make(method, tiny_model_cfg, seq2seq_dir, tmp_path).augment(TRAIN, LABELS, seed=3)
    pd.testing.assert_frame_equal(out, again)
    other = make(method, tiny_model_cfg, seq2seq_dir, tmp_path).augment(TRAIN, LABELS, seed=4)
    long_rows = out["source_id"] == "a"
    if method == "resample":
        assert (out["text"] == by_id.loc[out["source_id"], "text"].to_numpy()).all()
        assert (out["changed_ratio"] == 0).all() and not any(len(s) for s in out["changed_spans"])
    else:
        assert (out.loc[long_rows, "text"] != LONG).any(), "no pseudo sample of a long input changed"
        changed = out[long_rows & (out["text"] != LONG)]
        assert (changed["changed_ratio"] > 0).all()
        # a span for every change that left new text (a deletion leaves none)
        assert all(len(s) or len(t) < len(LONG) for t, s in zip(changed["text"], changed["changed_spans"]))
        assert list(other.loc[other["source_id"] == "a", "text"]) != list(out.loc[long_rows, "text"])
    # one-word, punctuation-only and empty texts still give their pseudo rows
    for sid in ("c", "d", "e"):
        assert (out["source_id"] == sid).sum() == 4


@pytest.mark.parametrize("method", ["eda", "aeda", "resample"])
def test_balance_policy_fills_the_minority(method, tiny_model_cfg):
    train = pd.DataFrame({"id": [f"r{i}" for i in range(7)],
                          "text": [f"a fairly long sentence about topic number {i}" for i in range(7)],
                          "label": ["x"] * 5 + ["y"] * 2})
    out = make(method, tiny_model_cfg, policy="balance").augment(train, ["x", "y"], seed=0)
    assert len(out) == 3 and set(out["label"]) == {"y"}
    assert set(out["source_id"]) <= {"r5", "r6"} and not out["id"].duplicated().any()


def test_eda_operations_with_a_fixed_thesaurus():
    import random

    thesaurus = {"movie": ["film"], "great": ["outstanding"], "actors": ["cast members"]}

    def synonyms(word):
        return thesaurus.get(word.lower(), [])

    units = split_units("The Movie was great, the movie ended.")
    rng = random.Random(0)
    text, ratio, spans = unit_changes(units, synonym_replacement(units, 1, synonyms, rng), "")
    # every occurrence of the chosen word, punctuation and capitals kept
    assert text in ("The Film was great, the film ended.", "The Movie was outstanding, the movie ended.")
    assert all(text[s:e] in ("Film", "film", "outstanding,") for s, e in spans)
    inserted = random_insertion(units, 2, synonyms, rng)
    assert len(inserted) == len(units) + 2 and {t for _, t in inserted} - {t for _, t in units} <= {"film",
                                                                                                 "outstanding"}
    swapped = random_swap(units, 2, rng)
    assert sorted(t for _, t in swapped) == sorted(t for _, t in units)
    assert random_deletion(units, 1.0, rng) and len(random_deletion(units, 1.0, rng)) == 1
    assert random_deletion(split_units("wow"), 1.0, rng) == split_units("wow")
    # n = 4: one pseudo sample per operation, each source in its own order
    aug = get_augmenter("eda", augment_cfg=AugmentConfig(method="eda"), synonyms=synonyms)
    assert sorted(aug.operation("a", k, 0) for k in range(4)) == ["rd", "ri", "rs", "sr"]


def test_eda_reads_debian_wordnet_and_names_the_package_when_missing(tmp_path):
    synonyms = WordNetSynonyms(WORDNET)
    assert "film" in synonyms("movie") and "Film" not in synonyms("movie")
    assert synonyms("the") == []
    with pytest.raises(MissingResourceError, match="wordnet-base"):
        get_augmenter("eda", augment_cfg=AugmentConfig(method="eda", eda=EDAConfig(wordnet_dir=str(tmp_path))))


def test_aeda_in_a_language_without_spaces(tiny_model_cfg):
    train = pd.DataFrame({"id": ["z"], "text": ["这部电影真的很好看"], "label": ["pos"]})
    out = make("aeda", tiny_model_cfg, n=3).augment(train, ["pos"], seed=1)
    for text, spans in zip(out["text"], out["changed_spans"]):
        assert " " not in text and text != train["text"][0]
        assert "".join(c for c in text if c not in ".;?:!,") == train["text"][0]
        assert all(text[s:e] in list(".;?:!,") for s, e in spans)


def test_mlm_masks_do_not_depend_on_batching_and_no_label_prompt(tiny_model_cfg, tmp_path):
    cfg = AugmentConfig(method="mlm", n=2, mlm=MLMConfig(mask_prob=0.3, batch_size=1))
    one = get_augmenter("mlm", model_cfg=tiny_model_cfg, generator_cfg=_no_warmup_generator(), augment_cfg=cfg,
                        max_length=32, cache_dir=tmp_path).augment(TRAIN, LABELS, seed=5)
    cfg.mlm.batch_size = 64
    many = get_augmenter("mlm", model_cfg=tiny_model_cfg, generator_cfg=_no_warmup_generator(), augment_cfg=cfg,
                         max_length=32, cache_dir=tmp_path).augment(TRAIN, LABELS, seed=5)
    # the masks come from per-(source, k) streams; the fill of a flat random model may differ by padding
    pd.testing.assert_frame_equal(one[["id", "source_id", "mask_ratio"]], many[["id", "source_id", "mask_ratio"]])
    assert (one.loc[one["source_id"] == "a", "mask_ratio"] > 0).all()
    assert not one["text"].str.contains("<label:").any()
    assert (one.loc[one["source_id"] == "e", "mask_ratio"] == 0).all()  # nothing to mask in ""


def test_backtranslation_offline_is_skipped_with_one_line(caplog):
    cfg = AugmentConfig(method="backtranslation",
                        backtranslation=BacktranslationConfig(forward_model="dcls-test/no-such-translation-model",
                                                              backward_model="dcls-test/no-such-translation-back"))
    aug = get_augmenter("backtranslation", augment_cfg=cfg)
    with caplog.at_level(logging.WARNING, logger="dcls_core.baselines"):
        out = aug.augment(TRAIN, LABELS, seed=0)
    assert list(out.columns) == PSEUDO_COLUMNS and len(out) == 0
    lines = [r for r in caplog.records if r.name == "dcls_core.baselines"]
    assert len(lines) == 1 and "backtranslation skipped" in lines[0].getMessage()
    assert "no-such-translation-model" in aug.stats["skipped"]


# ------------------------------------------------------------------------------ ablations
def test_ablations_are_applied_after_the_experiment_preset():
    cfg = load_config(["experiment=india_covid_x", "augment=diffusion_no_label_schedule"])
    assert cfg.generator.lam == 0 and cfg.augment.mode == "reflective"  # the preset's mode stays
    cfg = load_config(["experiment=india_covid_x", "augment=diffusion_static"])
    assert cfg.augment.mode == "static" and cfg.generator.lam == 0.5
    cfg = load_config(["augment=diffusion_no_noise_resistant"])
    assert cfg.classifier.alpha == 0 and cfg.generator.label_prompt
    cfg = load_config(["augment=diffusion_no_label_prompt"])
    assert not cfg.generator.label_prompt and cfg.classifier.alpha == 1.0


@pytest.mark.parametrize("overrides,message", [
    (["augment.ablations=[no_such]"], "augment.ablations"),
    (["augment=eda", "augment.ablations=[static]"], "ablations of diffusion"),
    (["experiment=india_covid_x", "augment=eda"], "augment.mode=static"),
    (["augment.eda.alpha_sr=0", "augment.eda.alpha_ri=0", "augment.eda.alpha_rs=0", "augment.eda.p_rd=0"],
     "augment.eda"),
    (["augment.mlm.mask_prob=0"], "augment.mlm.mask_prob"),
])
def test_bad_augment_settings_fail_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(overrides)


def test_without_label_prompt_every_class_gets_the_same_prompt(tokenizer):
    from dcls_core.prompting import encode_prompted, prompt_token_ids

    tok = copy.deepcopy(tokenizer)
    per_class = prompt_token_ids(tok, None, ["pos", "neg"])
    shared = prompt_token_ids(tok, None, ["pos", "neg"], label_prompt=False)
    assert per_class["pos"] != per_class["neg"] and shared["pos"] == shared["neg"]
    assert shared["pos"] not in per_class.values()
    a = encode_prompted(tok, ["same text", "same text"], ["pos", "neg"], shared, 16)
    assert bool((a["input_ids"][0] == a["input_ids"][1]).all())
    b = encode_prompted(tok, ["same text", "same text"], ["pos", "neg"], per_class, 16)
    assert not bool((b["input_ids"][0] == b["input_ids"][1]).all())
    assert bool((a["maskable"] == b["maskable"]).all())  # same layout


def test_diffusion_without_label_prompt_trains_and_generates_with_the_shared_prompt(tiny_model_cfg, tmp_path,
                                                                                     monkeypatch):
    from dcls_core import prompting
    from dcls_core.config import ClassifierConfig
    from dcls_core.diffusion_augmenter import DiffusionAugmenter

    seen = []
    real = prompting.prompt_token_ids

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(prompting, "prompt_token_ids", spy)
    cfg = load_config(["model=tiny", "augment=diffusion_no_label_prompt", "augment.n=1", "generator.T=8",
                       "generator.group_size=2", "generator.group_index=2", "generator.epochs=1",
                       "generator.reverse_steps=1", "generator.warmup.enabled=false"])
    train = TRAIN.iloc[:4]
    aug = DiffusionAugmenter(cfg.model, cfg.generator, cfg.augment,
                             ClassifierConfig(epochs=1, min_steps=1, batch_size=2, head_init="random"),
                             max_length=24, cache_dir=tmp_path)
    out = aug.augment(train, LABELS, seed=0)
    assert len(out) == len(train) and not out["text"].str.contains("<label:").any()
    assert seen and all(len(set(m.values())) == 1 for m in seen)  # one prompt token for both classes


def test_diffusion_augmenter_applies_the_consistency_filter(tmp_path):
    from dcls_core.config import ClassifierConfig
    from dcls_core.diffusion_augmenter import DiffusionAugmenter

    def run(extra):
        cfg = load_config(["model=tiny", "augment.n=2", "generator.T=8", "generator.group_size=2",
                           "generator.group_index=2", "generator.epochs=1", "generator.reverse_steps=1",
                           "generator.warmup.enabled=false"] + extra)
        aug = DiffusionAugmenter(cfg.model, cfg.generator, cfg.augment,
                                 ClassifierConfig(epochs=1, min_steps=1, batch_size=2, head_init="random"),
                                 max_length=24, cache_dir=tmp_path)
        return aug.augment(TRAIN.iloc[:4], LABELS, seed=0), aug.stats

    full, _ = run([])
    cut = float(full["consistency"].median())
    kept, stats = run([f"augment.min_confidence={cut}"])
    assert len(kept) == int((full["consistency"] >= cut).sum()) and (kept["consistency"] >= cut).all()
    assert stats["dropped_low_confidence"] == len(full) - len(kept)


# ------------------------------------------------------------------------------ entry points
def test_augmenter_from_config_builds_the_configured_method(tmp_path):
    cfg = load_config(["augment=aeda", "augment.n=1"])
    aug = augmenter_from_config(cfg, cache_dir=tmp_path)
    assert aug.name == "aeda" and aug.augment_cfg.n == 1


def test_dcls_augment_runs_a_baseline(tmp_path, capsys):
    from dcls_core.cli import main

    src = tmp_path / "my.csv"
    pd.DataFrame({"text": [f"i loved this phone, the battery is great {i}" for i in range(6)]
                  + [f"the screen broke after a day, awful {i}" for i in range(6)],
                  "label": ["happy"] * 6 + ["angry"] * 6}).to_csv(src, index=False)
    out = tmp_path / "augmented.parquet"
    code = main(["augment", "--input", str(src), "--output", str(out), "--method", "eda", "model=tiny",
                 "augment.n=2", f"storage_path={tmp_path / 'store'}", "data.dev_size=0.25"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    frame = pd.read_parquet(out)
    pseudo = frame[frame["is_pseudo"]]
    assert len(pseudo) == 2 * int((~frame["is_pseudo"]).sum()) == summary["pseudo"]
    assert (pseudo["step"] == 0).all() and not frame["id"].duplicated().any()


def _pipeline(args, tmp_path, timeout):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="1")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, str(REPO / "jobs" / "pipeline.py"), "experiment=smoke",
                           f"output_dir={tmp_path / 'run'}", f"storage_path={tmp_path / 'store'}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("override,message", [
    ("augment.method=nope", "not a registered augmenter"),
    ("augment.eda.wordnet_dir=/nonexistent/wordnet", "wordnet-base"),
])
def test_pipeline_refuses_before_any_compute(tmp_path, override, message):
    proc = _pipeline(["augment=eda", override], tmp_path, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "run" / "stages").exists()


@pytest.mark.ray
def test_pipeline_runs_eda(tmp_path):
    """The smoke experiment with augment=eda: a generation stage, no importance or generator stage."""
    run = tmp_path / "run"
    proc = _pipeline(["augment=eda", "augment.n=2", "ray.fit_workers={}"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = {p.name.split("-")[0] for p in (run / "stages").iterdir() if (p / "_stage.json").exists()}
    assert {"data", "raw", "generation", "no_augmentation", "augmented", "evaluation"} <= stages
    assert not stages & {"importance", "generator", "proxy"}
    aug = pd.read_parquet(run / "augmented.parquet")
    train = aug[~aug["is_pseudo"]]
    pseudo = aug[aug["is_pseudo"]]
    assert len(pseudo) == 2 * len(train) == 48 and set(pseudo["source_id"]) == set(train["id"])
    assert (pseudo["text"] != pseudo["source_id"].map(train.set_index("id")["text"])).any()
    assert pseudo["consistency"].between(0, 1).all()  # judged by the raw arm
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rows"]["pseudo"] == 48 and "proxy" not in metrics
    assert 0 <= metrics["augmented"]["test"]["accuracy"] <= 1
