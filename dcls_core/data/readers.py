"""Read one source file (or a Hugging Face dataset) into a raw DataFrame.

Readers only parse: they keep every column as the file has it (CSV/TSV cells as strings,
nothing turned into NaN) and turn parse failures into :class:`DataError`. Mapping columns
to the schema happens in :mod:`dcls_core.data.loading`.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from .errors import DataError

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "hf")

_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def infer_format(path: Path) -> str:
    """The ``dataset.format`` for a file from its suffix; a folder is a ``save_to_disk``
    Hugging Face dataset (``hf``)."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot infer the format of {path} from its suffix {path.suffix!r}; "
                        f"known suffixes: {sorted(_SUFFIXES)} (or set dataset.format)")
    return fmt


def _decode_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    return DataError(f"{path}: cannot decode the file as {encoding!r} "
                     f"(byte {exc.object[exc.start:exc.start + 1]!r} at position {exc.start}: {exc.reason}); "
                     f"set dataset.encoding to the file's encoding, e.g. dataset.encoding=latin-1 "
                     f"or dataset.encoding=utf-8-sig")


def read_file(path: Path, fmt: str, encoding: str = "utf-8") -> pd.DataFrame:
    """Parse ``path`` as ``fmt`` (csv, tsv, json, jsonl, parquet) into a raw DataFrame."""
    try:
        if fmt in ("csv", "tsv"):
            # TSV: GLUE style, no quoting (quote characters are text); CSV: standard quoting.
            options: Dict[str, Any] = dict(sep="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else {}
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding, **options)
        if fmt == "json":
            with open(path, encoding=encoding) as handle:
                try:
                    payload = json.load(handle)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                    f"{exc.msg}); format=json expects one array of objects, "
                                    f"use format=jsonl for one object per line") from None
            if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
                raise DataError(f"{path}: format=json expects a JSON array of objects "
                                f"(got {type(payload).__name__})")
            return pd.DataFrame.from_records(payload)
        if fmt == "jsonl":
            records = []
            with open(path, encoding=encoding) as handle:
                for lineno, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}: line {lineno} is not valid JSON ({exc.msg}); "
                                        f"format=jsonl expects one object per line") from None
                    if not isinstance(record, dict):
                        raise DataError(f"{path}: line {lineno} is a {type(record).__name__}, "
                                        f"not a JSON object")
                    records.append(record)
            return pd.DataFrame.from_records(records)
        if fmt == "parquet":
            return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None
    except LookupError as exc:  # unknown codec name
        raise DataError(f"{path}: unknown encoding {encoding!r} (dataset.encoding): {exc}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header, no rows)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot parse as {fmt}: {exc}") from None
    except DataError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow errors subclass these
        raise DataError(f"{path}: cannot read as {fmt}: {exc}") from None
    raise DataError(f"unsupported format {fmt!r}; expected one of {list(FORMATS)}")


def read_columns(path: Path, fmt: str, encoding: str = "utf-8") -> List[str]:
    """The column names of a data file (the header, or the keys of the first record) without
    reading all of it; [] when there is nothing to read (errors surface in :func:`read_file`)."""
    try:
        if fmt in ("csv", "tsv"):
            options: Dict[str, Any] = dict(sep="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else {}
            return [str(c) for c in pd.read_csv(path, nrows=0, encoding=encoding, **options).columns]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if fmt == "jsonl":
            with open(path, encoding=encoding) as handle:
                for line in handle:
                    if line.strip():
                        record = json.loads(line)
                        return [str(k) for k in record] if isinstance(record, dict) else []
            return []
        return [str(c) for c in read_file(path, fmt, encoding).columns]
    except (DataError, OSError, ValueError, UnicodeDecodeError, LookupError, pd.errors.EmptyDataError):
        return []


def _import_datasets():
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError:
        raise DataError("dataset.format=hf needs the Hugging Face `datasets` package, which is not "
                        "installed: pip install datasets") from None
    return datasets


_DEFAULT_HF_SPLITS = {"train": ("train",), "dev": ("validation", "dev", "valid"), "test": ("test",)}


def read_hf(hf_path: str, hf_config: Optional[str], files: Dict[str, str], root: Path,
            label_column: str) -> Tuple[Dict[str, pd.DataFrame], Dict[str, str], str]:
    """Load a Hugging Face dataset: a ``save_to_disk`` folder (``hf_path`` relative to
    ``root`` unless absolute) or a hub name. ``files`` maps our split -> HF split name
    (default train/validation/test, whichever exist). Returns the raw frames per split, the
    label-id -> name mapping of a ``ClassLabel`` label feature (empty if none) and a
    description of where the data came from."""
    datasets = _import_datasets()
    local = Path(hf_path).expanduser()
    if not local.is_absolute():
        local = root / local
    try:
        if local.is_dir():
            source = f"Hugging Face dataset folder {local}"
            loaded = datasets.load_from_disk(str(local))
        elif Path(hf_path).is_absolute() or hf_path.startswith("."):
            raise DataError(f"Hugging Face dataset folder not found: {local} (dataset.hf_path={hf_path!r}, "
                            f"data root {root})")
        else:
            source = f"Hugging Face hub dataset {hf_path!r}" + (f" ({hf_config})" if hf_config else "")
            loaded = datasets.load_dataset(hf_path, hf_config)
    except DataError:
        raise
    except Exception as exc:  # network, missing cache, bad name: all reported the same way
        raise DataError(f"could not load Hugging Face dataset {hf_path!r}: {exc}") from None

    if isinstance(loaded, dict):  # DatasetDict subclasses dict
        available = list(loaded.keys())
        if files:
            mapping = dict(files)
        else:
            mapping = {}
            for ours, candidates in _DEFAULT_HF_SPLITS.items():
                for name in candidates:
                    if name in available:
                        mapping[ours] = name
                        break
            if not mapping and len(available) == 1:
                mapping = {"all": available[0]}
        missing = {ours: name for ours, name in mapping.items() if name not in available}
        if missing:
            raise DataError(f"{source}: splits {missing} not found; it has splits {available} "
                            f"(map them with dataset.files, e.g. dataset.files={{train:train,test:test}})")
        parts = {ours: loaded[name] for ours, name in mapping.items()}
    else:  # a single Dataset
        if files and set(files) != {"all"}:
            raise DataError(f"{source} is a single split; dataset.files must be empty or {{all: ...}}")
        parts = {"all": loaded}

    label_names: Dict[str, str] = {}
    for part in parts.values():
        feature = getattr(part, "features", {}).get(label_column) if hasattr(part, "features") else None
        names = getattr(feature, "names", None)
        if names:
            label_names = {str(i): str(n) for i, n in enumerate(names)}
            break
    return {ours: part.to_pandas() for ours, part in parts.items()}, label_names, source
