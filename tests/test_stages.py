"""The pipeline's stages (dcls_core.stages) run in-process by the LocalExecutor: every stage of a
tiny run, what a rerun with one setting changed rebuilds (only the stages that read it), and that
the batch stages do not depend on how their rows are batched. No Ray; under a minute on 2 cores."""
from __future__ import annotations

import pandas as pd
import pytest

from dcls_core.artifacts import RunFolder, read_rows
from dcls_core.config import load_config
from dcls_core.data import load_dataset
from dcls_core.stages import STAGES, LocalExecutor, load_pseudo, run_stages, stage_config


def _cfg(tmp_path, *overrides):
    return load_config(["experiment=smoke", f"storage_path={tmp_path}", *overrides])


def _run(tmp_path, *overrides, until=None, batch_size=64):
    cfg = _cfg(tmp_path, *overrides)
    bundle = load_dataset(cfg.dataset, cfg.data)
    store = RunFolder(tmp_path / "run")
    out = run_stages(cfg, bundle, store, LocalExecutor(cfg, tmp_path / "cache", batch_size=batch_size), until=until)
    return cfg, out


def _built(out):
    stages = [out[k] for k in ("data", "raw", "importance", "generator", "generation")]
    stages += [out["arms"]["no_augmentation"], out["arms"]["augmented"], out["evaluation"]]
    stages += out.get("scores", {}).values()  # an arm's scores and the probe's (when evaluation ran)
    return {s.name for s in stages if s is not None and not s.skipped}  # reflective: no generation stage


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    cfg, out = _run(root)
    return {"root": root, "cfg": cfg, "out": out}


def test_every_stage_runs_in_process_and_evaluates_every_arm(first):
    out = first["out"]
    assert _built(out) == set(STAGES) - {"proxy"}  # raw is the proxy in this preset
    metrics = pd.read_json(out["evaluation"].file("metrics.json"), typ="series")
    for arm in ("raw", "no_augmentation", "augmented", "probe"):
        assert 0 <= metrics[arm]["test"]["accuracy"] <= 1, arm
    assert metrics["selected"]["arm"] in ("raw", "no_augmentation", "augmented")
    pseudo = out["pseudo"]
    n = first["cfg"].augment.n
    assert len(pseudo) == n * len(out["train"]) and set(pseudo["source_id"]) == set(out["train"]["id"])
    diag = metrics["pseudo_diagnostics"]  # judged by the raw arm, the consistency column's judge
    aug = pd.read_parquet(out["evaluation"].file("augmented.parquet"))
    assert diag["n_pseudo"] == len(pseudo) and 0 <= diag["label_consistency"] <= 1
    assert diag["mean_label_prob"] == pytest.approx(aug.loc[aug["is_pseudo"], "consistency"].mean())
    for arm in ("raw", "no_augmentation", "augmented"):  # checkpoints as the Ray Train loops write them
        fit = pd.read_json(out["arms"][arm].file("model") / "fit.json", typ="series")
        assert fit["steps"] >= first["cfg"].classifier.min_steps and "best_dev_macro_f1" in fit


@pytest.mark.parametrize("override,rebuilt", [
    # a new fit is scored; the arms and the probe a run shares with an earlier one are not scored again
    ("generator.group_index=3", {"generation", "augmented", "scores", "evaluation"}),  # a decoding setting
    ("generator.lam=0.25", {"generator", "generation", "augmented", "scores", "evaluation"}),  # read by training too
    ("classifier.tau=0.2", {"no_augmentation", "augmented", "scores", "evaluation"}),  # raw (alpha = 0) never reads it
    ("classifier.select_confidence=0.5", {"evaluation"}),  # only the arm selection reads it
])
def test_a_changed_setting_rebuilds_only_the_stages_that_read_it(first, override, rebuilt):
    _, out = _run(first["root"], override)
    assert _built(out) == rebuilt
    metrics = pd.read_json(out["evaluation"].file("metrics.json"), typ="series")
    before = pd.read_json(first["out"]["evaluation"].file("metrics.json"), typ="series")
    assert metrics["raw"] == before["raw"]  # read back from the first run's scores, as it wrote them


def test_a_fresh_store_reproduces_every_stage_whatever_the_batching(first, tmp_path):
    """Same seed, nothing cached but the warm-up: the same proxy, importance, generator and pseudo
    samples, with the batch stages cut into batches of 3 instead of 64."""
    cfg = first["cfg"]
    bundle = load_dataset(cfg.dataset, cfg.data)
    # the same keys in a fresh store (so everything is recomputed), rows cut into batches of 3
    out = run_stages(cfg, bundle, RunFolder(tmp_path / "run"), LocalExecutor(cfg, first["root"] / "cache", batch_size=3),
                     until="generation")
    assert out["generation"].key == first["out"]["generation"].key
    pd.testing.assert_frame_equal(load_pseudo(out), load_pseudo(first["out"]))
    for name in ("importance", "generation"):
        a = read_rows(out[name].file(f"{name if name == 'importance' else 'pseudo'}.parquet"))
        b = read_rows(first["out"][name].file(f"{name if name == 'importance' else 'pseudo'}.parquet"))
        pd.testing.assert_frame_equal(a, b)


def test_stage_keys_leave_out_what_a_stage_never_reads(tmp_path):
    base = _cfg(tmp_path)
    assert stage_config("raw", base) == stage_config("raw", _cfg(tmp_path, "classifier.alpha=0.3",
                                                                   "classifier.tau=0.9"))
    assert stage_config("generator", base) == stage_config("generator", _cfg(tmp_path, "generator.reverse_steps=5"))
    assert stage_config("generation", base) != stage_config("generation", _cfg(tmp_path, "generator.reverse_steps=5"))
    assert stage_config("raw", base) != stage_config("raw", _cfg(tmp_path, "classifier.lr=0.01"))


def test_reflective_mode_regenerates_in_process_too(first):
    """augment.mode=reflective in the LocalExecutor: the augmented fit rescores and regenerates its
    sources with the classifier being trained (the same regenerator as the Ray Train loop)."""
    cfg, out = _run(first["root"], "augment.mode=reflective")
    assert _built(out) == {"augmented", "scores", "evaluation"}  # everything up to the generator is reused
    static = first["out"]["pseudo"]
    regenerated = out["pseudo"]
    assert list(regenerated["id"]) == list(static["id"])  # the same plan: one row per planned sample
    assert (regenerated["text"] != static["text"]).any()  # drawn again (round seeds), from new importance


def test_an_augmenter_that_adds_nothing_reuses_the_no_augmentation_fit(first):
    """Backtranslation offline is skipped (no pseudo samples): an augmented fit on nothing would be
    the no_augmentation fit again, step for step, so the run reuses that fit instead of training."""
    _, plain = _run(first["root"], "augment.method=none")  # the same two fits, and no augmenter
    missing = "dcls-test/no-such-translation-model"
    _, out = _run(first["root"], "augment.method=backtranslation", f"augment.backtranslation.forward_model={missing}",
                  f"augment.backtranslation.backward_model={missing}")
    assert len(load_pseudo(out)) == 0
    assert out["arms"]["augmented"] is out["arms"]["no_augmentation"]
    assert _built(out) == {"generation", "evaluation"}  # no classifier was trained, none scored again
    assert out["evaluation"].key != plain["evaluation"].key  # its own evaluation, with an augmented arm
    metrics = pd.read_json(out["evaluation"].file("metrics.json"), typ="series")
    assert metrics["augmented"]["test"] == metrics["no_augmentation"]["test"]
    assert metrics["best_step"]["augmented"] == metrics["best_step"]["no_augmentation"]


def test_the_in_process_augmenter_makes_the_stages_pseudo_samples(first):
    """`quick` and `dcls augment` without Ray generate in one process (DiffusionAugmenter): from
    the same rows, whatever drew random numbers before, the stages' pseudo samples."""
    import torch

    from dcls_core import diffusion_augmenter as da

    cfg, out = first["cfg"], first["out"]
    names = list(pd.read_json(out["data"].file("labels.json"), typ="series"))
    proxy, _ = da.load_classifier_checkpoint(out["raw"].file("model"))  # the proxy of this preset
    aug = da.DiffusionAugmenter(cfg.model, cfg.generator, cfg.augment, cfg.classifier, cfg.data.max_length,
                                first["root"] / "cache", cfg.data.resolved_root(), dev_df=out["dev"],
                                exclude_texts=out["test"]["text"].tolist())
    torch.rand(17)
    mine = aug.augment(out["train"], names, cfg.seed, proxy=proxy)
    stage = first["out"]["pseudo"]
    assert len(stage) and list(mine["id"]) == list(stage["id"])
    assert list(mine["text"]) == list(stage["text"])
