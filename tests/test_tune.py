"""Hyper-parameter studies: the pieces of dcls_core.study, and one tiny study through real Ray Tune
(ASHA on), stopped mid-way and resumed; its table, reuse of the generator, best preset and final
evaluation. About 3 minutes on 2 cores."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from dcls_core.config import ConfigError, load_config
from dcls_core.stages import DECODING_FIELDS, generator_training_key, proxy_recipe
from dcls_core.study import WRITTEN_BY, best_experiment_yaml, point_config, point_overrides

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="1",
           TUNE_GLOBAL_CHECKPOINT_S="1")  # Tune snapshots its state every second: a kill loses little
ENV.pop("RAY_ADDRESS", None)

SPACE = ("tune.space={classifier.alpha: {type: choice, values: [0.5, 1.0]}, "
         "augment.n: {type: choice, values: [1, 2]}, classifier.tau: {type: loguniform, low: 0.05, high: 0.5}}")


def test_point_overrides_and_config():
    assert point_overrides({"generator.lam": -0.5, "augment.n": 2, "generator.importance_norm": "rank",
                            "generator.label_prompt": False}) == [
        "augment.n=2", "generator.importance_norm=rank", "generator.label_prompt=false", "generator.lam=-0.5"]
    cfg = point_config(["experiment=smoke"], "india_covid_x", ["data.protocol=fraction", "data.fraction=0.1"],
                       {"generator.lam": -0.5, "classifier.alpha": 0.5}, 42)
    assert (cfg.dataset.name, cfg.data.fraction, cfg.generator.lam, cfg.classifier.alpha, cfg.seed) == (
        "india_covid_x", 0.1, -0.5, 0.5, 42)
    with pytest.raises(ConfigError, match="mode=static"):
        point_config(["experiment=smoke"], None, [], {"augment.mode": "reflective"}, 13)


def test_generator_key_ignores_decoding_settings_only():
    a = load_config(["experiment=smoke"]).generator
    b = load_config(["experiment=smoke", "generator.group_index=1", "generator.reverse_steps=1",
                     "generator.temperature=0.7"]).generator
    c = load_config(["experiment=smoke", "generator.lam=-0.5"]).generator
    assert generator_training_key(a) == generator_training_key(b)
    assert generator_training_key(a) != generator_training_key(c)
    assert not set(DECODING_FIELDS) & set(generator_training_key(a))


def test_proxy_recipe_ignores_what_the_proxy_never_reads():
    a = load_config(["experiment=smoke"]).classifier
    b = load_config(["experiment=smoke", "classifier.tau=0.3", "classifier.alpha=0.5",
                     "classifier.contrastive=positives", "classifier.pseudo_per_step=0"]).classifier
    c = load_config(["experiment=smoke", "classifier.lr=1e-4"]).classifier
    assert proxy_recipe(a) == proxy_recipe(b) and proxy_recipe(a).alpha == 0
    assert proxy_recipe(a) != proxy_recipe(c)


@pytest.mark.parametrize("override,needle", [
    ("tune.space={generator.lamb: {type: choice, values: [0]}}", "did you mean generator.lam"),
    ("tune.space={generator.lam: {type: normal, values: [0]}}", "tune.space.generator.lam.type='normal' is invalid"),
    ("tune.space={generator.lam: {type: uniform, low: 1, high: 0}}", "low < high"),
    ("tune.space={classifier.tau: {type: loguniform, low: 0, high: 1}}", "must be > 0 for loguniform"),
    ("tune.scheduler=hyperband", "tune.scheduler='hyperband' is invalid"),
    ("tune.study=a/b", "must be a folder name"),
])
def test_bad_study_settings_are_refused(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        load_config([override])


def test_best_experiment_yaml_is_a_loadable_preset(tmp_path):
    text = best_experiment_yaml("s", ["experiment=smoke"], {"generator.lam": -0.5, "augment.n": 1}, 0.61,
                                ["sst2"], [13])
    assert text.startswith("# @package _global_\n") and WRITTEN_BY in text
    body = OmegaConf.create(text)
    assert body.experiment == "s_best" and body.generator.lam == -0.5 and body.augment.n == 1
    assert body.model.name == "tiny" and "dataset" not in body and "tune" not in body
    # the preset loads as an experiment (Hydra finds it in a config folder of its own)
    configs = tmp_path / "configs"
    import shutil

    shutil.copytree(REPO / "configs", configs)
    (configs / "experiment" / "s_best.yaml").write_text(text)
    from dcls_core import config as config_mod

    original = config_mod.configs_dir
    config_mod.configs_dir = lambda: configs
    try:
        cfg = load_config(["experiment=s_best"])
    finally:
        config_mod.configs_dir = original
    assert (cfg.generator.lam, cfg.augment.n, cfg.model.name, cfg.experiment) == (-0.5, 1, "tiny", "s_best")


def _events(folder: Path):
    path = folder / "trial_events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 5-trial tiny study, killed after 2 trials finished, then resumed to the end."""
    root = tmp_path_factory.mktemp("tune")
    args = [sys.executable, str(REPO / "jobs" / "tune.py"), "experiment=smoke", f"storage_path={root}",
            "tune.study=tiny", SPACE, "tune.num_samples=5", "tune.grace_period=1", "tune.max_concurrent_trials=1",
            "tune.final_seeds=[13]", f"tune.export_dir={root / 'export'}"]
    folder = root / "tune" / "tiny"
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and sum(e["event"] == "end" for e in _events(folder)) < 2:
            assert proc.poll() is None, "the study ended before it was stopped"
            time.sleep(0.5)
        time.sleep(3)  # Tune records the trial's result
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = _events(folder)
    assert not (folder / "trials.csv").exists(), "the study finished before it was stopped"
    (root / "export").mkdir()
    done = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return {"folder": folder, "before": before, "after": _events(folder), "log": done.stdout + done.stderr,
            "root": root}


@pytest.mark.ray
@pytest.mark.slow
def test_study_table_objective_and_asha(study):
    table = pd.read_csv(study["folder"] / "trials.csv")
    assert len(table) == 5 and table["trial_id"].is_unique
    assert {"config/classifier.alpha", "config/augment.n", "config/classifier.tau", "dev_macro_f1", "complete",
            "iterations", "seconds", "built"} <= set(table.columns)
    assert table["config/classifier.alpha"].isin([0.5, 1.0]).all()
    assert table["config/classifier.tau"].between(0.05, 0.5).all()
    assert table["dev_macro_f1"].between(0, 1).all()
    # finished trials report every dev evaluation (3 classifier steps, eval_every 2: steps 0, 2, 3) + the result
    assert (table.loc[table["complete"], "iterations"] == 4).all()
    assert (table.loc[~table["complete"], "iterations"] < 4).all()  # stopped by ASHA
    summary = json.loads((study["folder"] / "study.json").read_text())
    best = table[table["complete"]].sort_values("dev_macro_f1", ascending=False, kind="stable").iloc[0]
    assert summary["best"]["dev_macro_f1"] == pytest.approx(best["dev_macro_f1"])
    assert (study["folder"] / "plots" / "params.png").stat().st_size > 1000


@pytest.mark.ray
@pytest.mark.slow
def test_study_trains_the_generator_once(study):
    summary = json.loads((study["folder"] / "study.json").read_text())
    table = pd.read_csv(study["folder"] / "trials.csv")
    # alpha, tau and n do not change the proxy, importance or generator: computed once for 5 trials
    assert summary["reuse"]["computed"]["proxy"] == 1
    assert summary["reuse"]["computed"]["generator"] == 1
    assert summary["reuse"]["computed"]["generation"] == table["config/augment.n"].nunique()
    builders = [e for e in study["after"] if e["event"] == "end" and "generator" in e["built"]]
    assert len(builders) == 1
    assert "1 generator(s) trained" in summary["reuse"]["note"]


@pytest.mark.ray
@pytest.mark.slow
def test_resumed_study_does_not_rerun_finished_trials(study):
    finished = {e["trial"] for e in study["before"] if e["event"] == "end"}
    assert len(finished) >= 2
    starts = [e["trial"] for e in study["after"] if e["event"] == "start"]
    for trial in finished:
        assert starts.count(trial) == 1, f"finished trial {trial} was run again"
    ends = {e["trial"] for e in study["after"] if e["event"] == "end"}
    table = pd.read_csv(study["folder"] / "trials.csv")
    assert set(table.loc[table["complete"], "trial_id"]) <= ends
    assert "resuming" in study["log"]


@pytest.mark.ray
@pytest.mark.slow
def test_study_writes_best_preset_and_final_evaluation(study):
    summary = json.loads((study["folder"] / "study.json").read_text())
    exported = study["root"] / "export" / "tiny_best.yaml"
    assert summary["best"]["experiment_file"] == str(exported)
    body = OmegaConf.create(exported.read_text())
    for key, value in summary["best"]["params"].items():
        assert OmegaConf.select(body, key) == pytest.approx(value) or (
            OmegaConf.select(body, key) is None and value == OmegaConf.select(
                OmegaConf.structured(load_config(["experiment=smoke"])), key)), key
    rows = {(r["arm"]): r for r in summary["final"]["rows"]}
    assert set(rows) == {"raw", "defaults", "best"}
    assert all(r["n"] == 1 and 0 <= r["accuracy_mean"] <= 100 for r in rows.values())
    raw_fit = next((study["folder"] / "shared").glob("*-s13/stages/raw-*/model/fit.json"))
    assert rows["raw"]["dev_macro_f1_mean"] == round(json.loads(raw_fit.read_text())["best_dev_macro_f1"] * 100, 2)
    assert "DiffusionCLS, tuned" in (study["folder"] / "final.md").read_text()


@pytest.mark.ray
@pytest.mark.slow
def test_trial_can_train_in_a_torchtrainer(tmp_path):
    """tune.trainer=ray_train: the trial builds a TorchTrainer (one worker) per fit and the loop's
    dev evaluations reach Tune through TuneReportCallback (Train V2 inside a Tune function trial)."""
    args = [sys.executable, str(REPO / "jobs" / "tune.py"), "experiment=smoke", f"storage_path={tmp_path}",
            "tune.study=rt", "tune.space={classifier.alpha: {type: choice, values: [0.5]}}", "tune.num_samples=1",
            "tune.final=false", "tune.trainer=ray_train", f"tune.export_dir={tmp_path}"]
    done = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "RayTrainWorker" in done.stdout + done.stderr  # the fit ran in a Train worker
    table = pd.read_csv(tmp_path / "tune" / "rt" / "trials.csv")
    # 3 dev evaluations + Train's final report forwarded, + the trial's own result
    assert len(table) == 1 and table.loc[0, "complete"] and table.loc[0, "iterations"] == 5
    assert 0 <= table.loc[0, "dev_macro_f1"] <= 1


def test_sweep_table_averages_each_metric_over_the_fits_of_finished_trials():
    from jobs.tune import sweep_markdown, sweep_table

    nan = float("nan")
    table = pd.DataFrame([
        {"complete": True, "config/generator.group_index": 3, "dev_macro_f1/a/s1": 0.5, "dev_macro_f1/a/s2": 0.7,
         "test_macro_f1/a/s1": 0.4, "test_macro_f1/a/s2": 0.6, "raw_test_macro_f1/a/s1": 0.5,
         "raw_test_macro_f1/a/s2": 0.5},
        {"complete": True, "config/generator.group_index": 1, "dev_macro_f1/a/s1": 0.6, "dev_macro_f1/a/s2": nan,
         "test_macro_f1/a/s1": 0.8, "test_macro_f1/a/s2": nan, "raw_test_macro_f1/a/s1": 0.5,
         "raw_test_macro_f1/a/s2": nan},
        {"complete": False, "config/generator.group_index": 2, "dev_macro_f1/a/s1": 0.9, "dev_macro_f1/a/s2": 0.9,
         "test_macro_f1/a/s1": 0.9, "test_macro_f1/a/s2": 0.9, "raw_test_macro_f1/a/s1": 0.9,
         "raw_test_macro_f1/a/s2": 0.9},
    ])
    rows = sweep_table(table, "generator.group_index")
    assert [r["value"] for r in rows] == [1, 3]  # sorted by value; the stopped trial left out
    assert rows[0]["fits"] == 1 and rows[0]["test_macro_f1_mean"] == 80.0 and rows[0]["test_macro_f1_std"] == 0.0
    assert rows[1]["fits"] == 2 and rows[1]["dev_macro_f1_mean"] == 60.0 and rows[1]["dev_macro_f1_std"] == 10.0
    assert rows[1]["raw_test_macro_f1_mean"] == 50.0
    text = sweep_markdown(rows, "generator.group_index")
    assert "| 3 | 2 | 60.00 ± 10.00 | 50.00 ± 10.00 | 50.00 ± 0.00 |" in text


@pytest.mark.ray
@pytest.mark.slow
def test_a_one_setting_sweep_with_trial_test_draws_the_figure_and_still_picks_on_dev(tmp_path):
    """tune.trial_test (the fig6 preset): each trial's fits are also scored on test, the sweep's
    table and plot are written, the raw arm (one proxy per seed) is the same for every value, and
    the best point is the one with the best dev score."""
    args = [sys.executable, str(REPO / "jobs" / "tune.py"), "experiment=smoke", f"storage_path={tmp_path}",
            "tune.study=sweep", "tune.space={generator.group_index: {type: grid, values: [1, 3]}}",
            "tune.num_samples=1", "tune.scheduler=fifo", "tune.final=false", "tune.trial_test=true",
            f"tune.export_dir={tmp_path}"]
    done = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    folder = tmp_path / "tune" / "sweep"
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == 2 and table["complete"].all()
    test_cols = [c for c in table.columns if c.startswith("test_macro_f1/")]
    raw_cols = [c for c in table.columns if c.startswith("raw_test_macro_f1/")]
    assert len(test_cols) == len(raw_cols) == 1 and table[test_cols[0]].between(0, 1).all()
    assert table[raw_cols[0]].nunique() == 1
    summary = json.loads((folder / "study.json").read_text())
    assert [r["value"] for r in summary["sweep"]] == [1, 3]
    assert summary["best"]["dev_macro_f1"] == table["dev_macro_f1"].max()
    assert (folder / "plots" / "sweep.png").stat().st_size > 0
    assert (folder / "sweep.md").read_text().count("\n") == 4
    assert summary["reuse"]["computed"]["generator"] == 1  # the group index is a decoding setting


def _hold(lock, log, name, seconds):
    from dcls_core.artifacts import file_lock

    with file_lock(lock):
        with open(log, "a") as f:
            f.write(f"{name}+\n")
        time.sleep(seconds)
        with open(log, "a") as f:
            f.write(f"{name}-\n")


def test_file_lock_makes_the_second_process_wait(tmp_path):
    """What keeps two trials from computing one shared stage (or one warm-up) at once."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    lock, log = tmp_path / "x.lock", tmp_path / "log"
    first = ctx.Process(target=_hold, args=(lock, log, "a", 1.0))
    first.start()
    while not log.exists():
        time.sleep(0.01)
    second = ctx.Process(target=_hold, args=(lock, log, "b", 0.0))
    second.start()
    first.join(10)
    second.join(10)
    assert log.read_text().split() == ["a+", "a-", "b+", "b-"]


def test_study_overrides_drop_only_the_tune_settings():
    from jobs.tune import study_overrides

    assert study_overrides(["experiment=demo", "tune=english", "tune.num_samples=3", "+tune.x=1", "seed=4"]) == [
        "experiment=demo", "seed=4"]
