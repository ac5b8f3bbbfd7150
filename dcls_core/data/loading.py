"""Sources (files or Hugging Face datasets) -> schema frames -> :class:`DatasetBundle`.

Steps, each driven by :class:`~dcls_core.config.DatasetConfig` fields rather than
per-dataset code:

1. read every entry of ``dataset.files`` (split -> file; ``all`` = one file to be split);
2. map columns to the schema (``text_column``/``label_column``/``id_column``, per-split
   ``split_columns``; ``multi_hot_columns`` turn 0/1 columns into one label name per row);
   strip surrounding whitespace from text and labels; labels that are all integral numbers
   written as floats (``0.0``, ``1.0``: pandas wrote a column with a NaN) are read as ``0``,
   ``1``; rename labels with ``label_names``;
3. drop rows with empty, whitespace-only or zero-width-only text, no label or (multi-hot)
   several labels, then rows outside the ``keep_top_labels`` most frequent labels; rows marked in
   ``pseudo_column`` (pseudo samples of an earlier augmentation) are set aside, never originals;
   every drop is counted and logged;
4. split ``all`` (or train, when no test file is given) into train/test with ``test_size``,
   stratified and seeded with ``split_seed`` (fixed, so the test set does not move with
   ``data.seed``);
5. check labels and sizes, warn about labels a user should look at (numbers without names,
   one-row classes, spellings that differ only in case or punctuation), build the
   :class:`LabelVocab` from the source train split, then apply the low-resource protocol
   (:func:`dcls_core.data.sampling.apply_protocol`).
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from ..augment import PSEUDO_COLUMNS, empty_pseudo_frame
from ..config import DataConfig, DatasetConfig
from .bundle import DatasetBundle
from .errors import DataError
from .readers import read_file, read_hf
from .sampling import apply_protocol, stratified_split
from .schema import COLUMNS, SPLITS, blank_text
from .vocab import LabelVocab

log = logging.getLogger(__name__)

SOURCE_SPLITS = ("train", "dev", "test", "all")
_COLUMN_ROLES = ("text", "label", "id")

REASON_EMPTY_TEXT = "empty or whitespace-only text"
REASON_NO_LABEL = "missing label"
REASON_NO_HOT = "no label set (multi-hot row)"
REASON_MULTI_HOT = "several labels set (multi-hot row; only single-label rows are kept)"
REASON_ZERO_WIDTH = "text of zero-width characters only (nothing visible)"
REASON_PSEUDO = "pseudo sample of an earlier augmentation (set aside, not an original)"

_INTEGRAL_FLOAT = re.compile(r"-?\d+(\.0+)?")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_MISSING_LIKE = {"nan", "none", "null", "na", "n/a", "-", "?"}


def _reason_top(n: int, ref: str) -> str:
    return f"label outside the {n} most frequent" + (" of train" if ref == "train" else "")


class _Drops:
    """The loader's report: counts and logs every group of rows it leaves out, keeps the pseudo
    rows it set aside and the warnings a user can act on."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.entries: List[Dict[str, Any]] = []
        self.warnings: List[str] = []
        self.pseudo: List[pd.DataFrame] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def add(self, split: str, reason: str, rows: pd.DataFrame, level: int = logging.INFO,
            detail: str = "") -> None:
        if len(rows) == 0:
            return
        for entry in self.entries:
            if entry["split"] == split and entry["reason"] == reason:
                entry["rows"] += int(len(rows))
                break
        else:
            self.entries.append({"split": split, "reason": reason, "rows": int(len(rows))})
        ids = rows["id"].head(5).tolist()
        more = ", ..." if len(rows) > 5 else ""
        log.log(level, "%s: dropped %d row(s) of split %r: %s%s (ids: %s%s)", self.dataset, len(rows),
                split, reason, detail, ", ".join(map(str, ids)), more)


def _as_str(series: pd.Series) -> pd.Series:
    """Any column -> str values; missing values become "" and integral floats lose ".0"."""
    if isinstance(series.dtype, pd.StringDtype) or series.dtype == object and all(
            isinstance(v, str) for v in series.head(1000)):
        out = series.fillna("")
        if all(isinstance(v, str) for v in out):
            return out.astype(str)

    def convert(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, (float, np.floating)):
            if math.isnan(value):
                return ""
            if float(value).is_integer():
                return str(int(value))
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        try:
            if pd.isna(value):
                return ""
        except (TypeError, ValueError):  # lists, arrays
            pass
        return str(value)

    return pd.Series([convert(v) for v in series], index=series.index, dtype=str)


def _root_origin(data_cfg: DataConfig) -> str:
    if os.environ.get("DCLS_DATA_DIR"):
        return "set by DCLS_DATA_DIR"
    if data_cfg.root:
        return "set by data.root"
    return "the default: ../shared/data next to the project"


def resolve_path(file: str, root: Path) -> Path:
    """A preset's file: absolute paths as given, relative ones under the data root."""
    path = Path(file).expanduser()
    return path if path.is_absolute() else root / path


def _check_file(path: Path, key: str, file: str, root: Path, data_cfg: DataConfig, dataset: str) -> None:
    if path.is_file():
        return
    what = "is a folder, not a file" if path.exists() else "not found"
    if Path(file).expanduser().is_absolute():  # the data root plays no part: no advice about it
        raise DataError(f"{dataset}: file for split {key!r} {what}: {path} (dataset.files.{key})")
    root_note = "" if root.is_dir() else " (that folder does not exist)"
    raise DataError(
        f"{dataset}: file for split {key!r} {what}: {path}; dataset.files.{key}={file!r} is resolved "
        f"against the data root {root}{root_note} ({_root_origin(data_cfg)}); point it at the folder "
        f"holding your data with DCLS_DATA_DIR=/path/to/data or data.root=/path/to/data, "
        f"or give an absolute path")


def _columns_for(cfg: DatasetConfig, split: str) -> Dict[str, Optional[str]]:
    override = dict(cfg.split_columns.get(split, {}))
    unknown = sorted(set(override) - set(_COLUMN_ROLES))
    if unknown:
        raise DataError(f"dataset.split_columns.{split} has unknown keys {unknown}; "
                        f"allowed: {list(_COLUMN_ROLES)}")
    return {
        "text": override.get("text", cfg.text_column),
        "label": override.get("label", cfg.label_column),
        "id": override.get("id", cfg.id_column),
    }


def _require_column(raw: pd.DataFrame, column: str, role: str, key: str, source: str) -> None:
    if column not in raw.columns:
        raise DataError(f"{source}: no {role} column {column!r} ({key}); the columns are "
                        f"{[str(c) for c in raw.columns]}")


def _to_schema(raw: pd.DataFrame, cfg: DatasetConfig, split: str, source: str,
               label_map: Dict[str, str], drops: _Drops) -> pd.DataFrame:
    """One source split's raw frame -> schema rows (empty text / label problems dropped)."""
    if len(raw.columns) and isinstance(raw.columns[0], str) and raw.columns[0].startswith("\ufeff"):
        raw = raw.rename(columns={raw.columns[0]: raw.columns[0].lstrip("\ufeff")})
    columns = _columns_for(cfg, split)
    override_key = f"dataset.split_columns.{split}" if split in cfg.split_columns else "dataset"
    text_key = f"{override_key}.text" if "text" in cfg.split_columns.get(split, {}) else "dataset.text_column"
    _require_column(raw, columns["text"], "text", text_key, source)

    if columns["id"]:
        id_key = f"{override_key}.id" if "id" in cfg.split_columns.get(split, {}) else "dataset.id_column"
        _require_column(raw, columns["id"], "id", id_key, source)
        ids = _as_str(raw[columns["id"]]).str.strip()
        if (ids == "").any():
            raise DataError(f"{source}: {int((ids == '').sum())} row(s) have an empty id in column "
                            f"{columns['id']!r}; fill them or unset dataset.id_column to use row numbers")
        counts = Counter(ids)
        repeated = [(i, n) for i, n in counts.items() if n > 1]
        if repeated:
            shown = ", ".join(f"{i!r} ({n}x)" for i, n in repeated[:5])
            raise DataError(f"{source}: duplicate ids in column {columns['id']!r}: {shown}"
                            f"{' ...' if len(repeated) > 5 else ''} ({len(repeated)} id(s) repeated); "
                            f"ids must be unique within a split (unset dataset.id_column to use row numbers)")
    else:
        ids = pd.Series([f"{split}-{i}" for i in range(len(raw))], index=raw.index, dtype=str)

    text = _as_str(raw[columns["text"]]).str.strip()
    frame = pd.DataFrame({"id": ids.to_numpy(), "text": text.to_numpy()}, index=raw.index)
    keep = frame["text"] != ""
    drops.add(split, REASON_EMPTY_TEXT, frame[~keep], level=logging.WARNING)
    invisible = keep & blank_text(frame["text"])
    drops.add(split, REASON_ZERO_WIDTH, frame[invisible], level=logging.WARNING)
    keep &= ~invisible

    if cfg.multi_hot_columns:
        hot_columns = list(cfg.multi_hot_columns)
        missing = [c for c in hot_columns if c not in raw.columns]
        if missing:
            raise DataError(f"{source}: multi-hot label columns {missing} (dataset.multi_hot_columns) "
                            f"not found; the columns are {[str(c) for c in raw.columns]}")
        values = raw[hot_columns].apply(lambda col: pd.to_numeric(col, errors="coerce"))
        if values.isna().any().any():
            column = values.columns[values.isna().any()][0]
            row = int(np.flatnonzero(values[column].isna().to_numpy())[0])
            raise DataError(f"{source}: multi-hot column {column!r} has a non-numeric value "
                            f"{raw[column].iloc[row]!r} (data row {row}); expected 0/1")
        hot = values.to_numpy() > 0
        n_set = hot.sum(axis=1)
        frame["label"] = np.array(hot_columns, dtype=object)[hot.argmax(axis=1)]
        none = keep & (n_set == 0)
        several = keep & (n_set > 1)
        drops.add(split, REASON_NO_HOT, frame[none])
        drops.add(split, REASON_MULTI_HOT, frame[several])
        keep &= n_set == 1
    else:
        label_key = (f"{override_key}.label" if "label" in cfg.split_columns.get(split, {})
                     else "dataset.label_column")
        _require_column(raw, columns["label"], "label", label_key, source)
        labels = _as_str(raw[columns["label"]]).str.strip()
        given = labels[labels != ""]
        if len(given) and given.str.fullmatch(_INTEGRAL_FLOAT).all() and given.str.contains(".", regex=False).any():
            # "0.0"/"1.0": a label column pandas wrote as floats (a NaN in it); "0"/"1" is meant
            labels = labels.str.replace(r"\.0+$", "", regex=True)
            log.info("%s: labels written as floats (e.g. %r) read as integers", source, given.iloc[0])
        frame["label"] = labels.to_numpy()
        no_label = keep & (frame["label"] == "")
        drops.add(split, REASON_NO_LABEL, frame[no_label], level=logging.WARNING)
        keep &= ~no_label

    frame = frame[keep]
    if label_map:
        unknown = sorted(set(frame["label"]) - set(label_map))
        if unknown:
            raise DataError(f"{source}: labels {unknown[:10]} are not in dataset.label_names "
                            f"(which maps {sorted(label_map)}); add them or clear dataset.label_names")
        frame = frame.assign(label=frame["label"].map(label_map))
    frame["split"] = split
    frame = frame[list(COLUMNS)]
    if cfg.pseudo_column and cfg.pseudo_column in raw.columns:
        marked = _flags(raw.loc[frame.index, cfg.pseudo_column])
        if marked.any():
            pseudo = frame[marked].copy()
            pseudo["is_pseudo"] = True
            pseudo["split"] = "train"  # pseudo samples only ever train
            for column in [*PSEUDO_COLUMNS, "consistency"]:  # what the earlier run wrote about them
                if column in raw.columns and column not in pseudo.columns:
                    pseudo[column] = raw.loc[pseudo.index, column].to_numpy()
            drops.add(split, REASON_PSEUDO, pseudo, level=logging.WARNING,
                      detail=f" (dataset.pseudo_column={cfg.pseudo_column!r}; "
                             f"dataset.pseudo_column=null makes them originals)")
            drops.pseudo.append(pseudo.reset_index(drop=True))
            frame = frame[~marked]
    return frame.reset_index(drop=True)


def _flags(values: pd.Series) -> np.ndarray:
    """A true/false column as written by pandas, CSV or JSON: bools, 0/1, "True"/"false"/"yes"."""
    def truthy(value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, float, np.integer, np.floating)):
            return not pd.isna(value) and value != 0
        return str(value).strip().lower() in ("true", "1", "yes", "y", "t")

    return np.array([truthy(v) for v in values], dtype=bool)


def _label_warnings(frames: Dict[str, pd.DataFrame], name: str, drops: _Drops) -> None:
    """Warnings about labels that are probably not what the user meant (nothing is changed)."""
    counts: Counter = Counter()
    for frame in frames.values():
        counts.update(frame["label"])
    labels = sorted(counts)
    if labels and all(_NUMBER.fullmatch(label) for label in labels):
        example = ", ".join(f"{label}: name_{label}" for label in labels[:4])
        drops.warn(f"{name}: the labels are numbers {labels[:10]}; the generator's label prompts would be these "
                   f"digits. Name the classes with dataset.label_names={{{example}{', ...' if len(labels) > 4 else ''}}}")
    spellings: Dict[str, List[str]] = defaultdict(list)
    for label in labels:
        spellings[re.sub(r"[\W_]+", "", label.casefold())].append(label)
    for variants in spellings.values():
        if len(variants) > 1:
            main = max(variants, key=lambda v: counts[v])
            shown = ", ".join(f"{v!r} ({counts[v]} rows)" for v in variants)
            mapping = ", ".join(f"{v}: {main}" for v in variants if v != main)
            drops.warn(f"{name}: labels {shown} differ only in case, spaces or punctuation; if they are one class, "
                       f"fix the file or map them with dataset.label_names (which then has to name every label: "
                       f"{{{mapping}, ...}})")
    for label in labels:
        if counts[label] == 1:
            hint = " and looks like a missing value" if label.strip().lower() in _MISSING_LIKE else ""
            drops.warn(f"{name}: class {label!r} has a single row{hint}; a one-row class cannot reach both train "
                       f"and test and is usually a typo or a stray value: fix or remove that row")


def _read_sources(cfg: DatasetConfig, data_cfg: DataConfig, root: Path,
                  drops: _Drops) -> Dict[str, pd.DataFrame]:
    files = dict(cfg.files)
    if cfg.format != "hf":
        if not files:
            raise DataError(f"{cfg.name}: dataset.files is empty; give split -> file, e.g. "
                            f"dataset.files={{train:train.csv,test:test.csv}} or {{all:data.csv}}")
    unknown = sorted(set(files) - set(SOURCE_SPLITS))
    if unknown:
        raise DataError(f"{cfg.name}: dataset.files has unknown splits {unknown}; "
                        f"allowed: {list(SOURCE_SPLITS)}")
    if "all" in files and len(files) > 1:
        raise DataError(f"{cfg.name}: dataset.files.all (one file to be split) cannot be combined "
                        f"with {sorted(set(files) - {'all'})}")

    label_map = {str(k): str(v) for k, v in cfg.label_names.items()}
    frames: Dict[str, pd.DataFrame] = {}
    if cfg.format == "hf":
        if not cfg.hf_path:
            raise DataError(f"{cfg.name}: dataset.format=hf needs dataset.hf_path "
                            f"(a hub name or a datasets.save_to_disk folder)")
        raws, class_names, source = read_hf(cfg.hf_path, cfg.hf_config, files, root, cfg.label_column)
        if not label_map:
            label_map = class_names
        for split, raw in raws.items():
            frames[split] = _to_schema(raw, cfg, split, f"{source} [{split}]", label_map, drops)
    else:
        for split, file in files.items():
            path = resolve_path(str(file), root)
            _check_file(path, split, str(file), root, data_cfg, cfg.name)
            raw = read_file(path, cfg.format, cfg.encoding)
            frames[split] = _to_schema(raw, cfg, split, str(path), label_map, drops)
    if "train" not in frames and "all" not in frames:
        raise DataError(f"{cfg.name}: no train split; dataset.files needs a 'train' (or 'all') entry, "
                        f"it has {sorted(frames)}")
    return frames


def _keep_top_labels(frames: Dict[str, pd.DataFrame], n: int, drops: _Drops) -> Dict[str, pd.DataFrame]:
    ref = "all" if "all" in frames else "train"
    counts = frames[ref]["label"].value_counts()
    ranked = sorted(((str(label), int(c)) for label, c in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    keep = [label for label, _ in ranked[:n]]
    if len(ranked) > n:
        log.info("keeping the %d most frequent labels of %s: %s; leaving out %s", n, ref,
                 ", ".join(f"{l} ({c})" for l, c in ranked[:n]),
                 ", ".join(f"{l} ({c})" for l, c in ranked[n:]))
    out = {}
    for split, frame in frames.items():
        outside = ~frame["label"].isin(keep)
        drops.add(split, _reason_top(n, ref), frame[outside])
        out[split] = frame[~outside].reset_index(drop=True)
    return out


def load_source(dataset_cfg: DatasetConfig, data_cfg: DataConfig) -> Tuple[Dict[str, pd.DataFrame], List[Dict[str, Any]]]:
    """The source's own splits in the schema, before any protocol or dev carving.

    Returns ``(frames, dropped)``: ``frames`` has ``train`` and ``test`` and, when the source
    has one, ``dev``; ``dropped`` lists ``{"split", "reason", "rows"}``.
    """
    frames, drops = _load_source(dataset_cfg, data_cfg)
    return frames, drops.entries


def _load_source(dataset_cfg: DatasetConfig, data_cfg: DataConfig) -> Tuple[Dict[str, pd.DataFrame], _Drops]:
    cfg = dataset_cfg
    root = data_cfg.resolved_root()
    drops = _Drops(cfg.name)
    frames = _read_sources(cfg, data_cfg, root, drops)

    for split, frame in frames.items():
        if frame.empty:
            lost = [d for d in drops.entries if d["split"] == split]
            detail = "; ".join(f"{d['rows']} dropped: {d['reason']}" for d in lost) or "the source has no rows"
            raise DataError(f"{cfg.name}: split {split!r} is empty ({detail})")

    if cfg.keep_top_labels is not None:
        frames = _keep_top_labels(frames, cfg.keep_top_labels, drops)
    _label_warnings(frames, cfg.name, drops)

    if "test" not in frames:
        base = "all" if "all" in frames else "train"
        if cfg.test_size is None:
            raise DataError(f"{cfg.name}: no test split; give dataset.files.test or set dataset.test_size "
                            f"to hold out a stratified share of {base!r} (e.g. dataset.test_size=0.2)")
        train, test = stratified_split(frames.pop(base), cfg.test_size, cfg.split_seed)
        frames["train"] = train.assign(split="train").reset_index(drop=True)
        frames["test"] = test.assign(split="test").reset_index(drop=True)
        log.info("%s: held out %d of %d %s rows as test (dataset.test_size=%s, split_seed=%d)",
                 cfg.name, len(test), len(train) + len(test), base, cfg.test_size, cfg.split_seed)
    elif cfg.test_size is not None:
        log.warning("%s: dataset.test_size=%s is ignored because dataset.files has a test file",
                    cfg.name, cfg.test_size)

    train_labels = set(frames["train"]["label"])
    if len(train_labels) < 2:
        raise DataError(f"{cfg.name}: train has {len(train_labels)} class(es) {sorted(train_labels)}; "
                        f"classification needs at least two")
    for split in ("dev", "test"):
        if split not in frames:
            continue
        unseen = frames[split]["label"][~frames[split]["label"].isin(train_labels)].value_counts()
        if len(unseen):
            shown = ", ".join(f"{label!r} ({int(n)} rows)" for label, n in unseen.items())
            raise DataError(f"{cfg.name}: labels in {split} that train never saw: {shown}; "
                            f"train has {sorted(train_labels)}")
    order = [s for s in SPLITS if s in frames]
    return {s: frames[s] for s in order}, drops


def load_dataset(dataset_cfg: DatasetConfig, data_cfg: DataConfig) -> DatasetBundle:
    """Load a dataset and draw its low-resource protocol: a :class:`DatasetBundle` with
    train/dev/test frames in the schema, the label vocab (sorted names of the source train
    split) and every dropped row counted. Raises :class:`DataError` on bad input."""
    frames, drops = _load_source(dataset_cfg, data_cfg)
    vocab = LabelVocab.from_labels(frames["train"]["label"])
    frames = apply_protocol(frames, data_cfg)
    for split in SPLITS:
        if frames[split].empty:
            raise DataError(f"{dataset_cfg.name}: split {split!r} is empty after data.protocol="
                            f"{data_cfg.protocol} (data.dev_size={data_cfg.dev_size}); "
                            f"the classes are too small to carve it")
    pseudo = (pd.concat(drops.pseudo, ignore_index=True, sort=False) if drops.pseudo
              else empty_pseudo_frame())
    return DatasetBundle(name=dataset_cfg.name, frames=frames, vocab=vocab, dropped=drops.entries,
                         pseudo=pseudo, warnings=list(drops.warnings))
