"""Run folder and stage cache (Ray-free).

A run folder holds one pipeline run::

    <run>/config.yaml            resolved config
    <run>/data_report.json       what the data stage loaded
    <run>/stages/<name>-<key>/   one folder per stage output, <key> hashed from its inputs
                                 and its config section; complete iff it holds ``_stage.json``
    <run>/augmented.parquet, metrics.json, report.md, plots/*.png

Every write is atomic: a stage builds its output in a temporary sibling folder and renames
it into place only when it finished, so a killed stage never leaves a half output that a
rerun would trust. Files are written to ``<name>.tmp-<pid>`` and ``os.replace``-d.

A run kept on a URI (``storage_path=s3://...``, see ``dcls_core.storage``) works in a local
working copy that ``RunFolder(remote=...)`` mirrors there stage by stage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Union

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dcls_core.storage import Location

log = logging.getLogger(__name__)

MARKER = "_stage.json"
PathLike = Union[str, Path]


def _plain(obj: Any) -> Any:
    """Dataclasses/paths/sets -> JSON-able values with a stable form."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_plain(v) for v in obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 1.0 and 1 hash alike (YAML may give either)
    return obj


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short, order-independent hash of a JSON-able value (dataclasses allowed)."""
    text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def stage_key(name: str, input_keys: Iterable[str], config: Any) -> str:
    """Key of a stage's output: its name, the keys of the stages it reads, its config."""
    return stable_hash({"stage": name, "inputs": list(input_keys), "config": config})


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(_plain(obj), indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: PathLike) -> Any:
    with open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def atomic_write_parquet(path: PathLike, frame) -> Path:
    """Write a pandas DataFrame to Parquet atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_rows(path: PathLike, columns: Optional[list] = None):
    """A stage's Parquet rows sorted by ``id``: one file, or a folder of parts that Ray Data
    workers wrote in the order they finished (the sort makes the frame independent of it)."""
    import pandas as pd

    return sort_rows(pd.read_parquet(path, columns=columns))


def sort_rows(frame):
    """Rows in id order (a frame without an id column as it is)."""
    if "id" in frame.columns:
        frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    return frame


def iter_row_chunks(path: PathLike, rows: int = 4096, columns: Optional[list] = None):
    """Pandas chunks of at most ``rows`` rows of a Parquet file or folder, read one at a time (the
    reader never holds more than a chunk)."""
    import pyarrow.dataset as pads

    for batch in pads.dataset(str(path), format="parquet").to_batches(columns=columns, batch_size=rows):
        if batch.num_rows:
            yield batch.to_pandas()


def id_counts(path: PathLike, column: str = "id") -> tuple:
    """(rows, distinct values of ``column``) of a Parquet file or folder, from that column only."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    ids = pads.dataset(str(path), format="parquet").to_table(columns=[column])[column]
    return len(ids), (pc.count_distinct(ids).as_py() if len(ids) else 0)


@contextlib.contextmanager
def file_lock(path: PathLike) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block: processes
    that would compute the same output wait for the first instead (the lock goes with the
    process if it is killed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class StageOutput:
    """A finished stage: where its files are and the key later stages hash in."""

    name: str
    key: str
    path: Path
    skipped: bool  # True when a previous run had already produced it

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def meta(self) -> Dict[str, Any]:
        return read_json(self.path / MARKER)


class RunFolder:
    """The run folder plus its stage cache.

    ``remote``: where the run is kept when that is a URI (``dcls_core.storage``); ``root`` is then
    its working copy. Each finished stage is uploaded there (``_stage.json`` last), a stage found
    there but not here is downloaded instead of recomputed, and :meth:`publish` uploads the rest.
    """

    def __init__(self, root: PathLike, logger: Optional[Callable[[str], None]] = None,
                 remote: Optional["Location"] = None):
        self.root = Path(root).expanduser().resolve()
        self.stages = self.root / "stages"
        self.stages.mkdir(parents=True, exist_ok=True)
        self._log = logger or log.info
        self.history: list[StageOutput] = []
        self.remote = remote

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stage_dir(self, name: str, key: str) -> Path:
        return self.stages / f"{name}-{key}"

    def find(self, name: str, key: str) -> Optional[StageOutput]:
        folder = self.stage_dir(name, key)
        if (folder / MARKER).exists():
            self._upload(folder, only_if_missing=True)  # an earlier run may have stopped before uploading it
            return StageOutput(name, key, folder, skipped=True)
        if self.remote is not None and self._download(folder):
            return StageOutput(name, key, folder, skipped=True)
        return None

    def _remote_stage(self, folder: Path) -> "Location":
        return self.remote.join("stages", folder.name)

    def _upload(self, folder: Path, only_if_missing: bool = False) -> None:
        if self.remote is None:
            return
        from dcls_core import storage

        target = self._remote_stage(folder)
        if only_if_missing and storage.exists(target.join(MARKER)):
            return
        count = storage.upload(folder, target, last=MARKER)
        self._log(f"[stage] {folder.name}: uploaded {count} files to {target}")

    def _download(self, folder: Path) -> bool:
        from dcls_core import storage

        source = self._remote_stage(folder)
        if not storage.exists(source.join(MARKER)):
            return False
        storage.download(source, folder)
        self._log(f"[stage] {folder.name}: finished in {source}, downloaded")
        return (folder / MARKER).exists()

    def publish(self) -> None:
        """Upload the run's top-level files and folders (metrics, report, plots, ...) to ``remote``;
        stages were uploaded as they finished. Nothing to do for a run folder on a path."""
        if self.remote is None:
            return
        from dcls_core import storage

        count = storage.upload(self.root, self.remote, skip=("stages",))
        self._log(f"run folder: uploaded {count} files to {self.remote}")

    def stage(self, name: str, inputs: Iterable[Union[StageOutput, str]], config: Any,
              fn: Callable[[Path], Optional[Dict[str, Any]]]) -> StageOutput:
        """Run ``fn(tmp_dir)`` unless ``stages/<name>-<key>`` is already complete.

        ``inputs``: the stages (or raw keys) this one reads; ``config``: the config section
        that changes its output. ``fn`` writes its files into ``tmp_dir`` and may return a
        dict of summary values kept in the stage's ``_stage.json``. On success the folder is
        renamed into place; on any exception it is removed and the exception propagates.
        """
        input_keys = [i.key if isinstance(i, StageOutput) else str(i) for i in inputs]
        key = stage_key(name, input_keys, config)
        done = self.find(name, key)
        if done is not None:
            self._log(f"[stage] {name}-{key}: output exists, skipped")
            self.history.append(done)
            return done
        final = self.stage_dir(name, key)
        tmp = self.stages / f".{name}-{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._clean_stale(name, key)
        tmp.mkdir(parents=True)
        self._log(f"[stage] {name}-{key}: running")
        start = time.time()
        try:
            summary = fn(tmp) or {}
            atomic_write_json(tmp / MARKER, {
                "stage": name, "key": key, "inputs": input_keys, "config": _plain(config),
                "seconds": round(time.time() - start, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "summary": summary,
            })
            if final.exists():  # an incomplete folder left by something else: never trusted
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._upload(final)
        self._log(f"[stage] {name}-{key}: done in {time.time() - start:.1f}s")
        out = StageOutput(name, key, final, skipped=False)
        self.history.append(out)
        return out

    def _clean_stale(self, name: str, key: str) -> None:
        """Remove temp folders that a killed run left for this stage."""
        for stale in self.stages.glob(f".{name}-{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def summary(self) -> list[Dict[str, Any]]:
        return [{"stage": s.name, "key": s.key, "skipped": s.skipped, "path": str(s.path)}
                for s in self.history]
