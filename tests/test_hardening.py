"""Hardening (issue 14): no silent overwrite, no silently ignored setting, no hang, a clear error
for every bad value. One test (or parametrized case) per case the issue lists; each failed on the
behaviour before the change. Tiny random model, a 16-row CSV, a few seconds each.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dcls_core.cli import build_parser, main as dcls
from dcls_core.config import ConfigError, DataConfig, DatasetConfig, load_config
from dcls_core.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
# a fast tiny augment run: 4 proxy steps, one generator epoch, no warm-up
TINY = ["model=tiny", "augment.n=2", "classifier.proxy_epochs=1", "classifier.batch_size=4",
        "classifier.min_steps=4", "classifier.eval_every=2", "generator.epochs=1", "generator.T=8",
        "generator.group_size=2", "generator.group_index=2", "generator.reverse_steps=1",
        "generator.warmup.enabled=false", "data.max_length=24", "data.dev_size=0.25"]


def _rows(n: int = 8):
    rows = []
    for i in range(n):
        rows.append({"id": f"r{2 * i:02d}", "body": f"i loved this phone, great battery {i}", "mood": "happy"})
        rows.append({"id": f"r{2 * i + 1:02d}", "body": f"screen broke after a day, awful {i}", "mood": "angry"})
    return rows


def _augment(src: Path, out: Path, *extra: str, store: Path) -> int:
    return dcls(["augment", "--input", str(src), "--output", str(out), f"storage_path={store}", *TINY, *extra])


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- 1. outputs
@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """``dcls augment --progress`` on a CSV with an ``id`` column; the generator is made to return
    one empty sample (as a 1-million-character or zero-width source did), which must be dropped."""
    import dcls_core.diffusion_augmenter as da

    base = tmp_path_factory.mktemp("augment")
    src = base / "my.csv"
    pd.DataFrame(_rows()).to_csv(src, index=False)
    out = base / "out1.parquet"
    real = da.generate_for_plan

    def one_empty(*args, **kwargs):
        rows = real(*args, **kwargs)
        return rows.assign(text=["\u200b" if i == "r00~p0" else t for i, t in zip(rows["id"], rows["text"])])

    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        mp.setattr(da, "generate_for_plan", one_empty)
        code = _augment(src, out, "--text-column", "body", "--label-column", "mood", "--progress", store=base / "store")
    return {"base": base, "src": src, "out": out, "code": code, "summary": _last_json(stdout.getvalue()),
            "stderr": stderr.getvalue()}


def test_output_that_is_the_input_is_refused(tmp_path, capsys):
    src = tmp_path / "data.parquet"
    pd.DataFrame(_rows()).rename(columns={"body": "text", "mood": "label"}).to_parquet(src)
    before = src.read_bytes()
    assert _augment(src, src, store=tmp_path / "store") == 2
    assert "is the input file" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_existing_output_needs_overwrite(first_run, capsys):
    out = first_run["out"]
    before = out.read_bytes()
    assert _augment(first_run["src"], out, "--text-column", "body", "--label-column", "mood",
                    store=first_run["base"] / "store") == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_user_ids_are_kept(first_run):
    assert first_run["code"] == 0
    frame = pd.read_parquet(first_run["out"])
    originals = frame[~frame["is_pseudo"]]
    assert sorted(originals["id"]) == sorted(r["id"] for r in _rows())
    assert set(frame.loc[frame["is_pseudo"], "source_id"]) <= set(originals["id"])


def test_empty_pseudo_samples_are_dropped_and_counted(first_run):
    frame = pd.read_parquet(first_run["out"])
    pseudo = frame[frame["is_pseudo"]]
    assert first_run["summary"]["empty_pseudo_dropped"] == 1
    assert "r00~p0" not in set(pseudo["id"]) and len(pseudo) == 16 * 2 - 1
    assert (pseudo["text"].str.strip() != "").all()


def test_augment_shows_progress_with_rows_and_time_left(first_run):
    bars = first_run["stderr"]
    # tqdm: "pseudo samples: 100%|...| 31/32 [00:01<00:00, 25.0row/s]" (rows done/total, elapsed<left)
    assert re.search(r"pseudo samples: +100%.*\d+/32 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(row/s|s/row)\]", bars), bars[-500:]
    assert re.search(r"importance: +100%.*16/16", bars)


def test_second_run_keeps_earlier_pseudo_rows_as_pseudo(first_run, capsys):
    first = pd.read_parquet(first_run["out"])
    out2 = first_run["base"] / "out2.parquet"
    assert _augment(first_run["out"], out2, store=first_run["base"] / "store") == 0
    summary = _last_json(capsys.readouterr().out)
    second = pd.read_parquet(out2)
    old_pseudo = first[first["is_pseudo"]].set_index("id")
    assert summary["earlier_pseudo"] == len(old_pseudo) == 31
    # the originals are the same 16 rows (not 16 + 31), with their ids
    assert sorted(second.loc[~second["is_pseudo"], "id"]) == sorted(first.loc[~first["is_pseudo"], "id"])
    # earlier pseudo rows are still pseudo, unchanged
    kept = second.set_index("id").loc[old_pseudo.index]
    assert kept["is_pseudo"].all() and (kept["text"] == old_pseudo["text"]).all()
    assert (kept["source_id"] == old_pseudo["source_id"]).all()
    # new samples come from originals only, numbered after the earlier ones of their source
    new = second[second["is_pseudo"] & ~second["id"].isin(old_pseudo.index)]
    assert len(new) == summary["new_pseudo"] == 16 * 2
    assert not new["source_id"].str.contains("~").any()
    assert "r00~p2" in set(new["id"]) and not second["id"].duplicated().any()


# ----------------------------------------------------------------------------- 2. one config path
def _augment_args(tmp_path, src, *overrides):
    return build_parser().parse_args(["augment", "--input", str(src), "--output", str(tmp_path / "o.parquet"),
                                      "model=tiny", *overrides])


def test_augment_honours_dataset_overrides(tmp_path):
    from dcls_core.cli import augment_inputs

    src = tmp_path / "reviews.txt"  # no known suffix: dataset.format says what it is
    rows = [f"{'très bon café' if i % 2 else 'mauvais café'} {i}\t{i % 2}" for i in range(20)]
    src.write_bytes(("text\tlabel\n" + "\n".join(rows) + "\n").encode("latin-1"))
    cfg, bundle, originals = augment_inputs(_augment_args(
        tmp_path, src, "dataset.format=tsv", "dataset.encoding=latin-1", "dataset.label_names={0:negative,1:positive}"))
    assert bundle.vocab.names == ["negative", "positive"] and len(originals) == 20
    assert originals["text"].str.contains("café").all()
    assert (cfg.dataset.format, cfg.dataset.encoding) == ("tsv", "latin-1")


def test_augment_refuses_a_protocol_it_would_ignore(tmp_path, capsys):
    src = tmp_path / "my.csv"
    pd.DataFrame(_rows()).to_csv(src, index=False)
    # overrides may also sit between options (argparse alone refuses that)
    assert dcls(["augment", "--input", str(src), "model=tiny", "--output", str(tmp_path / "o.parquet"),
                 "--text-column", "body", "--label-column", "mood", "data.protocol=k_shot"]) == 2
    assert "augments every row" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["+generator.lamb=0.3", "generator.lamb=0.3", "++generator.lamb=0.3"])
def test_unknown_keys_are_refused_even_with_plus(override):
    with pytest.raises(ConfigError, match=r"unknown config key 'generator.lamb'.*did you mean generator.lam\?"):
        load_config([override])


@pytest.mark.parametrize("override,needle", [
    ("generator.batch_size=0", "generator.batch_size=0 is invalid: must be >= 1"),
    ("generator.epochs=0", "generator.epochs=0 is invalid: must be >= 1"),
    ("classifier.proxy_lr=-1", "classifier.proxy_lr=-1.0 is invalid: must be > 0"),
    ("classifier.eval_every=0", "classifier.eval_every=0 is invalid: must be >= 1"),
    ("classifier.weight_decay=-0.1", "classifier.weight_decay=-0.1 is invalid: must be >= 0"),
    ("generator.warmup.weight_decay=-1", "generator.warmup.weight_decay=-1.0 is invalid: must be >= 0"),
    ("generator.warmup.max_seconds=-5", "generator.warmup.max_seconds=-5.0 is invalid: must be >= 0"),
    ("generator.warmup.max_steps=0", "generator.warmup.max_steps=0 is invalid: must be >= 1"),
    ("ray.cpus_per_actor=0", "ray.cpus_per_actor=0.0 is invalid: must be > 0"),
    ("ray.cpus_per_actor=-1", "ray.cpus_per_actor=-1.0 is invalid: must be > 0"),
    ("ray.gpus_per_actor=-1", "ray.gpus_per_actor=-1.0 is invalid: must be >= 0"),
    ("ray.num_cpus=0", "ray.num_cpus=0 is invalid: must be >= 1"),
    ("ray.fit_workers={augmented:-1}", "ray.fit_workers.augmented=-1 is invalid: must be >= 0"),
    ("data.dev_k=0", "data.dev_k=0 is invalid: must be >= 1"),
    ("seed=-1", "data.seed=-1 is invalid: must be >= 0"),
    ("model.tiny_layers=0", "model.tiny_layers=0 is invalid: must be >= 1"),
])
def test_numeric_settings_are_range_checked(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert needle in str(err.value)


def test_max_length_beyond_the_models_positions_is_refused():
    from dcls_core.models import check_max_lengths, max_positions

    cfg = load_config(["model=tiny", "data.max_length=600"])
    assert max_positions(cfg.model) == 512  # read from the tiny model's config
    with pytest.raises(ConfigError, match=r"data.max_length=600 is invalid: model 'tiny' takes at most 512 tokens"):
        check_max_lengths(cfg)
    check_max_lengths(load_config(["model=tiny", "data.max_length=512"]))


# ----------------------------------------------------------------------------- pipeline entry point
def _pipeline(*args, cwd: Path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, str(REPO / "jobs" / "pipeline.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_pipeline_bad_input_exits_2_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    grammar = _pipeline("experiment=smoke", "dataset.files={", f"storage_path={store}", cwd=tmp_path)
    assert grammar.returncode == 2, grammar.stderr[-2000:]
    assert "cannot read the override 'dataset.files={'" in grammar.stderr and "Traceback" not in grammar.stderr
    value = _pipeline("experiment=smoke", "generator.lam=-2", f"storage_path={store}", cwd=tmp_path)
    assert value.returncode == 2 and "generator.lam=-2.0 is invalid" in value.stderr
    assert list(tmp_path.iterdir()) == [], "no runs/hydra/<timestamp>/ or other folder for a failed validation"


def test_cpus_per_actor_beyond_the_local_ray_is_refused_before_ray_starts(tmp_path, capsys, monkeypatch):
    import jobs.pipeline as pipeline

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: pytest.fail("the pipeline ran"))
    code = pipeline.main(["experiment=smoke", f"output_dir={tmp_path / 'run'}", "ray.num_cpus=4",
                          "ray.cpus_per_actor=5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ray.cpus_per_actor=5 is more than the local Ray" in err and "use ray.cpus_per_actor=3 or less" in err
    assert not (tmp_path / "run").exists()


def test_actor_and_worker_resources_against_a_cluster():
    from jobs.ray_runtime import check_resources
    from dcls_core.config import RayConfig

    def check(**kw):  # two 8-CPU nodes, no GPU
        check_resources(RayConfig(**kw), total_cpus=16, node_cpus=8, node_gpus=0, where="the cluster")

    check(cpus_per_actor=8, num_workers=16)
    with pytest.raises(ConfigError, match=r"ray.cpus_per_actor=9 .* 8 CPUs on its largest node"):
        check(cpus_per_actor=9)
    with pytest.raises(ConfigError, match=r"ray.gpus_per_actor=0.5 .* 0 GPUs"):
        check(gpus_per_actor=0.5)
    with pytest.raises(ConfigError, match=r"17 Ray Train workers"):
        check(fit_workers={"augmented": 17})
    with pytest.raises(ConfigError, match=r"ray.use_gpu=true but the cluster has no GPU"):
        check(num_workers=2, use_gpu=True)


@pytest.mark.ray
def test_cluster_resources_are_checked_once_ray_is_up():
    import ray

    from dcls_core.config import RayConfig
    from jobs.ray_runtime import init_ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)  # stands in for a cluster already running
    cpus = int(ray.cluster_resources()["CPU"])
    try:
        # an actor claiming every CPU of the node never gets placed beside Ray Data's own tasks
        with pytest.raises(ConfigError, match=rf"ray.cpus_per_actor={cpus} is more than this Ray"):
            init_ray(RayConfig(cpus_per_actor=cpus))
        init_ray(RayConfig(cpus_per_actor=cpus - 1))
        # off a terminal, Ray Data's per-operator progress blocks are summarised to its total line
        assert not ray.data.DataContext.get_current().enable_operator_progress_bars
    finally:
        if started:
            ray.shutdown()


def test_pipeline_log_file_holds_the_runs_log_and_dataset_path_shorthand(tmp_path, monkeypatch, caplog):
    import jobs.pipeline as pipeline

    caplog.set_level(logging.INFO)
    src = tmp_path / "mine.csv"
    pd.DataFrame(_rows()).to_csv(src, index=False)
    seen = {}

    def fake_run(cfg, bundle, stop_after=None):
        seen["cfg"] = cfg
        logging.getLogger("dcls.pipeline").info("[stage] data-123: done")

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    run = tmp_path / "run"
    assert pipeline.main([f"dataset={src}", "dataset.text_column=body", "dataset.label_column=mood", "model=tiny",
                          f"output_dir={run}"]) == 0
    assert seen["cfg"].dataset.files == {"all": str(src)} and seen["cfg"].dataset.name == "mine"
    assert "[stage] data-123: done" in (run / "pipeline.log").read_text()
    assert not [h for h in logging.getLogger().handlers  # removed when the run ends
                if getattr(h, "baseFilename", "") == str(run / "pipeline.log")]


# ----------------------------------------------------------------------------- 4. data warnings
def _load(tmp_path, rows, **kw):
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    cfg = DatasetConfig(name="d", files={"all": str(path)}, test_size=0.2, **kw)
    return load_dataset(cfg, DataConfig(root=str(tmp_path)))


def test_numeric_labels_suggest_label_names(tmp_path, caplog):
    bundle = _load(tmp_path, [{"text": f"t {i}", "label": i % 2} for i in range(20)])
    assert bundle.vocab.names == ["0", "1"]
    assert any("dataset.label_names={0: name_0, 1: name_1}" in w for w in bundle.warnings)
    assert "the labels are numbers" in caplog.text


def test_float_written_labels_read_as_integers(tmp_path):
    labels = [float(i % 2) for i in range(20)] + [float("nan")]  # pandas writes 0.0 / 1.0 / ""
    bundle = _load(tmp_path, [{"text": f"t {i}", "label": y} for i, y in enumerate(labels)])
    assert bundle.vocab.names == ["0", "1"]
    assert [d["rows"] for d in bundle.dropped if d["reason"] == "missing label"] == [1]


def test_one_row_classes_and_near_duplicate_spellings_warn(tmp_path):
    rows = [{"text": f"good {i}", "label": "positive"} for i in range(10)]
    rows += [{"text": f"bad {i}", "label": "negative"} for i in range(10)]
    rows += [{"text": "fine", "label": "Positive"}, {"text": "odd", "label": "NaN"}]
    warnings = "\n".join(_load(tmp_path, rows).warnings)
    assert "labels 'Positive' (1 rows), 'positive' (10 rows) differ only in case" in warnings
    assert "{Positive: positive, ...}" in warnings
    assert "class 'NaN' has a single row and looks like a missing value" in warnings


def test_zero_width_only_texts_are_dropped_and_counted(tmp_path):
    rows = [{"text": f"t {i}", "label": "ab"[i % 2]} for i in range(20)]
    rows += [{"text": "\u200b\u200b", "label": "a"}, {"text": "\ufeff\u200d", "label": "b"}]
    bundle = _load(tmp_path, rows)
    assert sum(len(f) for f in bundle.frames.values()) == 20
    assert [d["rows"] for d in bundle.dropped if "zero-width" in d["reason"]] == [2]


def test_pseudo_rows_in_a_source_are_set_aside(tmp_path):
    rows = [{"id": f"o{i}", "text": f"t {i}", "label": "ab"[i % 2], "is_pseudo": False} for i in range(20)]
    rows += [{"id": "o0~p0", "text": "t zero", "label": "a", "is_pseudo": True, "source_id": "o0"}]
    bundle = _load(tmp_path, rows, id_column="id")
    assert "o0~p0" not in set(bundle.to_frame()["id"])
    assert bundle.pseudo["id"].tolist() == ["o0~p0"] and bundle.pseudo["source_id"].tolist() == ["o0"]
    assert any(d["reason"].startswith("pseudo sample") and d["rows"] == 1 for d in bundle.dropped)
    both = _load(tmp_path, rows, id_column="id", pseudo_column=None)  # "unless asked"
    assert "o0~p0" in set(both.to_frame()["id"])


# ----------------------------------------------------------------------------- 5. overrides a user needs
def test_files_and_label_names_are_replaced_from_the_command_line(tmp_path, capsys):
    cfg = load_config(["dataset=india_covid_x", "dataset.files={train:a.csv,test:b.csv}"])
    assert cfg.dataset.files == {"train": "a.csv", "test": "b.csv"}  # replaced, not merged into {all: ...}
    cfg = load_config(["dataset=sst2", "dataset.label_names={0:neg,1:pos}"])
    assert cfg.dataset.label_names == {"0": "neg", "1": "pos"}
    assert load_config(["dataset=sst2", "dataset.label_names={}"]).dataset.label_names == {}
    # the documented example, end to end
    for split in ("train", "test"):
        pd.DataFrame({"text": [f"{split} {i}" for i in range(10)], "sentiment": [i % 2 for i in range(10)]}) \
            .to_csv(tmp_path / f"{split}.csv", index=False)
    assert dcls(["data", "describe", "india_covid_x", f"dataset.files={{train:{tmp_path}/train.csv,"
                 f"test:{tmp_path}/test.csv}}", "dataset.label_names={0:negative,1:positive}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["test"]["labels"] == {"negative": 5, "positive": 5}


def test_missing_local_model_path_gets_no_hub_advice(tmp_path, capsys):
    src = tmp_path / "my.csv"
    pd.DataFrame(_rows()).to_csv(src, index=False)
    assert dcls(["augment", "--input", str(src), "--output", str(tmp_path / "o.parquet"), "--text-column", "body",
                 "--label-column", "mood", "model.name=/nonexistent/model-dir"]) == 2
    err = capsys.readouterr().err
    assert "model folder not found: /nonexistent/model-dir" in err and "huggingface-cli" not in err


# ----------------------------------------------------------------------------- 6. logs
def test_generator_from_an_encoder_says_once_what_happens(capfd, caplog):
    from transformers.utils import logging as hf_logging

    from dcls_core.config import ModelConfig
    from dcls_core.models import load_masked_lm

    caplog.set_level(logging.INFO, logger="dcls_core.models")
    load_masked_lm(ModelConfig(name="minilm"))
    err = capfd.readouterr().err
    assert "seem corrupted" not in err and "MISSING" not in err and "LOAD REPORT" not in err
    lines = [r.getMessage() for r in caplog.records if r.name == "dcls_core.models"]
    assert len(lines) == 1 and "without a masked-LM head" in lines[0] and "warm-up trains" in lines[0]
    assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
