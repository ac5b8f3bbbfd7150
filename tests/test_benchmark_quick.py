"""The quick benchmark's task queue: warm-ups before their seeds, costliest first, workers kept busy,
nothing lost when a run stops (part files), nothing rerun when it resumes. No models are loaded."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs import benchmark_quick as bq


def _runs(setting, seed, methods):
    return [{"setting": setting, "seed": seed, "method": m} for m in methods]


def test_plan_puts_each_corpus_warmup_first_then_costliest_seeds_and_skips_finished_ones():
    data = {"runs": _runs("sst2_10shot", 13, bq.METHODS) + _runs("india_covid_x_10pct", 13, ["probe"])}
    tasks = bq.plan_tasks(["sst2_10shot", "sst2_5shot", "india_covid_x_10pct"], [13, 42], data)
    # one warm-up per corpus (SST-2 settings share theirs), before any seed task
    assert tasks[:2] == [("warmup", "india_covid_x_10pct", 13), ("warmup", "sst2_10shot", 42)]
    seeds = tasks[2:]
    assert ("seed", "sst2_10shot", 13) not in seeds  # every method finished: not planned again
    assert ("seed", "india_covid_x_10pct", 13) in seeds  # only the probe finished: planned
    costs = [bq.COST[s] for _, s, _ in seeds]
    assert costs == sorted(costs, reverse=True)
    assert len(seeds) == 5


def test_the_default_study_leaves_retrieval_out_without_rerunning_or_dropping_it():
    # a seed whose default methods all finished is not planned again, retrieval or not
    data = {"runs": _runs("sst2_10shot", 13, bq.DEFAULT_METHODS) + _runs("sst2_10shot", 42, ["probe", "raw"])}
    assert "retrieval" not in bq.DEFAULT_METHODS and set(bq.DEFAULT_METHODS) < set(bq.METHODS)
    tasks = bq.plan_tasks(["sst2_10shot"], [13, 42], data, bq.DEFAULT_METHODS)
    assert [t for t in tasks if t[0] == "seed"] == [("seed", "sst2_10shot", 42)]
    # asked for, retrieval makes the finished seed a task again
    assert ("seed", "sst2_10shot", 13) in bq.plan_tasks(["sst2_10shot"], [13], data, ["retrieval"])
    parser = __import__("argparse").ArgumentParser()
    bq.add_quick(parser.add_subparsers())
    assert parser.parse_args(["quick"]).methods == bq.DEFAULT_METHODS


class _Recorder:
    """Runs tasks on a thread pool, logging starts/ends, so the schedule can be checked."""

    def __init__(self, jobs, fail=()):
        self.pool = ThreadPoolExecutor(max_workers=jobs + 2)  # more threads than jobs: schedule must limit
        self.lock = threading.Lock()
        self.events, self.running, self.peak, self.fail = [], 0, 0, set(fail)

    def submit(self, task):
        def work():
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
                self.events.append(("start", task))
            time.sleep(0.02 if task[0] == "warmup" else 0.01)
            with self.lock:
                self.running -= 1
                self.events.append(("end", task))
            if task in self.fail:
                raise RuntimeError(f"boom {task}")
            return task, None
        return self.pool.submit(work)


def test_schedule_never_starts_a_seed_before_its_warmup_and_keeps_at_most_jobs_running():
    tasks = bq.plan_tasks(["sst2_10shot", "sst2_5shot", "india_covid_x_10pct"], [1, 2, 3], {"runs": []})
    rec = _Recorder(jobs=2)
    bq.schedule(tasks, 2, rec.submit)
    assert rec.peak == 2
    ended = set()
    for kind, task in rec.events:
        if kind == "end":
            ended.add(task)
        elif task[0] == "seed":
            warmup = next(t for t in tasks if t[0] == "warmup" and bq.corpus_of(t[1]) == bq.corpus_of(task[1]))
            assert warmup in ended, f"{task} started before {warmup} finished"
    assert {t for k, t in rec.events if k == "end"} == set(tasks)  # every task ran once
    assert sum(1 for k, _ in rec.events if k == "start") == len(tasks)


def test_a_failed_warmup_stops_only_its_corpus_and_is_reported():
    tasks = bq.plan_tasks(["sst2_10shot", "india_covid_x_10pct"], [1, 2], {"runs": []})
    broken = ("warmup", "india_covid_x_10pct", 1)
    rec = _Recorder(jobs=2, fail={broken})
    with pytest.raises(SystemExit, match="warm-up failed") as err:
        bq.schedule(tasks, 2, rec.submit)
    started = {t for k, t in rec.events if k == "start"}
    assert {("seed", "sst2_10shot", 1), ("seed", "sst2_10shot", 2)} <= started  # the other corpus ran
    assert not any(t[0] == "seed" and t[1] == "india_covid_x_10pct" for t in started)
    assert "india_covid_x_10pct" in str(err.value)


def test_merge_parts_folds_finished_methods_once_and_removes_the_parts(tmp_path):
    out = tmp_path / "quick.json"
    out.write_text(json.dumps({"runs": _runs("sst2_5shot", 1, ["probe"])}))
    bq._part(out, "sst2_5shot", 1).write_text(json.dumps({"runs": _runs("sst2_5shot", 1, ["probe", "raw"])}))
    bq._part(out, "sst2_5shot", 2).write_text(json.dumps({"runs": _runs("sst2_5shot", 2, ["setfit"])}))
    data = bq.merge_parts(out)
    got = sorted((r["seed"], r["method"]) for r in data["runs"])
    assert got == [(1, "probe"), (1, "raw"), (2, "setfit")]
    assert json.loads(out.read_text())["runs"] == data["runs"]
    assert not list(tmp_path.glob("quick.part-*.json"))


def _metric_runs(setting, seed, methods, acc, heldout=None):
    runs = []
    for m in methods:
        metrics = {"dev": {"accuracy": acc, "macro_f1": acc}, "test": {"accuracy": acc, "macro_f1": acc}}
        if heldout is not None:
            metrics["heldout"] = {"accuracy": heldout, "macro_f1": heldout}
        runs.append({"setting": setting, "seed": seed, "method": m, "metrics": metrics, "seconds": 1.0})
    return runs


def test_a_study_of_some_methods_is_complete_without_the_others_and_reports_heldout():
    study = ["raw", "augmented"]
    data = {"runs": _metric_runs("sst2_10shot", 1, study, 0.6, heldout=0.5)
            + _metric_runs("sst2_10shot", 2, ["raw"], 0.7, heldout=0.4)}
    tasks = bq.plan_tasks(["sst2_10shot"], [1, 2], data, methods=study)
    assert ("seed", "sst2_10shot", 1) not in tasks and ("seed", "sst2_10shot", 2) in tasks
    table = bq.summarise(data["runs"])["sst2_10shot"]
    assert set(table) == set(study)
    assert table["raw"]["n"] == 1  # seed 2 lacks the augmented run: left out of the means
    assert table["augmented"]["heldout_macro_f1_mean"] == 50.0
    assert "held-out dev macro-F1" in bq.markdown(bq.summarise(data["runs"]))


def test_compare_pairs_augmented_with_raw_per_seed(tmp_path):
    runs = _metric_runs("sst2_10shot", 1, ["raw"], 0.60, heldout=0.50) + \
        _metric_runs("sst2_10shot", 1, ["augmented"], 0.64, heldout=0.56) + \
        _metric_runs("sst2_10shot", 2, ["raw"], 0.70, heldout=0.60) + \
        _metric_runs("sst2_10shot", 2, ["augmented"], 0.68, heldout=0.62)
    path = tmp_path / "sst2_10shot_lam_neg.json"
    path.write_text(json.dumps({"runs": runs, "protocol": {"overrides": bq.COMMON + ["generator.lam=-0.5"]}}))
    row = next(line for line in bq.compare([path]).splitlines() if "lam_neg" in line)
    assert "generator.lam=-0.5" in row and "| augmented | 2 |" in row
    assert "55.00 → 59.00" in row  # held-out means of raw and augmented
    assert "+4.00 ± 2.00" in row  # paired held-out differences +6 and +2
    assert "+1.00 ± 3.00" in row  # paired test differences +4 and -2


def test_rerun_drops_only_the_named_methods_of_the_chosen_settings(tmp_path, monkeypatch):
    import argparse

    out = tmp_path / "quick.json"
    runs = _metric_runs("sst2_10shot", 1, ["raw", "augmented"], 0.6) + _metric_runs("sst2_5shot", 1, ["augmented"], 0.5)
    out.write_text(json.dumps({"runs": runs}))
    seen = {}
    monkeypatch.setattr(bq, "run_settings", lambda *a, **k: seen.update(data=json.loads(out.read_text())))
    parser = argparse.ArgumentParser()
    bq.add_quick(parser.add_subparsers())
    args = parser.parse_args(["quick", "--out", str(out), "--settings", "sst2_10shot", "--rerun", "augmented"])
    args.func(args)
    left = sorted((r["setting"], r["method"]) for r in seen["data"]["runs"])
    assert left == [("sst2_10shot", "raw"), ("sst2_5shot", "augmented")]


def test_signal_summary_pairs_each_variant_with_the_probe_of_its_seed():
    from jobs.benchmark_signal import markdown, summarise

    def probes(probe, retrieval):
        return {"probe": {"heldout": {"macro_f1": probe, "accuracy": probe}, "test": {"accuracy": probe, "macro_f1": probe}},
                "retrieval q0.75 n16": {"heldout": {"macro_f1": retrieval, "accuracy": retrieval},
                                        "test": {"accuracy": retrieval + 0.01, "macro_f1": retrieval}}}

    runs = [{"setting": "sst2_10shot", "seed": 1, "probes": probes(0.60, 0.66)},
            {"setting": "sst2_10shot", "seed": 2, "probes": probes(0.70, 0.68)}]
    row = summarise(runs)["sst2_10shot"]["retrieval q0.75 n16"]
    assert row["delta_heldout_mean"] == 2.0 and row["delta_heldout_std"] == 4.0  # +6 and -2
    assert row["delta_heldout_min"] == -2.0 and row["delta_test_accuracy_mean"] == 3.0
    assert "| sst2_10shot | retrieval q0.75 n16 | 2 | 67.00 | +2.00 ± 4.00 | -2.00 | +3.00 |" in markdown(summarise(runs))
