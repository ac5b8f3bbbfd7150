"""Benchmark suites (jobs/benchmark_suite.py): a tiny suite through real Ray tasks, every method
on the same rows sharing the (setting, seed)'s stages, resumed without rerunning a finished run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="1")
ENV.pop("RAY_ADDRESS", None)
SUITE = {"name": "tiny", "overrides": ["experiment=smoke"], "settings": {"smoke": []},
         "methods": {"raw": ["augment.method=none"], "aeda": ["augment.method=aeda"],
                     "diffusion": ["augment.method=diffusion"]},
         "seeds": [13], "peers": ["probe"], "metrics": ["accuracy", "macro_f1"],
         "paper": {"smoke": {"diffusion": 50.0}}}


def _suite(tmp_path, *extra):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    return subprocess.run([sys.executable, str(REPO / "jobs" / "benchmark.py"), "suite", str(path),
                           "--storage-path", str(tmp_path / "store"), "--results-dir", str(tmp_path / "results"),
                           *extra], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    done = _suite(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return {"root": root, "log": done.stdout + done.stderr,
            "summary": json.loads((root / "results" / "tiny.json").read_text())}


@pytest.mark.ray
@pytest.mark.slow
def test_every_method_and_peer_has_a_row(suite):
    rows = {r["method"]: r for r in suite["summary"]["rows"]}
    assert list(rows) == ["raw", "aeda", "diffusion", "probe"]
    for method, row in rows.items():
        assert row["n"] == 1 and 0 <= row["accuracy_mean"] <= 100, method
    assert rows["diffusion"]["paper"] == 50.0
    table = (suite["root"] / "results" / "tiny.md").read_text()
    assert "| diffusion |" in table and "[50.00]" in table and "## macro_f1" in table
    assert (suite["root"] / "results" / "tiny.png").stat().st_size > 0


@pytest.mark.ray
@pytest.mark.slow
def test_every_augmenting_method_has_a_pseudo_sample_diagnostics_row(suite):
    rows = {r["method"]: r for r in suite["summary"]["rows"]}
    assert "diagnostics" not in rows["raw"]  # no pseudo samples, no diagnostics
    for method in ("aeda", "diffusion"):
        d = rows[method]["diagnostics"]
        assert d["n"] == 1 and 0 <= d["label_consistency"] <= 1 and 0 <= d["duplicate_rate"] <= 1, method
        assert 0 < d["distinct_2"] <= 1 and 0 < d["distinct_2_original"] <= 1, method
    assert rows["aeda"]["diagnostics"]["mean_changed_ratio"] > 0  # AEDA always inserts punctuation
    table = (suite["root"] / "results" / "tiny.md").read_text()
    assert "## pseudo-sample diagnostics" in table and "| smoke | aeda | 1 |" in table


@pytest.mark.ray
@pytest.mark.slow
def test_the_driver_log_shows_each_run_starting_and_its_fit_progress(suite):
    log = suite["log"]
    for i, method in enumerate(["raw", "aeda", "diffusion"], start=1):
        assert f"suite tiny: start smoke {method} seed 13 ({i} of 3)" in log
    # the fit's own lines, logged inside the Ray task, reach the driver (not only the end result)
    progress = [line for line in log.splitlines() if "run_one pid=" in line and "dcls_core.training INFO step" in line]
    assert progress, log[-3000:]


@pytest.mark.ray
@pytest.mark.slow
def test_the_runs_of_a_seed_share_rows_and_stages(suite):
    runs = [r for r in suite["summary"]["runs"] if r["method"] != "setfit"]
    for seed in (13,):
        mine = [r for r in runs if r["seed"] == seed]
        assert len(mine) == 3
        assert len({r["train_rows"] for r in mine}) == 1 and len({json.dumps(r["raw_test"]) for r in mine}) == 1
        assert sum("raw" in r["built"] for r in mine) == 1  # one raw arm for every method of the seed
        stages = suite["root"] / "store" / "suites" / "tiny" / "stages" / f"smoke-s{seed}" / "stages"
        assert len(list(stages.glob("raw-*"))) == 1 and len(list(stages.glob("generation-*"))) == 2
    by = {(r["method"], r["seed"]): r for r in runs}
    assert by[("raw", 13)]["arm"] == "raw" and by[("raw", 13)]["pseudo_rows"] == 0
    # every record carries the shared raw arm's dev score, so "− raw on dev" needs no log
    assert len({json.dumps(r["raw_dev"]) for r in runs}) == 1 and by[("raw", 13)]["dev"] == by[("raw", 13)]["raw_dev"]
    assert by[("aeda", 13)]["arm"] == "augmented" and by[("aeda", 13)]["pseudo_rows"] > 0
    assert {"importance", "generator"} <= set(by[("diffusion", 13)]["built"])
    assert "importance" not in by[("aeda", 13)]["built"]  # a baseline reads neither importance nor generator


@pytest.mark.ray
@pytest.mark.slow
def test_a_resumed_suite_runs_only_what_is_missing(suite):
    root = suite["root"]
    runs = root / "store" / "suites" / "tiny" / "runs"
    (runs / "smoke--aeda--s13.json").unlink()
    again = _suite(root)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "1 to do" in again.stderr
    redone = json.loads((runs / "smoke--aeda--s13.json").read_text())
    assert redone["built"] == []  # its stages were kept: nothing recomputed
    assert json.loads((root / "results" / "tiny.json").read_text())["rows"] == suite["summary"]["rows"]


def test_a_bad_method_setting_fails_before_any_run(tmp_path):
    done = _suite(tmp_path, "--set", "methods={raw: [augment.methd=none]}")
    assert done.returncode == 2 and "augment.methd" in done.stderr
    assert not (tmp_path / "store").exists()


def test_resume_from_adopts_the_committed_records_of_unchanged_runs_only(tmp_path):
    from dcls_core.config import ConfigError
    from jobs.benchmark_suite import adopt_records, load_suite, run_file

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    suite = load_suite(str(path))
    folder = tmp_path / "store" / "suites" / "tiny"
    record = lambda method, seed, acc: {"setting": "smoke", "method": method, "seed": seed,  # noqa: E731
                                        "test": {"accuracy": acc, "macro_f1": acc}}
    results = {"suite": "tiny", "overrides": SUITE["overrides"], "settings": SUITE["settings"],
               "methods": dict(SUITE["methods"], aeda=["augment.method=aeda", "augment.n=2"]),
               "runs": [record("raw", 13, 0.6), record("diffusion", 13, 0.7), record("aeda", 13, 0.5),
                        record("raw", 99, 0.9)]}
    saved = tmp_path / "tiny.json"
    saved.write_text(json.dumps(results))
    kept = run_file(folder, record("diffusion", 13, 0))
    kept.parent.mkdir(parents=True)
    kept.write_text("{\"mine\": true}")

    assert adopt_records(suite, folder, saved) == 1
    assert json.loads(run_file(folder, record("raw", 13, 0)).read_text())["test"]["accuracy"] == 0.6
    assert json.loads(kept.read_text()) == {"mine": True}  # an existing run is never overwritten
    assert not run_file(folder, record("aeda", 13, 0)).exists()  # its method changed since: runs again
    assert not run_file(folder, record("raw", 99, 0)).exists()  # a seed the suite does not plan
    with pytest.raises(ConfigError, match="ablation"):
        saved.write_text(json.dumps(dict(results, suite="ablation")))
        adopt_records(suite, folder, saved)
    done = _suite(tmp_path, "--resume-from", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "missing.json" in done.stderr


def _slice(suite, name, *flags):
    """Run a slice of the module's suite grown to seeds 13 and 14 (its results in ``<root>/<name>``);
    return its stderr, the run files before and after, and its results file."""
    root = suite["root"]
    runs = root / "store" / "suites" / "tiny" / "runs"
    before = sorted(p.name for p in runs.glob("*.json"))
    done = _suite(root, "--set", "seeds=[13,14]", *flags, "--results-dir", str(root / name))
    assert done.returncode == 0, done.stderr[-4000:]
    after = sorted(p.name for p in runs.glob("*.json"))
    return done.stderr, before, after, json.loads((root / name / "tiny.json").read_text())


@pytest.mark.ray
@pytest.mark.slow
def test_a_slice_runs_only_its_seeds_and_keeps_every_record_in_the_table(suite):
    log, before, after, sliced = _slice(suite, "sliced", "--only-seeds", "13")
    assert "6 runs (+0 SetFit), 0 to do" in log  # seed 13's runs are all finished; 14 is left out
    assert "running only settings all, seeds [13]" in log
    assert after == before  # seed 14 was not run
    assert sliced["seeds"] == [13, 14] and len([r for r in sliced["runs"] if r["seed"] == 13]) == len(before)
    table = (suite["root"] / "sliced" / "tiny.md").read_text()
    assert "(n=1)" in table  # the table says each cell has one of the suite's two seeds


@pytest.mark.ray
@pytest.mark.slow
def test_a_method_slice_runs_only_its_methods(suite):
    log, before, after, summary = _slice(suite, "methods", "--only-seeds", "14", "--only-methods", "raw")
    assert "6 runs (+0 SetFit), 1 to do" in log
    assert after == sorted(before + ["smoke--raw--s14.json"])
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["raw"]["n"] == 2 and rows["aeda"]["n"] == 1 and rows["probe"]["n"] == 2


def test_a_slice_naming_what_the_suite_lacks_fails_before_any_run(tmp_path):
    done = _suite(tmp_path, "--only-settings", "nope")
    assert done.returncode == 2 and "nope" in done.stderr and "smoke" in done.stderr
    done = _suite(tmp_path, "--only-seeds", "99")
    assert done.returncode == 2 and "99" in done.stderr and "[13]" in done.stderr
    done = _suite(tmp_path, "--only-methods", "probe")  # the probe comes from the runs, not a task of its own
    assert done.returncode == 2 and "probe" in done.stderr and "['raw', 'aeda', 'diffusion']" in done.stderr
    assert not (tmp_path / "store").exists()


def test_the_table_gives_a_spread_only_where_there_are_several_seeds():
    from jobs.benchmark_suite import markdown

    row = {"setting": "smoke", "accuracy_mean": 61.0, "accuracy_std": 0.0}
    summary = {"suite": "tiny", "settings": {"smoke": [], "other": []}, "seeds": [13, 42], "metrics": ["accuracy"],
               "notes": [], "rows": [dict(row, method="raw", n=2, accuracy_std=1.5),
                                     dict(row, method="aeda", n=1)]}
    table = markdown(summary)
    assert "| raw | 61.00 ± 1.50 | - |" in table
    assert "| aeda | 61.00 (n=1) | - |" in table  # one seed: no "± 0.00" claiming no spread


def test_the_table_says_where_an_augmenter_added_no_pseudo_sample(tmp_path):
    """A run whose augmenter ran but added nothing (retrieval with no unlabelled text left) scores
    the no-pseudo-sample arm: the table says so instead of showing it as the method's score."""
    from jobs.benchmark_suite import load_suite, markdown, summarise

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(dict(SUITE, seeds=[13, 42]), sort_keys=False))
    suite = load_suite(str(path))

    def record(method, seed, pseudo_rows, skipped=None):
        return {"setting": "smoke", "method": method, "seed": seed, "arm": "augmented", "pseudo_rows": pseudo_rows,
                "skipped": skipped, "test": {"accuracy": 0.6, "macro_f1": 0.6},
                "probe_test": {"accuracy": 0.4, "macro_f1": 0.4}}

    summary = summarise(suite, [record("aeda", 13, 0), record("aeda", 42, 24),
                                record("diffusion", 13, 48), record("diffusion", 42, 0, skipped="offline")])
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["aeda"]["no_pseudo_runs"] == 1 and "no_pseudo_runs" not in rows["diffusion"]  # skipped says why
    table = markdown(summary)
    assert "| aeda | 60.00 ± 0.00 (no pseudo samples in 1 of 2 runs) |" in table


def test_a_slice_whose_shared_stages_are_being_built_yields_its_core_to_other_work():
    from jobs.benchmark_suite import next_to_start

    def run(setting, method, seed=13):
        return ("run", {"setting": setting, "method": method, "seed": seed})

    peer = ("setfit", {"setting": "a", "method": "setfit", "seed": 13})
    running = [run("a", "raw")]
    # a's raw arm is still being built: its next run would only wait on that lock
    assert next_to_start([run("a", "eda"), run("a", "aeda"), peer], running, warm=set()) == 2
    assert next_to_start([run("a", "eda"), run("b", "raw")], running, warm=set()) == 1
    assert next_to_start([run("a", "eda"), run("a", "raw", seed=42)], running, warm=set()) == 1
    # once a run of the slice has finished, its runs go in queue order
    assert next_to_start([run("a", "eda"), peer], running, warm={("a", 13)}) == 0
    # nothing else to do: start it anyway (it waits, as before)
    assert next_to_start([run("a", "eda"), run("a", "aeda")], running, warm=set()) == 0
    # a running SetFit peer builds no shared stage
    assert next_to_start([run("a", "eda")], [peer], warm=set()) == 0


def test_report_only_rewrites_the_table_from_the_records_and_runs_nothing(tmp_path):
    record = lambda method, acc: {"setting": "smoke", "method": method, "seed": 13,  # noqa: E731
                                  "test": {"accuracy": acc, "macro_f1": acc}, "probe_test": {"accuracy": 0.4,
                                                                                             "macro_f1": 0.4}}
    saved = tmp_path / "tiny.json"
    saved.write_text(json.dumps({"suite": "tiny", "overrides": SUITE["overrides"], "settings": SUITE["settings"],
                                 "methods": SUITE["methods"], "wall_seconds_last_invocation": 4858.0,
                                 "runs": [record("raw", 0.6), record("aeda", 0.65)]}))
    results = tmp_path / "results"
    results.mkdir()
    (results / "tiny.json").write_text(saved.read_text())  # the committed file the report rewrites
    done = _suite(tmp_path, "--resume-from", str(saved), "--report-only")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "not run, left out of the table: ['smoke diffusion seed 13']" in done.stderr
    assert "Started a local Ray instance" not in done.stderr  # nothing ran, so no Ray either
    runs = tmp_path / "store" / "suites" / "tiny" / "runs"
    assert sorted(p.name for p in runs.glob("*.json")) == ["smoke--aeda--s13.json", "smoke--raw--s13.json"]
    summary = json.loads((results / "tiny.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["aeda"]["accuracy_mean"] == 65.0 and rows["diffusion"]["n"] == 0 and rows["probe"]["n"] == 1
    assert summary["wall_seconds_last_invocation"] == 4858.0  # an invocation that ran nothing keeps the figure
    assert "| aeda | 65.00 |" in (results / "tiny.md").read_text()


def test_a_method_slice_starts_its_runs_in_the_order_it_names_them():
    from jobs.benchmark_suite import Slice

    runs = [{"setting": s, "method": m, "seed": 13} for s in ("a", "b") for m in ("raw", "aeda", "diffusion")]
    order = [(r["setting"], r["method"]) for r in Slice(methods=("diffusion", "raw", "aeda")).ordered(runs)]
    # each (setting, seed) keeps its place (they share stages); inside it, the named order
    assert order == [("a", "diffusion"), ("a", "raw"), ("a", "aeda"), ("b", "diffusion"), ("b", "raw"), ("b", "aeda")]
    assert Slice().ordered(runs) == runs  # no --only-methods: the suite's order


def test_minus_raw_is_paired_on_the_seeds_both_ran(tmp_path):
    """Raw has a seed the method lacks: the difference uses only the shared seeds, not the two means."""
    from jobs.benchmark_suite import load_suite, markdown, summarise

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(dict(SUITE, seeds=[13, 42, 87]), sort_keys=False))
    suite = load_suite(str(path))

    def record(method, seed, f1):
        return {"setting": "smoke", "method": method, "seed": seed, "arm": "augmented", "pseudo_rows": 4,
                "test": {"accuracy": f1, "macro_f1": f1}, "probe_test": {"accuracy": 0.1, "macro_f1": 0.1}}

    summary = summarise(suite, [record("raw", 13, 0.50), record("raw", 42, 0.40), record("raw", 87, 0.90),
                                record("aeda", 13, 0.52), record("aeda", 42, 0.44)])
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["aeda"]["paired_seeds"] == [13, 42]
    assert rows["aeda"]["macro_f1_minus_raw"] == [3.0, 1.0]  # (+2, +4), not 48.0 - 60.0
    assert "paired_seeds" not in rows["raw"]
    assert "| aeda | +3.00 ± 1.00 (n=2) |" in markdown(summary)
