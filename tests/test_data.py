"""Data layer: loaders on the real shared datasets, samplers, errors, the describe CLI."""
from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from dcls_core.cli import main as cli_main
from dcls_core.config import ConfigError, DataConfig, DatasetConfig, load_config
from dcls_core.data import (SCHEMA, DataError, DatasetBundle, LabelVocab, apply_protocol, carve_dev,
                            fraction, k_shot, load_dataset, load_source, stratified_split, to_arrow)

REPO = Path(__file__).resolve().parents[1]
SENWAVE_LABELS_EN = ["Optimistic", "Thankful", "Empathetic", "Pessimistic", "Anxious", "Sad", "Annoyed",
                     "Denial", "Official report", "Joking"]


# ---------------------------------------------------------------------------------------
# fixtures: presets composed once, sources and bundles loaded once per module
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_cfg(data_root) -> DataConfig:
    return DataConfig(root=str(data_root), seed=13)


@pytest.fixture(scope="module")
def preset():
    cache = {}

    def get(name: str) -> DatasetConfig:
        if name not in cache:
            cache[name] = load_config([f"dataset={name}"]).dataset
        return cache[name]

    return get


@pytest.fixture(scope="module")
def source(preset, data_cfg):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_source(preset(name), data_cfg)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def bundle(preset, data_cfg):
    cache = {}

    def get(name: str) -> DatasetBundle:
        if name not in cache:
            cache[name] = load_dataset(preset(name), data_cfg)
        return cache[name]

    return get


def counts(frame: pd.DataFrame) -> dict:
    return {k: int(v) for k, v in frame["label"].value_counts().items()}


def dropped(entries, reason_start: str) -> int:
    return sum(d["rows"] for d in entries if d["reason"].startswith(reason_start))


def write_csv(path: Path, rows, **kwargs) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, **kwargs)
    return path


def small_rows(n_per_class: int = 10, labels=("pos", "neg", "neu")):
    return [{"text": f"sentence {label} {i}", "label": label}
            for label in labels for i in range(n_per_class)]


@pytest.fixture
def tmp_cfg(tmp_path, monkeypatch):
    """DataConfig rooted at tmp_path (DCLS_DATA_DIR cleared so data.root is what counts)."""
    monkeypatch.delenv("DCLS_DATA_DIR", raising=False)
    return DataConfig(root=str(tmp_path), seed=3)


# ---------------------------------------------------------------------------------------
# loaders on every shared dataset
# ---------------------------------------------------------------------------------------
def test_sst2_counts_and_quirks(source, bundle):
    frames, drops = source("sst2")
    assert {s: len(f) for s, f in frames.items()} == {"train": 67349, "dev": 872, "test": 1821}
    assert counts(frames["train"]) == {"positive": 37569, "negative": 29780}
    assert counts(frames["dev"]) == {"positive": 444, "negative": 428}
    assert counts(frames["test"]) == {"negative": 912, "positive": 909}
    assert drops == []
    train, test = frames["train"], frames["test"]
    # GLUE's trailing space before the tab is stripped
    assert train.loc[0, "text"] == "hide new secretions from the parental units"
    assert not train["text"].str.endswith(" ").any()
    # the test file's header is label<TAB>content: text comes from `content`, label 0 -> negative
    assert test.loc[0, ["text", "label"]].tolist() == ["no movement , no yuks , not much of anything .", "negative"]
    assert train["id"].head(2).tolist() == ["train-0", "train-1"] and test["id"].is_unique
    # the source has a dev split, so the full protocol changes nothing
    full = bundle("sst2")
    assert {s: len(f) for s, f in full.frames.items()} == {"train": 67349, "dev": 872, "test": 1821}
    assert full.vocab.names == ["negative", "positive"]


def test_india_covid_x_70_30(source, bundle, preset, data_cfg):
    frames, drops = source("india_covid_x")
    assert (len(frames["train"]), len(frames["test"])) == (2164, 926)  # the paper's sizes
    assert "dev" not in frames and drops == []
    total = pd.concat([frames["train"], frames["test"]])
    assert counts(total) == {"fear": 801, "sad": 795, "anger": 767, "joy": 727}
    for label, n in counts(total).items():  # stratified: floor(30%) of every class
        assert counts(frames["test"])[label] == math.floor(n * 0.3)
    assert total["id"].is_unique
    # the test split is fixed by dataset.split_seed, not by data.seed
    other, _ = load_source(preset("india_covid_x"), DataConfig(root=data_cfg.root, seed=99))
    assert other["test"]["id"].tolist() == frames["test"]["id"].tolist()
    # full protocol: dev carved from train (data.dev_size), test untouched
    full = bundle("india_covid_x")
    assert len(full.train) + len(full.dev) == 2164
    assert len(full.dev) == sum(math.floor(n * 0.1) for n in counts(frames["train"]).values())
    assert set(full.dev["id"]) <= set(frames["train"]["id"])
    assert full.test["id"].tolist() == frames["test"]["id"].tolist()
    assert (full.dev["split"] == "dev").all() and (full.train["split"] == "train").all()


def test_smp2020_ewect(source):
    frames, drops = source("smp2020_ewect")
    assert {s: len(f) for s, f in frames.items()} == {"train": 8606, "dev": 2000, "test": 3000}
    assert counts(frames["train"]) == {"happy": 4423, "neutral": 1460, "angry": 1322, "sad": 649,
                                       "fear": 555, "surprise": 197}
    assert set(frames["test"]["label"]) == set(frames["train"]["label"])
    assert frames["train"].loc[0, "text"] == "天使" and drops == []


def test_senwave_en_single_label_top6(source):
    frames, drops = source("senwave_en")
    no_label, several = dropped(drops, "no label set"), dropped(drops, "several labels")
    assert 10000 - no_label - several == 3585  # README: 3,585 single-label rows
    assert (no_label, several) == (15, 6400)
    outside = dropped(drops, "label outside the 6 most frequent")
    kept = pd.concat([frames["train"], frames["test"]])
    assert len(kept) == 3585 - outside == 3315
    assert counts(kept) == {"Joking": 1170, "Annoyed": 810, "Official report": 536, "Optimistic": 390,
                            "Sad": 210, "Anxious": 199}
    assert len(frames["test"]) == sum(math.floor(n * 0.2) for n in counts(kept).values()) == 662
    assert len(frames["train"]) == 3315 - 662
    assert all(d["split"] == "all" for d in drops)


def test_senwave_ar(source):
    frames, drops = source("senwave_ar")
    assert 9999 - dropped(drops, "no label set") - dropped(drops, "several labels") == 7289  # README
    kept = pd.concat([frames["train"], frames["test"]])
    assert len(kept) == 7289 - dropped(drops, "label outside") == 6843
    assert set(kept["label"]) == {"Official", "Joking", "Annoyed", "Optimistic", "Empathetic", "Sad"}
    assert len(frames["test"]) == sum(math.floor(n * 0.2) for n in counts(kept).values()) == 1366
    assert len(frames["train"]) == 6843 - 1366


@pytest.mark.parametrize("lang", ["es", "fr"])
def test_senwave_translations_match_english_rows(source, lang):
    en, en_drops = source("senwave_en")
    frames, drops = source(f"senwave_{lang}")
    assert drops == en_drops  # same multi-hot rows, row for row
    for split in ("train", "test"):
        assert frames[split]["id"].tolist() == en[split]["id"].tolist()
        assert frames[split]["label"].tolist() == en[split]["label"].tolist()
    assert frames["train"]["text"].tolist() != en["train"]["text"].tolist()  # really translated


def test_describe_shape_and_schema(bundle):
    b = bundle("senwave_en")
    d = b.describe()
    assert set(d) == {"dataset", "splits", "dropped", "warnings"} and d["dataset"] == "senwave_en"
    assert d["warnings"] == []  # named classes, no one-row class, no near-duplicate spelling
    assert list(d["splits"]) == ["train", "dev", "test"]
    for split, info in d["splits"].items():
        assert set(info) == {"rows", "labels"} and info["rows"] == len(b.frames[split])
        assert list(info["labels"]) == b.vocab.names and sum(info["labels"].values()) == info["rows"]
    assert all(set(e) == {"split", "reason", "rows"} for e in d["dropped"])
    assert sum(e["rows"] for e in d["dropped"]) == 10000 - 3315
    json.dumps(d)  # plain JSON types only
    table = to_arrow(b.train)
    assert table.schema == SCHEMA and table.num_rows == len(b.train)
    assert list(b.train.columns) == ["id", "text", "label", "split"]


# ---------------------------------------------------------------------------------------
# LabelVocab
# ---------------------------------------------------------------------------------------
def test_label_vocab_order_and_persistence(tmp_path):
    vocab = LabelVocab.from_labels(["sad", "joy", "anger", "joy"])
    assert vocab.names == ["anger", "joy", "sad"] and len(vocab) == 3
    assert vocab.to_id("sad") == 2 and vocab.to_name(0) == "anger"
    assert vocab.encode(["joy", "anger"]).tolist() == [1, 0]
    with pytest.raises(DataError, match="unknown label 'fear'"):
        vocab.to_id("fear")
    path = vocab.save(tmp_path)  # a folder -> labels.json inside
    assert path.name == "labels.json"
    assert json.loads(path.read_text()) == {"labels": ["anger", "joy", "sad"]}
    assert LabelVocab.load(tmp_path) == vocab and LabelVocab.load(path).names == vocab.names
    # a persisted order is reproduced verbatim, even if it is not sorted
    LabelVocab(["z", "a"]).save(tmp_path / "custom.json")
    assert LabelVocab.load(tmp_path / "custom.json").names == ["z", "a"]
    with pytest.raises(DataError, match="duplicate"):
        LabelVocab(["a", "a"])


# ---------------------------------------------------------------------------------------
# samplers and protocols
# ---------------------------------------------------------------------------------------
def test_k_shot_deterministic_and_stratified(source):
    train = source("sst2")[0]["train"]
    a, b, c = k_shot(train, 10, seed=1), k_shot(train, 10, seed=1), k_shot(train, 10, seed=2)
    assert a["id"].tolist() == b["id"].tolist()
    assert set(a["id"]) != set(c["id"])
    assert counts(a) == {"negative": 10, "positive": 10} and counts(c) == counts(a)
    assert a.index.is_monotonic_increasing  # original row order kept


def test_fraction_deterministic_and_stratified(source):
    train = source("smp2020_ewect")[0]["train"]
    part = fraction(train, 0.1, seed=5)
    assert part["id"].tolist() == fraction(train, 0.1, seed=5)["id"].tolist()
    assert set(part["id"]) != set(fraction(train, 0.1, seed=6)["id"])
    expected = {label: max(1, math.floor(n * 0.1)) for label, n in counts(train).items()}
    assert counts(part) == expected
    assert fraction(train, 1.0, seed=5) is train
    with pytest.raises(ConfigError, match="data.fraction"):
        fraction(train, 0.0, seed=5)


def test_stratified_split_and_carve_dev(source):
    train = source("india_covid_x")[0]["train"]
    rest, held = stratified_split(train, 0.25, seed=7)
    assert set(rest["id"]).isdisjoint(held["id"]) and len(rest) + len(held) == len(train)
    assert counts(held) == {label: math.floor(n * 0.25) for label, n in counts(train).items()}
    again = stratified_split(train, 0.25, seed=7)[1]
    assert held["id"].tolist() == again["id"].tolist()
    new_train, dev = carve_dev(train, 0.1, seed=7)
    assert (dev["split"] == "dev").all() and set(dev["id"]).isdisjoint(new_train["id"])
    # a class of 2 rows still reaches both sides; a class of 1 row stays on the kept side
    tiny = pd.DataFrame({"id": list("abcd"), "text": list("abcd"), "label": ["x", "x", "y", "z"],
                         "split": "train"})
    rest, held = stratified_split(tiny, 0.1, seed=0)
    assert counts(held) == {"x": 1} and counts(rest) == {"x": 1, "y": 1, "z": 1}


def test_k_shot_protocol_dev_from_source_dev(source):
    frames = source("sst2")[0]
    cfg = DataConfig(protocol="k_shot", k=5, dev_k=3, seed=11)
    out = apply_protocol(frames, cfg)
    assert counts(out["train"]) == {"negative": 5, "positive": 5}
    assert counts(out["dev"]) == {"negative": 3, "positive": 3}
    assert out["dev"]["id"].str.startswith("dev-").all()  # drawn from the source dev split
    assert out["test"]["id"].tolist() == frames["test"]["id"].tolist()  # test untouched
    again = apply_protocol(frames, cfg)
    assert all(out[s]["id"].tolist() == again[s]["id"].tolist() for s in out)


def test_k_shot_protocol_dev_carved_from_remaining_train(source):
    frames = source("india_covid_x")[0]
    out = apply_protocol(frames, DataConfig(protocol="k_shot", k=10, seed=4))
    assert counts(out["train"]) == {"fear": 10, "sad": 10, "anger": 10, "joy": 10}
    assert counts(out["dev"]) == counts(out["train"])  # dev_k defaults to k
    assert set(out["dev"]["id"]).isdisjoint(out["train"]["id"])
    assert set(out["dev"]["id"]) <= set(frames["train"]["id"])  # never from test
    assert out["test"]["id"].tolist() == frames["test"]["id"].tolist()
    with pytest.raises(ConfigError, match="data.dev_k"):
        apply_protocol(frames, DataConfig(protocol="k_shot", k=2, dev_k=0))


def test_fraction_protocol_carves_dev_first(source):
    frames = source("india_covid_x")[0]
    out = apply_protocol(frames, DataConfig(protocol="fraction", fraction=0.2, seed=8))
    pool, dev = carve_dev(frames["train"], 0.1, seed=8)
    assert out["dev"]["id"].tolist() == dev["id"].tolist()
    assert counts(out["train"]) == {label: math.floor(n * 0.2) for label, n in counts(pool).items()}
    assert out["test"]["id"].tolist() == frames["test"]["id"].tolist()


# ---------------------------------------------------------------------------------------
# formats and configuration-driven behaviour (temporary files)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_file_format(tmp_path, tmp_cfg, fmt):
    rows = [{"uid": f"u{i}", "body": f"  text number {i} ", "y": i % 2} for i in range(40)]
    frame = pd.DataFrame(rows)
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    else:
        frame.to_parquet(path)
    cfg = DatasetConfig(name=fmt, format=fmt, files={"all": path.name}, text_column="body", label_column="y",
                        id_column="uid", label_names={"0": "even", "1": "odd"}, test_size=0.25)
    b = load_dataset(cfg, tmp_cfg)
    assert b.vocab.names == ["even", "odd"]
    assert {s: len(f) for s, f in b.frames.items()} == {"train": 28, "dev": 2, "test": 10}
    everything = b.to_frame().set_index("id")
    assert everything.loc["u3", "text"] == "text number 3" and everything.loc["u3", "label"] == "odd"
    assert sorted(everything.index) == sorted(f"u{i}" for i in range(40))


def test_absolute_paths_and_default_ids(tmp_path, tmp_cfg):
    train = write_csv(tmp_path / "train.csv", small_rows())
    test = write_csv(tmp_path / "test.csv", small_rows(4))
    cfg = DatasetConfig(name="abs", files={"train": str(train), "test": str(test)})
    b = load_dataset(cfg, DataConfig(root="/nonexistent/root"))
    assert len(b.test) == 12 and b.test["id"].tolist()[:2] == ["test-0", "test-1"]
    assert b.train["id"].str.startswith("train-").all()


def test_hf_missing_package_message(tmp_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    cfg = DatasetConfig(name="hf", format="hf", hf_path="glue", hf_config="sst2")
    with pytest.raises(DataError, match="pip install datasets"):
        load_dataset(cfg, tmp_cfg)


class _FakeClassLabel:
    def __init__(self, names):
        self.names = names


class _FakeDataset:
    def __init__(self, frame):
        self._frame = frame
        self.features = {"sentence": object(), "label": _FakeClassLabel(["neg", "pos"])}

    def to_pandas(self):
        return self._frame.copy()


def test_hf_load_from_disk_and_hub(tmp_path, tmp_cfg, monkeypatch):
    def split(n, offset=0):
        return _FakeDataset(pd.DataFrame({"sentence": [f"s{offset + i}" for i in range(n)],
                                          "label": [i % 2 for i in range(n)]}))

    calls = []
    fake = types.ModuleType("datasets")
    fake.load_from_disk = lambda path: calls.append(("disk", path)) or {
        "train": split(20), "validation": split(6, 100), "test": split(8, 200)}
    fake.load_dataset = lambda name, config=None: calls.append(("hub", name, config)) or {
        "train": split(20), "test": split(8, 200)}
    monkeypatch.setitem(sys.modules, "datasets", fake)
    (tmp_path / "saved").mkdir()
    cfg = DatasetConfig(name="hf", format="hf", hf_path="saved", text_column="sentence")
    b = load_dataset(cfg, tmp_cfg)
    assert calls == [("disk", str(tmp_path / "saved"))]
    assert {s: len(f) for s, f in b.frames.items()} == {"train": 20, "dev": 6, "test": 8}
    assert b.vocab.names == ["neg", "pos"] and b.dev.loc[0, "text"] == "s100"  # ClassLabel names
    hub = DatasetConfig(name="hub", format="hf", hf_path="someone/data", hf_config="x", text_column="sentence")
    b = load_dataset(hub, tmp_cfg)
    assert calls[-1] == ("hub", "someone/data", "x") and len(b.dev) == 2  # dev carved from train
    bad = DatasetConfig(name="hf", format="hf", hf_path="saved", files={"train": "nope"}, text_column="sentence")
    with pytest.raises(DataError, match=r"not found; it has splits \['train', 'validation', 'test'\]"):
        load_dataset(bad, tmp_cfg)


# ---------------------------------------------------------------------------------------
# error paths: every message names the problem
# ---------------------------------------------------------------------------------------
def test_missing_file_names_path_and_root(tmp_path, tmp_cfg):
    cfg = DatasetConfig(name="gone", files={"train": "nothere/train.csv", "test": "t.csv"})
    with pytest.raises(DataError) as err:
        load_dataset(cfg, tmp_cfg)
    message = str(err.value)
    assert str(tmp_path / "nothere" / "train.csv") in message
    assert f"data root {tmp_path}" in message and "DCLS_DATA_DIR" in message and "data.root" in message


def test_missing_column_lists_columns(tmp_path, tmp_cfg):
    write_csv(tmp_path / "d.csv", [{"body": "x", "label": "a"}])
    cfg = DatasetConfig(name="c", files={"all": "d.csv"}, test_size=0.2)
    with pytest.raises(DataError, match=r"no text column 'text' \(dataset.text_column\); "
                                        r"the columns are \['body', 'label'\]"):
        load_dataset(cfg, tmp_cfg)
    cfg = DatasetConfig(name="c", files={"all": "d.csv"}, test_size=0.2, text_column="body", label_column="lbl")
    with pytest.raises(DataError, match="no label column 'lbl'"):
        load_dataset(cfg, tmp_cfg)
    cfg = DatasetConfig(name="c", files={"all": "d.csv"}, test_size=0.2, text_column="body",
                        multi_hot_columns=["a", "label"])
    with pytest.raises(DataError, match=r"multi-hot label columns \['a'\]"):
        load_dataset(cfg, tmp_cfg)


def test_empty_text_dropped_counted_and_logged(tmp_path, tmp_cfg, caplog):
    rows = small_rows(10)
    rows[0]["text"], rows[11]["text"], rows[12]["text"] = "", "   ", "\t"
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "test.csv", small_rows(3) + [{"text": " ", "label": "pos"}])
    cfg = DatasetConfig(name="e", files={"train": "train.csv", "test": "test.csv"})
    with caplog.at_level(logging.WARNING, logger="dcls_core.data"):
        b = load_dataset(cfg, tmp_cfg)
    assert b.describe()["dropped"] == [
        {"split": "train", "reason": "empty or whitespace-only text", "rows": 3},
        {"split": "test", "reason": "empty or whitespace-only text", "rows": 1}]
    assert len(b.train) + len(b.dev) == 27 and len(b.test) == 9
    assert "dropped 3 row(s) of split 'train': empty or whitespace-only text" in caplog.text
    assert "train-0" in caplog.text  # the log names the rows


def test_split_left_empty_raises(tmp_path, tmp_cfg):
    write_csv(tmp_path / "train.csv", small_rows(5))
    write_csv(tmp_path / "test.csv", [{"text": "  ", "label": "pos"}, {"text": "", "label": "neg"}])
    cfg = DatasetConfig(name="e", files={"train": "train.csv", "test": "test.csv"})
    with pytest.raises(DataError, match=r"split 'test' is empty \(2 dropped: empty or whitespace-only text\)"):
        load_dataset(cfg, tmp_cfg)


def test_unseen_labels_in_dev_and_test(tmp_path, tmp_cfg):
    write_csv(tmp_path / "train.csv", small_rows(5, ("pos", "neg")))
    write_csv(tmp_path / "test.csv", small_rows(2, ("pos", "mixed", "other")))
    cfg = DatasetConfig(name="u", files={"train": "train.csv", "test": "test.csv"})
    with pytest.raises(DataError, match=r"labels in test that train never saw: 'mixed' \(2 rows\), "
                                        r"'other' \(2 rows\)"):
        load_dataset(cfg, tmp_cfg)
    write_csv(tmp_path / "dev.csv", small_rows(2, ("pos", "bad")))
    cfg = DatasetConfig(name="u", files={"train": "train.csv", "dev": "dev.csv", "test": "train.csv"})
    with pytest.raises(DataError, match="labels in dev that train never saw: 'bad'"):
        load_dataset(cfg, tmp_cfg)


def test_k_larger_than_a_class(tmp_path, tmp_cfg):
    write_csv(tmp_path / "d.csv", small_rows(20, ("a", "b")) + small_rows(6, ("rare",)))
    cfg = DatasetConfig(name="k", files={"all": "d.csv"}, test_size=0.5)
    proto = DataConfig(root=tmp_cfg.root, protocol="k_shot", k=4)
    with pytest.raises(DataError, match=r"k=4 rows per class requested from train \(data.k\), "
                                        r"but class 'rare' has only 3"):
        load_dataset(cfg, proto)
    # k fits train, but the dev drawn from what is left does not
    proto = DataConfig(root=tmp_cfg.root, protocol="k_shot", k=3, dev_k=2)
    with pytest.raises(DataError, match=r"k=2 rows per class requested from the train rows left after "
                                        r"the 3-shot draw \(data.dev_k\), but class 'rare' has only 0"):
        load_dataset(cfg, proto)


def test_fewer_than_two_classes(tmp_path, tmp_cfg):
    write_csv(tmp_path / "d.csv", small_rows(10, ("only",)))
    cfg = DatasetConfig(name="one", files={"all": "d.csv"}, test_size=0.2)
    with pytest.raises(DataError, match=r"train has 1 class\(es\) \['only'\]; classification needs at least two"):
        load_dataset(cfg, tmp_cfg)


def test_duplicate_ids_named(tmp_path, tmp_cfg):
    rows = small_rows(5)
    for i, row in enumerate(rows):
        row["id"] = f"r{i}"
    rows[3]["id"] = rows[7]["id"] = "r1"
    write_csv(tmp_path / "d.csv", rows)
    cfg = DatasetConfig(name="dup", files={"all": "d.csv"}, test_size=0.2, id_column="id")
    with pytest.raises(DataError, match=r"duplicate ids in column 'id': 'r1' \(3x\)"):
        load_dataset(cfg, tmp_cfg)


def test_undecodable_bytes_name_file_and_encoding(tmp_path, tmp_cfg):
    path = tmp_path / "latin.csv"
    body = "text,label\n" + "".join(f"caf\u00e9 {i},{'ab'[i % 2]}\n" for i in range(20))
    path.write_bytes(body.encode("latin-1"))
    cfg = DatasetConfig(name="enc", files={"all": "latin.csv"}, test_size=0.2)
    with pytest.raises(DataError) as err:
        load_dataset(cfg, tmp_cfg)
    assert str(path) in str(err.value) and "'utf-8'" in str(err.value) and "dataset.encoding" in str(err.value)
    b = load_dataset(DatasetConfig(name="enc", files={"all": "latin.csv"}, test_size=0.2, encoding="latin-1"),
                     tmp_cfg)
    assert b.to_frame()["text"].str.startswith("caf\u00e9").all()


def test_multi_hot_and_top_labels_counted(tmp_path, tmp_cfg):
    rows = []
    for label, n in (("a", 12), ("b", 10), ("c", 8), ("d", 3)):
        rows += [{"text": f"{label}{i}", "a": int(label == "a"), "b": int(label == "b"), "c": int(label == "c"),
                  "d": int(label == "d")} for i in range(n)]
    rows += [{"text": "two", "a": 1, "b": 1, "c": 0, "d": 0}, {"text": "none", "a": 0, "b": 0, "c": 0, "d": 0}]
    write_csv(tmp_path / "m.csv", rows)
    cfg = DatasetConfig(name="m", files={"all": "m.csv"}, multi_hot_columns=["a", "b", "c", "d"],
                        keep_top_labels=3, test_size=0.25)
    frames, drops = load_source(cfg, tmp_cfg)
    assert drops == [{"split": "all", "reason": "no label set (multi-hot row)", "rows": 1},
                     {"split": "all", "reason": "several labels set (multi-hot row; only single-label rows are kept)",
                      "rows": 1},
                     {"split": "all", "reason": "label outside the 3 most frequent", "rows": 3}]
    assert counts(pd.concat(frames.values())) == {"a": 12, "b": 10, "c": 8}


def test_label_names_must_cover_every_label(tmp_path, tmp_cfg):
    write_csv(tmp_path / "d.csv", [{"text": f"t{i}", "label": i % 3} for i in range(30)])
    cfg = DatasetConfig(name="n", files={"all": "d.csv"}, test_size=0.2, label_names={"0": "neg", "1": "pos"})
    with pytest.raises(DataError, match=r"labels \['2'\] are not in dataset.label_names"):
        load_dataset(cfg, tmp_cfg)


def test_no_test_split_needs_test_size(tmp_path, tmp_cfg):
    write_csv(tmp_path / "train.csv", small_rows(10))
    with pytest.raises(DataError, match="no test split; give dataset.files.test or set dataset.test_size"):
        load_dataset(DatasetConfig(name="t", files={"train": "train.csv"}), tmp_cfg)
    b = load_dataset(DatasetConfig(name="t", files={"train": "train.csv"}, test_size=0.2), tmp_cfg)
    assert len(b.test) == 6 and set(b.test["id"]).isdisjoint(b.train["id"])


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def test_cli_describe_subprocess(data_root):
    env = {**__import__("os").environ, "DCLS_DATA_DIR": str(data_root)}
    proc = subprocess.run([sys.executable, "-m", "dcls_core.cli", "data", "describe", "india_covid_x",
                           "data.protocol=k_shot", "data.k=10"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert set(out) == {"dataset", "splits", "dropped", "warnings"} and out["dataset"] == "india_covid_x"
    assert {s: v["rows"] for s, v in out["splits"].items()} == {"train": 40, "dev": 40, "test": 926}
    assert out["splits"]["test"]["labels"] == {"anger": 230, "fear": 240, "joy": 218, "sad": 238}
    assert "held out 926" in proc.stderr  # logs go to stderr


def test_cli_custom_file_and_errors(tmp_path, capsys):
    write_csv(tmp_path / "mine.csv", [{"body": f"t{i}", "y": "ab"[i % 2]} for i in range(20)])
    assert cli_main(["data", "describe", str(tmp_path / "mine.csv"), "dataset.text_column=body",
                     "dataset.label_column=y", "data.protocol=k_shot", "data.k=2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "mine"
    assert {s: v["rows"] for s, v in out["splits"].items()} == {"train": 4, "dev": 4, "test": 4}
    # errors: message on stderr, exit status 2, no traceback
    for argv, needle in ((["data", "describe", str(tmp_path / "mine.csv")], "no text column 'text'"),
                         (["data", "describe", "no_such_preset"], "unknown dataset 'no_such_preset'"),
                         (["data", "describe", "sst2", "data.k=0"], "data.k=0 is invalid"),
                         (["data", "describe", "sst2", "dataset.nope=1"], "unknown config key 'dataset.nope'")):
        assert cli_main(argv) == 2
        captured = capsys.readouterr()
        assert needle in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_cli_console_script_error_exit_code(tmp_path):
    script = Path(sys.executable).parent / "dcls"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run([str(script), "data", "describe", str(tmp_path / "absent.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "data file not found" in proc.stderr and "Traceback" not in proc.stderr
