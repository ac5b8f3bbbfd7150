"""The ``dcls`` console script (also ``python -m dcls_core.cli``).

Subcommands are argparse subparsers, each bound to a handler ``_<name>(args) -> int`` with
``set_defaults(func=...)``; :func:`main` turns :class:`DataError`/:class:`ConfigError` into
a one-line message on stderr and exit status 2. Output meant for programs goes to stdout,
logs go to stderr.

    dcls data describe <preset or path> [key=value ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from dcls_core.config import Config, ConfigError, configs_dir, load_config
from dcls_core.data.errors import DataError

EXIT_ERROR = 2

log = logging.getLogger("dcls_core.cli")


# ---------------------------------------------------------------------------------------
# configuration helpers shared by subcommands
# ---------------------------------------------------------------------------------------
def dataset_presets() -> List[str]:
    """Names of the YAML files in ``configs/dataset``."""
    return sorted(p.stem for p in (configs_dir() / "dataset").glob("*.yaml"))


def compose(overrides: Sequence[str]) -> Config:
    """``load_config(overrides)`` with Hydra/OmegaConf errors turned into :class:`ConfigError`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return load_config(list(overrides))
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException) as exc:
        messages = [str(exc).strip()]
        cause = exc.__cause__ or exc.__context__
        while cause is not None:
            text = str(cause).strip()
            if text and text not in messages and "$VALUE" not in text:
                messages.append(text)
            cause = cause.__cause__ or cause.__context__
        raise ConfigError("; ".join(" ".join(m.split()) for m in messages)) from None


def _override_keys(overrides: Sequence[str]) -> List[str]:
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def config_for_dataset(target: str, overrides: Sequence[str]) -> Config:
    """The composed config for a dataset preset name or a path to a data file.

    A path (a file, or a ``save_to_disk`` folder for Hugging Face datasets) becomes a custom
    dataset: ``dataset.format`` from the suffix, ``dataset.files={all: <path>}``, a stratified
    ``dataset.test_size=0.2`` and ``dataset.name`` = the file's stem; any of these can be
    overridden (``dataset.files={train: a.csv, test: b.csv}`` etc.).
    """
    overrides = list(overrides)
    presets = dataset_presets()
    if target in presets:
        return compose([f"dataset={target}", *overrides])
    path = Path(target).expanduser()
    if not path.exists():
        if path.suffix or "/" in target or "\\" in target:
            raise DataError(f"data file not found: {path.resolve()} (from the argument {target!r})")
        raise ConfigError(f"unknown dataset {target!r}: not a preset in {configs_dir() / 'dataset'} "
                          f"({', '.join(presets)}) and not a file")
    from dcls_core.data import infer_format

    path = path.resolve()
    cfg = compose(["~dataset", *overrides])
    keys = _override_keys(overrides)

    def given(name: str) -> bool:
        return any(k == f"dataset.{name}" or k.startswith(f"dataset.{name}.") for k in keys)

    fmt = cfg.dataset.format if given("format") else infer_format(path)
    changes = {"format": fmt}
    if not given("name"):
        changes["name"] = path.stem
    if fmt == "hf":
        if not given("hf_path"):
            changes["hf_path"] = str(path)
    elif not given("files"):
        changes["files"] = {"all": str(path)}
    if not given("test_size") and not (given("files") and "test" in cfg.dataset.files):
        changes["test_size"] = 0.2
    # replace() re-runs DatasetConfig's validation
    cfg.dataset = dataclasses.replace(cfg.dataset, **changes)
    return cfg


# ---------------------------------------------------------------------------------------
# dcls data ...
# ---------------------------------------------------------------------------------------
def _data_describe(args: argparse.Namespace) -> int:
    from dcls_core.data import load_dataset

    cfg = config_for_dataset(args.dataset, args.overrides)
    bundle = load_dataset(cfg.dataset, cfg.data)
    sys.stdout.write(json.dumps(bundle.describe(), indent=2, ensure_ascii=False) + "\n")
    return 0


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect datasets", description="Inspect datasets.")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    describe = actions.add_parser(
        "describe", help="rows per split and label, and dropped rows, as one JSON object",
        description="Load a dataset with its protocol and print one JSON object: "
                    '{"dataset", "splits": {split: {"rows", "labels"}}, "dropped"}. Logs go to stderr.')
    describe.add_argument("dataset", help="a preset name in configs/dataset (e.g. sst2, india_covid_x) "
                                          "or a path to a data file (.csv .tsv .json .jsonl .parquet)")
    describe.add_argument("overrides", nargs="*", metavar="key=value",
                          help="Hydra overrides, e.g. data.protocol=k_shot data.k=10 dataset.text_column=body")
    describe.set_defaults(func=_data_describe)


# ---------------------------------------------------------------------------------------
# dcls augment ...
# Add it here: write `_add_augment_parser(commands)` (a `commands.add_parser("augment", ...)`
# with its arguments and `set_defaults(func=_augment)`) and the handler `_augment(args) -> int`,
# then call `_add_augment_parser(commands)` in `build_parser`. Raise DataError/ConfigError for
# bad input: `main` reports them on stderr with exit status 2.
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcls", description="DiffusionCLS data augmentation tools.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level for messages on stderr (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_parser(commands)
    # _add_augment_parser(commands)  # see the "dcls augment" section above
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (DataError, ConfigError) as exc:
        print(f"dcls: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
