"""``python jobs/benchmark.py <suite>``: the paper's benchmark suites, every method side by side.

A suite (``configs/suite/<name>.yaml``, ``dcls_core.config.SuiteConfig``) is a list of pipeline
runs: one per (setting, method, seed), each the pipeline's own stages (``dcls_core.stages``) run
in-process in one Ray task (``suite.cpus_per_run`` CPUs). The runs of a (setting, seed) share one
locked stage store, so the sampled rows, the raw arm and the no_augmentation arm are computed once
and every method is scored on exactly the same rows, seeds, step budget and test set; the
generator warm-up is cached per corpus. Each method reports the classifier its run trains with its
pseudo samples (``augmented``; ``raw`` for ``augment.method=none``). Peers on the same rows: the
frozen-encoder probe (from the runs' evaluation) and SetFit (``pip install dcls[peers]``).

Resumable: every finished run is a JSON file under ``<storage_path>/suites/<suite>/runs/`` and is
never rerun; stopping and starting again goes on with what is missing; ``--resume-from`` adopts the
records of a results file (the committed ``benchmarks/results/<suite>.json``) on a machine that
lacks the run folder. Results:
``benchmarks/results/<suite>.json`` and ``.md`` (mean ± std over seeds, the paper's figures beside)
and ``benchmarks/results/<suite>.png`` (method x setting).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from dcls_core.diagnostics import HEADLINE

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmark.suite")
SUITES = ("fewshot", "partial", "domain", "ablation")


def _task_logging() -> None:
    """A Ray task's Python logging starts at WARNING: without INFO here a run's stage and fit
    progress (minutes of it) never reaches the driver's log. No-op where logging is set up."""
    from jobs.pipeline import LOG_FORMAT

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


# --------------------------------------------------------------------------- config
def load_suite(name_or_file: str, overrides: Sequence[str] = ()):
    """A suite preset (``configs/suite/<name>.yaml``) or a YAML file, with ``key=value`` overrides;
    every run's pipeline config is composed here, so a bad setting fails before any compute."""
    from omegaconf import OmegaConf

    from dcls_core.config import ConfigError, SuiteConfig, configs_dir

    path = Path(name_or_file)
    if not path.suffix:
        path = Path(configs_dir()) / "suite" / f"{name_or_file}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(configs_dir()) / "suite").glob("*.yaml"))
        raise ConfigError(f"suite {name_or_file!r}: no such preset or file (presets: {known})")
    try:
        node = OmegaConf.merge(OmegaConf.structured(SuiteConfig), OmegaConf.load(path),
                               OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # noqa: BLE001 - OmegaConf's errors name the key
        raise ConfigError(f"suite {name_or_file!r}: {exc}") from exc
    suite = OmegaConf.to_object(node)
    for setting in suite.settings:
        for method in suite.methods:
            run_config(suite, setting, method, suite.seeds[0])
    return suite


def run_config(suite, setting: str, method: str, seed: int, storage_path: Optional[str] = None):
    from dcls_core.config import load_config

    extra = [f"storage_path={storage_path}"] if storage_path else []
    return load_config(list(suite.overrides) + list(suite.settings[setting]) + list(suite.methods[method])
                       + [f"seed={seed}"] + extra)


def plan(suite) -> List[Dict[str, Any]]:
    """Every (setting, seed, method) run, a (setting, seed)'s runs together (they share stages)."""
    return [{"setting": s, "method": m, "seed": seed} for s in suite.settings for seed in suite.seeds
            for m in suite.methods]


@dataclass(frozen=True)
class Slice:
    """The runs of a suite to run now (``--only-settings``/``--only-seeds``/``--only-methods``; empty:
    all). The table still covers every finished run of the suite."""
    settings: Tuple[str, ...] = ()
    seeds: Tuple[int, ...] = ()
    methods: Tuple[str, ...] = ()

    def check(self, suite) -> None:
        """Refuse a slice that names what the suite does not plan, naming what it has."""
        from dcls_core.config import ConfigError

        runnable = list(suite.methods) + (["setfit"] if "setfit" in suite.peers else [])
        for flag, given, has in (("--only-settings", self.settings, list(suite.settings)),
                                 ("--only-seeds", self.seeds, list(suite.seeds)),
                                 ("--only-methods", self.methods, runnable)):
            unknown = [x for x in given if x not in has]
            if unknown:
                raise ConfigError(f"{flag} {unknown}: not in suite {suite.name!r} (it has: {has})")

    def holds(self, run: Dict[str, Any]) -> bool:
        return ((not self.settings or run["setting"] in self.settings) and (not self.seeds or run["seed"] in self.seeds)
                and (not self.methods or run["method"] in self.methods))

    def ordered(self, runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """``runs`` with each (setting, seed)'s runs in the order ``--only-methods`` names them (the
        user's priority: ``--only-methods diffusion raw`` does not queue DiffusionCLS behind every
        baseline); the (setting, seed) groups keep their order, since they share stages."""
        if not self.methods:
            return list(runs)
        groups = list(dict.fromkeys((r["setting"], r["seed"]) for r in runs))
        return sorted(runs, key=lambda r: (groups.index((r["setting"], r["seed"])), self.methods.index(r["method"])))

    def __str__(self) -> str:
        return ", ".join(f"{name} {list(v) if v else 'all'}" for name, v in
                         (("settings", self.settings), ("seeds", self.seeds), ("methods", self.methods)))


def suite_folder(storage_path: str, suite) -> Path:
    """Where a suite's run records and shared stages live."""
    return (Path(storage_path) / "suites" / suite.name).resolve()


def run_file(folder: Path, run: Dict[str, Any]) -> Path:
    return folder / "runs" / f"{run['setting']}--{run['method']}--s{run['seed']}.json"


# --------------------------------------------------------------------------- one run
def _scores(block: Dict[str, Any]) -> Dict[str, float]:
    return {"accuracy": float(block["accuracy"]), "macro_f1": float(block["macro_f1"])}


def run_one(suite, run: Dict[str, Any], folder: Path, storage_path: str, threads: int = 0) -> Dict[str, Any]:
    """One pipeline run of the suite, in this process; its record (also written to its run file)."""
    from dcls_core.artifacts import atomic_write_json, id_counts, read_json
    from dcls_core.data import load_dataset
    from dcls_core.stages import LocalExecutor, run_stages
    from dcls_core.storage import cache_dir
    from dcls_core.study import SharedStages

    _task_logging()
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    start = time.time()
    cfg = run_config(suite, run["setting"], run["method"], run["seed"], storage_path)
    bundle = load_dataset(cfg.dataset, cfg.data)
    store = SharedStages(folder / "stages" / f"{run['setting']}-s{run['seed']}")
    out = run_stages(cfg, bundle, store, LocalExecutor(cfg, cache_dir(cfg)))
    metrics = read_json(out["evaluation"].file("metrics.json"))
    arm = "augmented" if "augmented" in out["arms"] else "raw"
    gen = read_json(out["generation"].path / "_stage.json")["summary"] if out["generation"] is not None else {}
    record = {**run, "arm": arm, "test": _scores(metrics[arm]["test"]), "dev": _scores(metrics[arm]["dev"]),
              "raw_test": _scores(metrics["raw"]["test"]), "raw_dev": _scores(metrics["raw"]["dev"]),
              "probe_test": _scores(metrics["probe"]["test"]),
              "selected": metrics["selected"]["arm"], "train_rows": len(out["train"]),
              "test_rows": len(out["test"]), "pseudo_rows": 0 if out["pseudo_path"] is None else id_counts(out["pseudo_path"])[0],
              "skipped": None if not (gen.get("stats") or {}).get("skipped") else str(gen["stats"]["skipped"]),
              "built": sorted(name for name in ("data", "raw", "importance", "generator", "generation")
                              if out[name] is not None and not out[name].skipped),
              "seconds": round(time.time() - start, 1)}
    diag = metrics.get("pseudo_diagnostics")
    if diag:
        record["diagnostics"] = {k: diag.get(k) for k in HEADLINE}
    atomic_write_json(run_file(folder, run), record)
    return record


def run_setfit(suite, setting: str, seed: int, folder: Path, storage_path: str) -> Dict[str, Any]:
    """The SetFit peer on the run's rows (the data stage of its (setting, seed)), capped at the arms'
    step budget."""
    from dcls_core.artifacts import atomic_write_json
    from dcls_core.data import load_dataset
    from dcls_core.models import resolve_model
    from jobs.benchmark_quick import run_setfit as setfit

    _task_logging()
    start = time.time()
    method = next(iter(suite.methods))
    cfg = run_config(suite, setting, method, seed, storage_path)
    bundle = load_dataset(cfg.dataset, cfg.data)
    steps = suite.setfit_steps or cfg.classifier.steps_for(len(bundle.train))
    resolved = resolve_model(cfg.model)
    m = setfit(resolved.weights_source or resolved.tokenizer_source, bundle.train, bundle.test, bundle.vocab.names,
               seed, steps, 16)  # SetFit's pair batch, as in the quick benchmark
    record = {"setting": setting, "method": "setfit", "seed": seed, "test": _scores(m), "steps": steps,
              "seconds": round(time.time() - start, 1)}
    atomic_write_json(run_file(folder, record), record)
    return record


def adopt_records(suite, folder: Path, results: Path) -> int:
    """Write the run records of a results file (``benchmarks/results/<suite>.json``, whose ``runs``
    are the run files' contents) as finished runs of ``folder``, so a suite goes on from its
    committed results on another machine. Only runs the suite plans (and its SetFit peers) are
    adopted, only when the file's shared overrides and the run's setting and method overrides equal
    the suite's (a changed preset runs again), and an existing run file is never overwritten.
    Returns how many were adopted."""
    from dcls_core.artifacts import atomic_write_json
    from dcls_core.config import ConfigError

    try:
        summary = json.loads(Path(results).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume-from {results}: not a readable results file ({exc})") from exc
    if summary.get("suite") != suite.name or list(summary.get("overrides", [])) != list(suite.overrides):
        raise ConfigError(f"--resume-from {results}: its suite {summary.get('suite')!r} with overrides "
                          f"{summary.get('overrides')} is not {suite.name!r} with {list(suite.overrides)}")
    wanted = {(r["setting"], r["method"], r["seed"]) for r in plan(suite)}
    wanted |= {(s, "setfit", seed) for s in suite.settings for seed in suite.seeds if "setfit" in suite.peers}
    same = {(s, m) for s in suite.settings for m in list(suite.methods) + ["setfit"]
            if list(summary.get("settings", {}).get(s, [None])) == list(suite.settings[s])
            and (m == "setfit" or list(summary.get("methods", {}).get(m, [None])) == list(suite.methods[m]))}
    adopted, changed = 0, set()
    for record in summary.get("runs", []):
        key = (record.get("setting"), record.get("method"), record.get("seed"))
        if key not in wanted:
            continue
        if key[:2] not in same:
            changed.add(key[:2])
            continue
        path = run_file(folder, record)
        if not path.exists():
            atomic_write_json(path, record)
            adopted += 1
    if changed:
        log.warning("suite %s: not adopted from %s (setting or method overrides differ; they run again): %s",
                    suite.name, results, sorted(changed))
    log.info("suite %s: adopted %d finished run(s) from %s", suite.name, adopted, results)
    return adopted


# --------------------------------------------------------------------------- the suite
def next_to_start(queue: Sequence[Tuple[str, Dict[str, Any]]], running: Sequence[Tuple[str, Dict[str, Any]]],
                  warm: Set[Tuple[str, int]]) -> int:
    """The queue index of the next task to start. A run of a (setting, seed) none of whose runs has
    finished yet (not ``warm``) while another of its runs is in flight would only wait on that run's
    lock for the shared data and raw stages (minutes): it is passed over for any other task (a SetFit
    peer, another slice's run), and taken only when nothing else is left."""
    cold = {(r["setting"], r["seed"]) for kind, r in running if kind == "run"} - warm
    for i, (kind, r) in enumerate(queue):
        if kind != "run" or (r["setting"], r["seed"]) not in cold:
            return i
    return 0


def run_suite(suite, storage_path: str, results_dir: Path, max_parallel: int = 0,
              only: Slice = Slice(), report_only: bool = False) -> Dict[str, Any]:
    """Run what is missing (Ray tasks; only the runs of the slice ``only``; nothing with
    ``report_only``), then write the suite's JSON, Markdown table and plot over every
    finished run of the suite: a slice adds to the table, it never drops the other settings' or seeds'
    records. ``wall_seconds_last_invocation`` is the wall time of the last invocation that ran
    something: one that runs nothing keeps the figure of the results file it rewrites."""
    import ray

    from dcls_core.config import RayConfig
    from jobs.ray_runtime import init_ray

    folder = suite_folder(storage_path, suite)
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    only.check(suite)
    todo = only.ordered([r for r in plan(suite) if not run_file(folder, r).exists() and only.holds(r)])
    peers = [{"setting": s, "method": "setfit", "seed": seed} for s in suite.settings for seed in suite.seeds
             if "setfit" in suite.peers]
    todo_peers = [r for r in peers if not run_file(folder, r).exists() and only.holds(r)]
    if only != Slice():
        log.info("suite %s: running only %s (the table covers every finished run)", suite.name, only)
    log.info("suite %s: %d runs (+%d SetFit), %d to do (+%d), stages in %s", suite.name, len(plan(suite)),
             len(peers), len(todo), len(todo_peers), folder / "stages")
    if report_only and (todo or todo_peers):
        log.warning("suite %s: --report-only: %d run(s) and %d SetFit peer(s) not run, left out of the table: %s",
                    suite.name, len(todo), len(todo_peers),
                    [f"{r['setting']} {r['method']} seed {r['seed']}" for r in todo + todo_peers])
        todo, todo_peers = [], []
    ran = bool(todo or todo_peers)
    start = time.time()
    if ran:
        init_ray(RayConfig())
        cpus = float(ray.cluster_resources().get("CPU", 1))
        at_once = max_parallel or max(1, int(min(os.cpu_count() or 1, cpus) // suite.cpus_per_run))
        one = ray.remote(num_cpus=suite.cpus_per_run, max_retries=0)(run_one)
        peer = ray.remote(num_cpus=suite.cpus_per_run, max_retries=0)(run_setfit)
        threads = max(1, int(suite.cpus_per_run))
        queue = [("run", r) for r in todo] + [("setfit", r) for r in todo_peers]
        warm = {(r["setting"], r["seed"]) for r in plan(suite) if run_file(folder, r).exists()}
        pending: Dict[Any, Tuple[str, Dict[str, Any]]] = {}
        failures: List[str] = []
        while queue or pending:
            while queue and len(pending) < at_once:
                kind, r = queue.pop(next_to_start(queue, list(pending.values()), warm))
                log.info("suite %s: start %s %s seed %d (%d of %d)", suite.name, r["setting"], r["method"], r["seed"],
                         len(todo) + len(todo_peers) - len(queue), len(todo) + len(todo_peers))
                ref = (one.remote(suite, r, folder, storage_path, threads) if kind == "run"
                       else peer.remote(suite, r["setting"], r["seed"], folder, storage_path))
                pending[ref] = (kind, r)
            done, _ = ray.wait(list(pending), num_returns=1)
            kind, r = pending.pop(done[0])
            try:
                rec = ray.get(done[0])
                if kind == "run":
                    warm.add((r["setting"], r["seed"]))
                log.info("suite %s: %s %s seed %d: test %s (%.0fs)", suite.name, r["setting"], r["method"],
                         r["seed"], {k: round(v, 4) for k, v in rec["test"].items()}, rec["seconds"])
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
                failures.append(f"{r['setting']} {r['method']} seed {r['seed']}: {exc}")
                log.error("suite %s: %s", suite.name, failures[-1])
        if failures:
            log.error("suite %s: %d run(s) failed (they run again next time): %s", suite.name, len(failures), failures)
    records = [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]
    summary = summarise(suite, records)
    summary["wall_seconds_last_invocation"] = (round(time.time() - start, 1) if ran
                                               else _last_wall_seconds(results_dir / f"{suite.name}.json", suite))
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{suite.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (results_dir / f"{suite.name}.md").write_text(markdown(summary))
    plot(summary, results_dir / f"{suite.name}.png")
    return summary


def _last_wall_seconds(results: Path, suite) -> Optional[float]:
    """The wall time an earlier invocation wrote to this suite's results file (None if none)."""
    try:
        summary = json.loads(results.read_text())
    except (OSError, ValueError):
        return None
    return summary.get("wall_seconds_last_invocation") if summary.get("suite") == suite.name else None


def summarise(suite, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean ± std over seeds per (setting, method); the peers' rows from the same rows."""
    import numpy as np

    wanted = {(r["setting"], r["method"], r["seed"]) for r in plan(suite)}
    runs = [r for r in records if (r["setting"], r["method"], r["seed"]) in wanted or r["method"] == "setfit"]
    rows: List[Dict[str, Any]] = []
    methods = list(suite.methods) + list(suite.peers)
    for setting in suite.settings:
        for method in methods:
            if method == "probe":  # every run of a (setting, seed) shares the rows: one probe per seed
                by_seed = {r["seed"]: r["probe_test"] for r in runs if r["setting"] == setting and "probe_test" in r}
            else:
                by_seed = {r["seed"]: r["test"] for r in runs if r["setting"] == setting and r["method"] == method}
            scores = list(by_seed.values())
            raw = {r["seed"]: r["test"] for r in runs if r["setting"] == setting and r["method"] == "raw"}
            paired = sorted(set(by_seed) & set(raw)) if method != "raw" else []
            row: Dict[str, Any] = {"setting": setting, "method": method, "n": len(scores)}
            for metric in ("accuracy", "macro_f1"):
                vals = np.array([s[metric] for s in scores], float) * 100
                row[f"{metric}_mean"] = round(float(vals.mean()), 2) if len(vals) else None
                row[f"{metric}_std"] = round(float(vals.std()), 2) if len(vals) else None
                if paired:  # minus raw on the seeds both ran: means over different seeds do not compare
                    diff = np.array([by_seed[s][metric] - raw[s][metric] for s in paired], float) * 100
                    row[f"{metric}_minus_raw"] = [round(float(diff.mean()), 2), round(float(diff.std()), 2)]
            if paired:
                row["paired_seeds"] = paired
            skipped = sorted({r["skipped"] for r in runs if r["setting"] == setting and r["method"] == method
                              and r.get("skipped")})
            if skipped:
                row["skipped"] = skipped
            # an augmenter that ran but added nothing (e.g. retrieval with no unlabelled text left):
            # its score is the no-pseudo-sample arm's, which the table must say
            empty = sum(1 for r in runs if r["setting"] == setting and r["method"] == method
                        and r.get("arm") == "augmented" and r.get("pseudo_rows") == 0 and not r.get("skipped"))
            if empty:
                row["no_pseudo_runs"] = empty
            diags = [r["diagnostics"] for r in runs if r["setting"] == setting and r["method"] == method
                     and r.get("diagnostics")]
            if diags:  # mean over the seeds that recorded them (runs from before they were recorded lack them)
                row["diagnostics"] = {k: round(float(np.mean([d[k] for d in diags if d.get(k) is not None])), 4)
                                      for k in HEADLINE if any(d.get(k) is not None for d in diags)}
                row["diagnostics"]["n"] = len(diags)
            paper = suite.paper.get(setting, {}).get(method)
            if paper is not None:
                row["paper"] = paper
            rows.append(row)
    return {"suite": suite.name, "metrics": list(suite.metrics), "seeds": list(suite.seeds),
            "settings": {k: list(v) for k, v in suite.settings.items()},
            "methods": {k: list(v) for k, v in suite.methods.items()}, "peers": list(suite.peers),
            "overrides": list(suite.overrides), "notes": list(suite.notes), "rows": rows,
            "runs": sorted(runs, key=lambda r: (r["setting"], r["method"], r["seed"]))}


def markdown(summary: Dict[str, Any]) -> str:
    """One table per metric: a row per method, a column per setting (mean ± std over seeds, the
    paper's figure in brackets where it reports one)."""
    settings = list(summary["settings"])
    methods = list(dict.fromkeys(r["method"] for r in summary["rows"]))
    cell = {(r["setting"], r["method"]): r for r in summary["rows"]}
    lines = [f"# Suite {summary['suite']}", "",
             f"Seeds {summary['seeds']}; every method on the same rows, seeds and step budget; "
             "test scores of the classifier each method trains (mean ± std over seeds, % ; "
             "[paper]).", ""]
    for metric in summary["metrics"]:
        lines += [f"## {metric}", "", "| method | " + " | ".join(settings) + " |",
                  "|---|" + "---|" * len(settings)]
        for method in methods:
            cells = []
            for s in settings:
                r = cell.get((s, method))
                if r is None or r[f"{metric}_mean"] is None:
                    cells.append("-")
                    continue
                text = f"{r[f'{metric}_mean']:.2f}"
                if r["n"] > 1:  # one seed has no spread: "± 0.00" would claim one
                    text += f" ± {r[f'{metric}_std']:.2f}"
                if r["n"] < len(summary["seeds"]):
                    text += f" (n={r['n']})"
                if "paper" in r and metric == summary["metrics"][0]:
                    text += f" [{r['paper']:.2f}]"
                if r.get("skipped"):
                    text += " (augmenter skipped)"
                if r.get("no_pseudo_runs"):
                    text += f" (no pseudo samples in {r['no_pseudo_runs']} of {r['n']} runs)"
                cells.append(text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    paired = [r for r in summary["rows"] if r.get("paired_seeds")]
    if paired:
        metric = summary["metrics"][0]
        lines += [f"## {metric} minus raw, paired by seed", "",
                  "Each method's score minus raw's on the seeds both ran (mean ± std over those seeds).", "",
                  "| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
        for method in methods:
            cells = []
            for s in settings:
                r = cell.get((s, method))
                if r is None or not r.get("paired_seeds"):
                    cells.append("-")
                    continue
                mean, std = r[f"{metric}_minus_raw"]
                n = len(r["paired_seeds"])
                cells.append(f"{mean:+.2f}" + (f" ± {std:.2f}" if n > 1 else "")
                             + (f" (n={n})" if n < len(summary["seeds"]) else ""))
            if any(c != "-" for c in cells):
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    diag = [r for r in summary["rows"] if r.get("diagnostics")]
    if diag:
        lines += ["## pseudo-sample diagnostics", "",
                  "Mean over seeds (n) of each run's pseudo samples; label consistency: share whose "
                  "label the run's raw arm predicts; tokens changed: mean `changed_ratio`; duplicates: "
                  "same text as the source or an earlier pseudo sample.", "",
                  "| setting | method | n | " + " | ".join(HEADLINE.values()) + " |",
                  "|---|---|---|" + "---|" * len(HEADLINE)]
        for r in diag:
            d = r["diagnostics"]
            lines.append(f"| {r['setting']} | {r['method']} | {d['n']} | "
                         + " | ".join("-" if d.get(k) is None else f"{d[k]:.3f}" for k in HEADLINE) + " |")
        lines.append("")
    lines += [f"- {note}" for note in summary["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def plot(summary: Dict[str, Any], path: Path) -> None:
    """Grouped bars: the suite's first metric per method, one group per setting (± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metric = summary["metrics"][0]
    settings = list(summary["settings"])
    methods = list(dict.fromkeys(r["method"] for r in summary["rows"]))
    cell = {(r["setting"], r["method"]): r for r in summary["rows"]}
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(settings) * max(1, len(methods)) * 0.35 + 2), 3.6))
    for i, method in enumerate(methods):
        mean = [cell[(s, method)][f"{metric}_mean"] or 0 for s in settings]
        std = [cell[(s, method)][f"{metric}_std"] or 0 for s in settings]
        ax.bar(np.arange(len(settings)) + i * width, mean, width, yerr=std, capsize=2, label=method)
    ax.set_xticks(np.arange(len(settings)) + width * (len(methods) - 1) / 2, settings)
    ax.set_ylabel(f"test {metric} %")
    ax.set_title(f"suite {summary['suite']}")
    ax.legend(fontsize=7, ncol=min(4, len(methods)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line
def run_cli(args: argparse.Namespace) -> None:
    import sys

    from dcls_core.cli import is_bad_input

    try:
        suite = load_suite(args.suite, args.set)
        only = Slice(tuple(args.only_settings), tuple(args.only_seeds), tuple(args.only_methods))
        only.check(suite)
        resume = Path(args.resume_from) if args.resume_from else None
        if resume is not None:  # before any compute: a bad file fails here, naming itself
            adopt_records(suite, suite_folder(args.storage_path, suite), resume)
    except Exception as exc:  # noqa: BLE001 - only bad input becomes a message
        if not is_bad_input(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    summary = run_suite(suite, args.storage_path, Path(args.results_dir), args.max_parallel,
                        only, args.report_only)
    print(markdown(summary))


def add_suites(sub) -> None:
    def common(p):
        p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="suite overrides, e.g. seeds=[13] 'methods={raw: [augment.method=none]}'")
        p.add_argument("--storage-path", default=str(REPO / "runs"),
                       help="where the suite's runs and shared stages live (<storage-path>/suites/<suite>)")
        p.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
        p.add_argument("--max-parallel", type=int, default=0, help="runs at once (0: from the CPUs)")
        p.add_argument("--resume-from", default=None, metavar="JSON",
                       help="adopt the finished runs of a results file (e.g. the committed "
                            "benchmarks/results/<suite>.json) when this machine lacks the run folder")
        p.add_argument("--only-settings", nargs="+", default=[], metavar="SETTING",
                       help="run only these settings now (the table still covers every finished run)")
        p.add_argument("--only-seeds", nargs="+", type=int, default=[], metavar="SEED",
                       help="run only these seeds now (unlike --set seeds=[..], the other seeds' records stay "
                            "in the table)")
        p.add_argument("--only-methods", nargs="+", default=[], metavar="METHOD",
                       help="run only these methods now, in this order (a suite method, or setfit); the table keeps the others")
        p.add_argument("--report-only", action="store_true",
                       help="run nothing: rewrite the JSON, table and plot from the finished runs (with "
                            "--resume-from, from a results file's records)")
        p.set_defaults(func=run_cli)

    for name in SUITES:
        p = sub.add_parser(name, help=f"the {name} suite (configs/suite/{name}.yaml)")
        common(p)
        p.set_defaults(suite=name)
    p = sub.add_parser("suite", help="any suite: a preset name or a YAML file")
    p.add_argument("suite", help="configs/suite/<name> or path/to/suite.yaml")
    common(p)
