"""The ``dcls`` console script (also ``python -m dcls_core.cli``).

Subcommands are argparse subparsers, each bound to a handler ``_<name>(args) -> int`` with
``set_defaults(func=...)``; :func:`main` turns :class:`DataError`/:class:`ConfigError` into
a one-line message on stderr and exit status 2. Output meant for programs goes to stdout,
logs go to stderr.

    dcls data describe <preset or path> [key=value ...]
    dcls augment --input FILE --text-column C --label-column C --output OUT.parquet [key=value ...]
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
# ---------------------------------------------------------------------------------------
def augment_inputs(args: argparse.Namespace):
    """(Config, DatasetBundle, originals) for ``dcls augment`` / ``jobs/augment.py``.

    The input file becomes a custom dataset whose rows are all augmented: the loader carves
    stratified dev and test shares (``data.dev_size``, ``dataset.test_size``, default 0.1) that
    the proxy classifier uses for model selection; every row is an original of the output
    (``split`` says which share it was in).
    """
    import pandas as pd

    from dcls_core.config import DatasetConfig
    from dcls_core.data import infer_format, load_dataset

    path = Path(args.input).expanduser()
    if not path.exists():
        raise DataError(f"input file not found: {path.resolve()}")
    overrides = list(args.overrides)
    if getattr(args, "method", None):  # --method NAME is augment.method=NAME
        if "augment.method" in _override_keys(overrides):
            raise ConfigError("--method and augment.method= both given; give the method once")
        overrides.append(f"augment.method={args.method}")
    cfg = compose(overrides)
    fmt = infer_format(path)
    cfg.dataset = DatasetConfig(name=path.stem, format=fmt, files={"train": str(path.resolve())},
                                text_column=args.text_column, label_column=args.label_column,
                                id_column=args.id_column, language=cfg.dataset.language,
                                test_size=cfg.dataset.test_size or 0.1)
    cfg.data = dataclasses.replace(cfg.data, protocol="full")
    bundle = load_dataset(cfg.dataset, cfg.data)
    if len(bundle.train) < 2:
        raise DataError(f"{path}: {len(bundle.train)} usable rows; at least 2 are needed")
    originals = bundle.to_frame()
    return cfg, bundle, originals


def _augment(args: argparse.Namespace) -> int:
    from dcls_core import diffusion_augmenter as da
    from dcls_core.artifacts import atomic_write_parquet
    from dcls_core.augment import augmenter_from_config, available_augmenters
    from dcls_core.baselines import ensure_available

    cfg, bundle, originals = augment_inputs(args)
    if cfg.augment.method not in available_augmenters():
        raise ConfigError(f"augment.method={cfg.augment.method!r} is not a registered augmenter: use one of "
                          f"{available_augmenters()}")
    ensure_available(cfg.augment)  # e.g. EDA without WordNet: the message names the package
    out = Path(args.output).expanduser()
    if out.suffix != ".parquet":
        raise ConfigError(f"--output {out}: must end in .parquet")
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path(cfg.storage_path).expanduser() / "cache"
    augmenter = augmenter_from_config(cfg, cache_dir=cache, dev_df=bundle.dev)
    names = bundle.vocab.names
    pseudo = augmenter.augment(originals, names, cfg.seed)
    frame = da.augmented_frame(originals, pseudo)
    atomic_write_parquet(out, frame)
    summary = {"output": str(out.resolve()), "originals": int((~frame["is_pseudo"]).sum()),
               "pseudo": int(frame["is_pseudo"].sum()), "labels": names}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a labelled data file (.csv .tsv .json .jsonl .parquet)")
    parser.add_argument("--text-column", default="text", help="column holding the text (default text)")
    parser.add_argument("--label-column", default="label", help="column holding the label (default label)")
    parser.add_argument("--id-column", default=None, help="optional column of row ids")
    parser.add_argument("--output", required=True, help="where to write augmented.parquet")
    parser.add_argument("--method", default=None,
                        help="the augmenter: diffusion (default), eda, aeda, mlm, resample, backtranslation, none "
                             "(the same as augment.method=NAME)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="Hydra overrides, e.g. model=tiny augment.n=2 generator.warmup.max_seconds=300")


def _add_augment_parser(commands: argparse._SubParsersAction) -> None:
    augment = commands.add_parser(
        "augment", help="write originals + DiffusionCLS pseudo samples of a labelled file to Parquet",
        description="Train the proxy classifier and the label-aware diffusion generator on a labelled "
                    "file and write its rows plus pseudo samples (columns id, text, label, split, "
                    "is_pseudo, source_id, step, mask_ratio, changed_ratio, consistency) to Parquet, in "
                    "one process. On a Ray cluster: `ray job submit --working-dir . -- python "
                    "jobs/augment.py` with the same arguments.")
    _add_augment_arguments(augment)
    augment.set_defaults(func=_augment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcls", description="DiffusionCLS data augmentation tools.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level for messages on stderr (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_parser(commands)
    _add_augment_parser(commands)
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
