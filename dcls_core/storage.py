"""Where runs are kept: a local, NFS or PVC folder, or a URI on a remote filesystem (Ray-free).

``storage_path`` and ``output_dir`` accept either

- a path (``runs``, ``/mnt/shared/runs``, ``file:///mnt/shared/runs``): the run folder is that
  folder, as it always was; on a multi-node Ray cluster it must be a path every node sees;
- a URI (``s3://bucket/runs``, ``gs://bucket/runs``, or any scheme fsspec knows, such as
  ``abfs://``): read and written through ``pyarrow.fs`` (S3 and GCS are built into pyarrow's
  wheels) or an fsspec package (``s3fs``, ``gcsfs``, ``adlfs``, ...).

A URI is never turned into a local folder (``Path("s3://b/r")`` would silently give ``s3:/b/r``),
and a URI whose filesystem package is missing fails before any compute with a message naming the
package (:func:`check_storage`). A path that looks like a mangled URI (``s3:/bucket``) is refused.

The stages of a run read each other's outputs through local paths (model loaders, Ray Data's
Parquet files), so a run on a URI works in a **working copy**: ``<cache_dir>/runs/<scheme>/<path>``
(:func:`working_copy`). :class:`dcls_core.artifacts.RunFolder` uploads each finished stage to the
URI (its ``_stage.json`` last, so a partial upload is never trusted) and downloads finished stages
from it when a run resumes elsewhere; :meth:`RunFolder.publish` uploads the run's top-level files
(metrics, report, plots). On a multi-node cluster the working copy must be on a path every node
sees (``cache_dir=/mnt/shared/cache``); :func:`check_working_copy` refuses the default there.
Ray Train's ``RunConfig(storage_path=...)`` takes the URI itself (``jobs/ray_train.py``).
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

from dcls_core.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow.fs

    from dcls_core.config import Config

log = logging.getLogger(__name__)

# Schemes pyarrow.fs serves itself when its build has them; each with the fsspec package that can
# stand in for it.
PYARROW_NATIVE = {"s3": ("S3FileSystem", "s3fs"), "gs": ("GcsFileSystem", "gcsfs"), "gcs": ("GcsFileSystem", "gcsfs")}
LOCAL_SCHEMES = ("file", "local")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/?(?!/)")  # s3:/bucket, s3:bucket (not C:\ or C:/)


@dataclass(frozen=True)
class Location:
    """A folder: ``scheme`` is ``""`` for a local path; ``path`` is the absolute local path, or
    the part of the URI after ``scheme://`` (``bucket/runs``) for a remote one."""

    scheme: str
    path: str

    @property
    def is_remote(self) -> bool:
        return bool(self.scheme)

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.path}" if self.is_remote else self.path

    def __str__(self) -> str:
        return self.uri

    def local_path(self) -> Path:
        if self.is_remote:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.path)

    def join(self, *parts: str) -> "Location":
        if not self.is_remote:
            return Location("", str(Path(self.path).joinpath(*parts)))
        return Location(self.scheme, posixpath.join(self.path.rstrip("/"), *parts))

    def filesystem(self) -> Tuple["pyarrow.fs.FileSystem", str]:
        """(a ``pyarrow.fs`` filesystem, this folder's path inside it); connects lazily."""
        import pyarrow.fs as pafs

        if not self.is_remote:
            return pafs.LocalFileSystem(), self.path
        native = PYARROW_NATIVE.get(self.scheme)
        if native and _pyarrow_has(native[0]):
            return pafs.FileSystem.from_uri(self.uri)
        import fsspec

        fs = fsspec.filesystem(self.scheme)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), fs._strip_protocol(self.uri)


def _pyarrow_has(name: str) -> bool:
    import pyarrow.fs as pafs

    try:  # a pyarrow built without S3/GCS raises ImportError for the missing class
        return getattr(pafs, name, None) is not None
    except ImportError:
        return False


def parse_location(value: str, key: str = "storage_path") -> Location:
    """A setting's value as a :class:`Location` (``key`` names the setting in errors). No I/O."""
    text = str(value).strip()
    if not text:
        raise ConfigError(f"{key} is empty: give a folder (/mnt/shared/runs) or a URI (s3://bucket/runs)")
    match = _URI.match(text)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme in LOCAL_SCHEMES:
            return Location("", str(Path(rest or "/").expanduser().absolute()))
        if not rest.strip("/") or rest.startswith("/"):
            raise ConfigError(f"{key}={text!r} names no bucket or host right after {scheme}:// "
                              f"(write {scheme}://bucket/folder)")
        return Location(scheme, rest.rstrip("/"))
    mangled = _MANGLED.match(text)
    if mangled and _is_remote_scheme(mangled.group(1).lower()):
        scheme = mangled.group(1).lower()
        raise ConfigError(f"{key}={text!r} is a {scheme}:// URI missing its '//' (a shell or a path join may "
                          f"have eaten a slash): write {scheme}://{text[len(scheme) + 1:].lstrip('/')}, or "
                          f"./{text} for a local folder of that name")
    return Location("", str(Path(text).expanduser().absolute()))


def _is_remote_scheme(scheme: str) -> bool:
    if scheme in PYARROW_NATIVE:
        return True
    from fsspec.registry import known_implementations, registry

    return scheme not in LOCAL_SCHEMES and (scheme in known_implementations or scheme in registry)


def require_filesystem(location: Location, key: str = "storage_path") -> None:
    """Raise ``ConfigError`` naming the package to install when nothing here can open ``location``."""
    if not location.is_remote:
        return
    scheme = location.scheme
    native = PYARROW_NATIVE.get(scheme)
    if native and _pyarrow_has(native[0]):
        return
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        package = native[1] if native else _package_in(str(exc))
        built = f"this pyarrow is built without {native[0]} and " if native else ""
        raise ConfigError(f"{key}={location.uri}: {built}the filesystem package for {scheme}:// is not installed "
                          f"({exc}); pip install {package}") from None
    except ValueError:
        raise ConfigError(f"{key}={location.uri}: unknown filesystem scheme {scheme!r}: use a path, or a URI that "
                          f"pyarrow or fsspec can open (s3://, gs://, abfs://, ...)") from None


def _package_in(message: str) -> str:
    """The package an fsspec error message asks for ("Install adlfs to access ...")."""
    found = re.search(r"[Ii]nstall (?:the )?([A-Za-z0-9_.\-\[\]]+)", message)
    return found.group(1) if found else "the fsspec implementation for this scheme"


# --------------------------------------------------------------------------- files
def exists(location: Location) -> bool:
    import pyarrow.fs as pafs

    fs, path = location.filesystem()
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def upload(local_dir: Path, location: Location, last: Optional[str] = None, skip: Sequence[str] = ()) -> int:
    """Copy the files under ``local_dir`` to ``location`` (which keeps the tree); ``last`` (a
    file name at the top) is written after every other file, so that its presence means the
    upload is complete. Top-level entries named in ``skip`` and hidden (temporary) files are left
    out. Returns the number of files copied."""
    import pyarrow.fs as pafs

    fs, root = location.filesystem()
    local = pafs.LocalFileSystem()
    local_dir = Path(local_dir)

    def wanted(path: Path) -> bool:
        parts = path.relative_to(local_dir).parts
        return path.is_file() and parts[0] not in skip and not any(part.startswith(".") for part in parts)

    files = sorted(p for p in local_dir.rglob("*") if wanted(p))
    files.sort(key=lambda p: p.relative_to(local_dir).as_posix() == last)  # stable: ``last`` moves to the end
    for file in files:
        dest = posixpath.join(root, file.relative_to(local_dir).as_posix())
        fs.create_dir(posixpath.dirname(dest), recursive=True)
        pafs.copy_files(str(file), dest, source_filesystem=local, destination_filesystem=fs)
    return len(files)


def download(location: Location, local_dir: Path) -> Path:
    """Copy the folder ``location`` into ``local_dir`` through a temporary sibling renamed into
    place at the end (a killed download leaves no folder that looks complete)."""
    import shutil

    import pyarrow.fs as pafs

    fs, root = location.filesystem()
    local_dir = Path(local_dir)
    tmp = local_dir.with_name(f".{local_dir.name}.download-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        tmp.mkdir(parents=True)
        pafs.copy_files(root, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        if local_dir.exists():
            shutil.rmtree(local_dir)
        os.rename(tmp, local_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local_dir


# --------------------------------------------------------------------------- the run's settings
def run_location(cfg: "Config") -> Location:
    """The run folder: ``output_dir``, or ``<storage_path>/<experiment>``."""
    if cfg.output_dir:
        return parse_location(cfg.output_dir, "output_dir")
    return parse_location(cfg.storage_path, "storage_path").join(cfg.experiment)


def cache_dir(cfg: "Config") -> Path:
    """The cross-run cache (generator warm-up) and the working copies of runs kept on a URI:
    ``cache_dir``, else ``<storage_path>/cache`` for a local storage path, else ``~/.cache/dcls``
    (``$XDG_CACHE_HOME/dcls``) on this node."""
    if cfg.cache_dir:
        location = parse_location(cfg.cache_dir, "cache_dir")
        if location.is_remote:
            raise ConfigError(f"cache_dir={cfg.cache_dir!r} must be a local or shared folder, not a URI: model "
                              f"loaders read the cache from disk (storage_path may be a URI)")
        return location.local_path()
    storage = parse_location(cfg.storage_path, "storage_path")
    if not storage.is_remote:
        return storage.local_path() / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "dcls"


def working_copy(cfg: "Config") -> Path:
    """Where the run's stages read and write: the run folder itself when it is a path, else its
    working copy ``<cache_dir>/runs/<scheme>/<path>``."""
    location = run_location(cfg)
    if not location.is_remote:
        return location.local_path()
    return cache_dir(cfg) / "runs" / location.scheme / PurePosixPath(location.path.lstrip("/"))


def remote_run(cfg: "Config") -> Optional[Location]:
    """The run folder's URI when it is kept on a remote filesystem, else None."""
    location = run_location(cfg)
    return location if location.is_remote else None


def check_storage(cfg: "Config", probe: bool = True) -> None:
    """Before any compute: every storage setting parses, its filesystem package is installed and
    (``probe``) the remote run folder can be reached with the credentials at hand."""
    for key in ("storage_path", "output_dir", "cache_dir"):
        if getattr(cfg, key):
            require_filesystem(parse_location(getattr(cfg, key), key), key)
    cache_dir(cfg)  # refuses a URI cache_dir
    remote = remote_run(cfg)
    if remote is not None and probe:
        try:
            exists(remote)
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is the user's to fix
            raise ConfigError(f"cannot reach the run folder {remote.uri}: {type(exc).__name__}: {exc}") from None


def check_working_copy(cfg: "Config", nodes: int) -> None:
    """A run kept on a URI works in a working copy that every node's actors and Train workers read:
    on a Ray with more than one node, ``cache_dir`` must be given (a path they all see)."""
    if remote_run(cfg) is not None and not cfg.cache_dir and nodes > 1:
        raise ConfigError(f"the run folder {run_location(cfg)} is a URI and this Ray has {nodes} nodes: the stages exchange "
                          f"files through the run's working copy, by default under {cache_dir(cfg)} on one node; "
                          f"set cache_dir to a folder every node sees (e.g. cache_dir=/mnt/shared/cache)")
