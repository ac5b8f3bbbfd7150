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
    ("generator.lam=-1", "generator.lam"),
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
    for key in ("augmented", "baseline"):
        for split in ("dev", "test"):
            block = metrics[key][split]
            assert {"accuracy", "macro_f1", "per_class"} <= set(block)
            assert 0 <= block["accuracy"] <= 1
    for name in ("proxy", "baseline", "classifier", "generator"):
        assert (_stage(run, name) / "model" / "config.json").exists()
    # the augmented classifier ran DDP with 2 workers; the others in local mode
    assert json.loads((_stage(run, "classifier") / "_stage.json").read_text())["summary"]["workers"] == 2
    report = (run / "report.md").read_text()
    assert "| baseline | test |" in report and "Example pseudo samples" in report
    assert "| baseline | test |" in smoke_run["stdout"]  # the metrics table is printed
    # the warm-up runs in a Ray task; its progress log reaches the driver's console
    assert "warm-up done: 4 steps" in smoke_run["stdout"] + smoke_run["stderr"]


@pytest.mark.ray
def test_augmented_parquet_rows_columns_and_schedule(smoke_run):
    from dcls_core.config import load_config
    from dcls_core.schedule import keep_probability

    run = smoke_run["run"]
    cfg = load_config(["experiment=smoke"])
    aug = pd.read_parquet(run / "augmented.parquet")
    for col in ("text", "label", "is_pseudo", "source_id", "step", "mask_ratio", "changed_ratio", "consistency"):
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

    imp = pd.read_parquet(_stage(run, "importance") / "importance.parquet").set_index("id")["importance"]
    for step in steps:
        rows = pseudo[pseudo["step"] == step]
        expected = [float((1 - keep_probability(torch.tensor(list(imp[s]), dtype=torch.float32), step,
                                                cfg.generator.T, cfg.generator.lam)).mean())
                    for s in rows["source_id"]]
        assert abs(rows["mask_ratio"].mean() - sum(expected) / len(expected)) < 0.12, step
    assert pseudo["consistency"].between(0, 1).all()


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
    for name in ("generation", "classifier", "evaluation"):
        shutil.rmtree(_stage(run, name))
    for name in ("augmented.parquet", "metrics.json", "report.md"):
        (run / name).unlink()
    args = ["experiment=smoke", f"output_dir={run}", f"storage_path={smoke_run['store']}",
            "ray.fit_workers.classifier=0"]  # local mode; same stage keys: Ray settings are not in them
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

    for name in ("data", "proxy", "importance", "generator"):
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
                 "augment.mode=reflective", "ray.fit_workers.classifier=0"])
    log = done.stdout + done.stderr
    import re

    for name in ("data", "proxy", "importance", "generator", "baseline"):
        assert re.search(rf"\[stage\] {name}-\w+: output exists, skipped", log), name
    assert len(list((run / "stages").glob("classifier-*"))) == 2  # static and reflective keys differ
    assert "'regenerated': True" in log
    aug = pd.read_parquet(run / "augmented.parquet")
    pseudo = aug[aug["is_pseudo"]]
    assert len(pseudo) == 48 and not aug["id"].duplicated().any()
