"""The pipeline through its real Ray stages with experiment=smoke (tiny model, 24 SST-2 rows).

One run goes through everything (actor pools with an actor killed mid-stage, Ray Train local
mode and DDP with 2 workers, warm-up task, report); the resume test reuses its run folder, kills
a second run inside the generation stage and starts it again. About 3-4 minutes on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINE = [sys.executable, str(REPO / "jobs" / "pipeline.py")]
ENV = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="1")
ENV.pop("RAY_ADDRESS", None)


def _run(args, timeout=600, check=True):
    proc = subprocess.run(PIPELINE + list(args), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _stage(run: Path, name: str) -> Path:
    found = [p for p in (run / "stages").glob(f"{name}-*") if (p / "_stage.json").exists()]
    assert len(found) == 1, f"expected one finished {name} stage, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("smoke")
    run = base / "run"
    proc = _run(["experiment=smoke", f"output_dir={run}", f"storage_path={base / 'store'}",
                 "ray.fault_kill_actor_after=1"])
    return {"run": run, "store": base / "store", "stdout": proc.stdout, "stderr": proc.stderr}


# ----------------------------------------------------------------------------- fails early
@pytest.mark.parametrize("override,message", [
    ("generator.lam=-2", "generator.lam"),
    ("dataset.files={train: /nonexistent/x.csv}", "nonexistent"),
    ("ray.fit_workers={proxi: 2}", "ray.fit_workers"),
    ("ray.warmup_threads=-1", "ray.warmup_threads"),
    ("generator.warmup.corpus=[nope]", "generator.warmup.corpus"),
    ("model.name=/nonexistent/model-dir", "nonexistent"),
])
def test_bad_config_or_input_fails_before_any_compute(tmp_path, override, message):
    run = tmp_path / "run"
    start = time.time()
    proc = _run(["experiment=smoke", f"output_dir={run}", override], check=False, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (run / "stages").exists(), "a stage ran although the config was bad"
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert time.time() - start < 60


# ----------------------------------------------------------------------------- the smoke run
@pytest.mark.ray
def test_smoke_run_artifacts(smoke_run):
    run = smoke_run["run"]
    for name in ("config.yaml", "data_report.json", "augmented.parquet", "metrics.json", "report.md",
                 "plots/per_class_f1.png", "plots/confusion_matrix.png", "plots/mask_ratio_hist.png"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("probe", "raw", "no_augmentation", "augmented"):
        for split in ("dev", "test"):
            block = metrics[key][split]
            assert {"accuracy", "macro_f1", "per_class"} <= set(block)
            assert 0 <= block["accuracy"] <= 1
    # the raw arm is the proxy (no separate proxy stage); its dev accuracy is recorded
    assert not list((run / "stages").glob("proxy-*")) and metrics["proxy"]["checkpoint"] == "raw"
    assert 0 <= metrics["proxy"]["dev_accuracy"] <= 1
    assert metrics["selected"]["arm"] in ("raw", "no_augmentation", "augmented") and metrics["selected"]["reason"]
    for name in ("raw", "no_augmentation", "augmented"):
        assert (_stage(run, name) / "model" / "classifier.json").exists()
        history = json.loads((_stage(run, name) / "model" / "history.json").read_text())
        assert [h["step"] for h in history] == [0, 2, 3]  # equal step budgets across arms
    assert (_stage(run, "generator") / "model" / "config.json").exists()
    # the augmented classifier ran DDP with 2 workers; the others in local mode
    assert json.loads((_stage(run, "augmented") / "_stage.json").read_text())["summary"]["workers"] == 2
    report = (run / "report.md").read_text()
    assert "| raw (no augmentation, alpha = 0) | test |" in report and "Example pseudo samples" in report
    assert "Recommended classifier" in report
    for arm in ("probe", "raw", "no_augmentation", "augmented"):
        assert f"| {arm} | test |" in smoke_run["stdout"]  # the metrics table is printed
    # the warm-up runs in a Ray task; its progress log reaches the driver's console
    assert "warm-up done: 4 steps" in smoke_run["stdout"] + smoke_run["stderr"]


@pytest.mark.ray
def test_the_in_process_stages_have_the_pipelines_keys(smoke_run, tmp_path):
    """One set of stages for every runner: the LocalExecutor (Tune trials, scripts) run on a copy
    of the Ray pipeline's run folder finds every stage the pipeline built and recomputes none."""
    from dcls_core.artifacts import RunFolder
    from dcls_core.config import load_config
    from dcls_core.data import load_dataset
    from dcls_core.stages import LocalExecutor, run_stages

    run = tmp_path / "run"
    shutil.copytree(smoke_run["run"], run)
    cfg = load_config(["experiment=smoke", f"output_dir={run}", f"storage_path={smoke_run['store']}"])
    calls = []
    store = RunFolder(run, logger=calls.append)
    out = run_stages(cfg, load_dataset(cfg.dataset, cfg.data), store, LocalExecutor(cfg, tmp_path / "cache"))
    assert not any(": running" in line for line in calls), calls
    built = {p.name for p in (run / "stages").iterdir() if (p / "_stage.json").exists()}
    scores = {name for name in built if name.split("-")[0] in ("scores", "probe")}
    assert len(scores) == 4  # the 3 arms' and the probe's: only the evaluation stage, found here, reads them
    assert {line.split(": ")[0] for line in calls} == {f"[stage] {name}" for name in built - scores}
    assert out["evaluation"].skipped


@pytest.mark.ray
def test_augmented_parquet_rows_columns_and_schedule(smoke_run):
    from dcls_core.config import load_config
    from dcls_core.schedule import keep_probability

    run = smoke_run["run"]
    cfg = load_config(["experiment=smoke"])
    aug = pd.read_parquet(run / "augmented.parquet")
    for col in ("text", "label", "is_pseudo", "source_id", "step", "mask_ratio", "changed_ratio", "changed_spans",
                "consistency"):
        assert col in aug.columns, col
    train = pd.read_parquet(_stage(run, "data") / "train.parquet")
    originals, pseudo = aug[~aug["is_pseudo"]], aug[aug["is_pseudo"]]
    assert len(originals) == len(train) == 24
    steps = cfg.generator.group_steps()
    assert len(pseudo) == len(train) * cfg.augment.n
    assert not aug["id"].duplicated().any()
    assert set(pseudo["source_id"]) == set(train["id"])
    assert sorted(pseudo["step"].unique()) == steps
    assert (pseudo["label"].values == pseudo["source_id"].map(train.set_index("id")["label"]).values).all()
    # nested masks: a later step of the same source masks at least as much
    wide = pseudo.pivot(index="source_id", columns="step", values="mask_ratio")
    assert (wide[steps[1]] >= wide[steps[0]] - 1e-9).all()
    # the masked fraction per step matches the label-aware schedule (Eqs. 2-3) in expectation
    import torch

    from dcls_core.importance import normalise_importance

    imp = pd.read_parquet(_stage(run, "importance") / "importance.parquet").set_index("id")["importance"]
    imp = imp.map(lambda v: normalise_importance(list(v), cfg.generator.importance_norm))
    for step in steps:
        rows = pseudo[pseudo["step"] == step]
        expected = [float((1 - keep_probability(torch.tensor(list(imp[s]), dtype=torch.float32), step,
                                                cfg.generator.T, cfg.generator.lam)).mean())
                    for s in rows["source_id"]]
        assert abs(rows["mask_ratio"].mean() - sum(expected) / len(expected)) < 0.12, step
    assert pseudo["consistency"].between(0, 1).all()
    # only rebuilt words differ from the original: outside the changed spans the text is the source's
    by_id = train.set_index("id")["text"]
    for _, r in pseudo.head(12).iterrows():
        kept, cursor = [], 0
        for a, b in r["changed_spans"]:
            kept.append(r["text"][cursor:a])
            cursor = b
        kept.append(r["text"][cursor:])
        source = by_id[r["source_id"]]
        pos = 0
        for piece in kept:  # every kept piece appears in the source, in order
            found = source.find(piece, pos)
            assert found >= 0, (piece, source)
            pos = found + len(piece)


@pytest.mark.ray
def test_killed_actors_are_restarted_without_missing_or_duplicated_rows(smoke_run):
    run = smoke_run["run"]
    for name in ("importance", "generation"):
        summary = json.loads((_stage(run, name) / "_stage.json").read_text())["summary"]
        assert summary["actor_killed"], f"the {name} fault hook did not fire"
    imp = pd.read_parquet(_stage(run, "importance") / "importance.parquet")
    train = pd.read_parquet(_stage(run, "data") / "train.parquet")
    assert sorted(imp["id"]) == sorted(train["id"]) and not imp["id"].duplicated().any()
    pseudo = pd.read_parquet(_stage(run, "generation") / "pseudo.parquet")
    assert not pseudo["id"].duplicated().any() and len(pseudo) == 48


@pytest.mark.ray
def test_killed_pipeline_resumes_with_the_same_rows(smoke_run, tmp_path):
    src = smoke_run["run"]
    run = tmp_path / "run"
    shutil.copytree(src, run)
    reference = pd.read_parquet(src / "augmented.parquet")
    for name in ("generation", "augmented", "evaluation"):
        shutil.rmtree(_stage(run, name))
    for name in ("augmented.parquet", "metrics.json", "report.md"):
        (run / name).unlink()
    args = ["experiment=smoke", f"output_dir={run}", f"storage_path={smoke_run['store']}",
            "ray.fit_workers.augmented=0"]  # local mode; same stage keys: Ray settings are not in them
    proc = subprocess.Popen(PIPELINE + args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list((run / "stages").glob(".generation-*.tmp-*")):
            assert proc.poll() is None, "the pipeline ended before the generation stage"
            time.sleep(0.5)
        time.sleep(4)  # inside the generation stage (Ray Data running)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not list((run / "stages").glob("generation-*")), "a killed stage left an output"
    done = _run(args)
    log = done.stdout + done.stderr
    import re

    for name in ("data", "raw", "importance", "generator"):
        assert re.search(rf"\[stage\] {name}-\w+: output exists, skipped", log), name
    assert re.search(r"\[stage\] generation-\w+: done", log)
    assert not list((run / "stages").glob(".*tmp*"))
    resumed = pd.read_parquet(run / "augmented.parquet")
    assert len(resumed) == len(reference)
    assert resumed["is_pseudo"].sum() == reference["is_pseudo"].sum()
    pd.testing.assert_frame_equal(resumed[["id", "text", "step", "mask_ratio"]],
                                  reference[["id", "text", "step", "mask_ratio"]])


@pytest.mark.ray
def test_reflective_mode_regenerates_inside_the_classifier_loop(smoke_run, tmp_path):
    src = smoke_run["run"]
    run = tmp_path / "run"
    shutil.copytree(src, run)
    done = _run(["experiment=smoke", f"output_dir={run}", f"storage_path={smoke_run['store']}",
                 "augment.mode=reflective", "ray.fit_workers.augmented=0"])
    log = done.stdout + done.stderr
    import re

    for name in ("data", "raw", "importance", "generator", "no_augmentation"):
        assert re.search(rf"\[stage\] {name}-\w+: output exists, skipped", log), name
    assert len(list((run / "stages").glob("augmented-*"))) == 2  # static and reflective keys differ
    assert "regenerating pseudo samples" in log
    aug = pd.read_parquet(run / "augmented.parquet")
    pseudo = aug[aug["is_pseudo"]]
    assert len(pseudo) == 48 and not aug["id"].duplicated().any()
