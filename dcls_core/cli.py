"""The ``dcls`` console script (also ``python -m dcls_core.cli``).

Subcommands are argparse subparsers, each bound to a handler ``_<name>(args) -> int`` with
``set_defaults(func=...)``; :func:`main` turns :class:`DataError`/:class:`ConfigError` (and a
model that cannot be found) into a one-line message on stderr and exit status 2, as argparse
does for a bad command line. Output meant for programs goes to stdout, logs go to stderr.

    dcls data describe <preset or path> [key=value ...]
    dcls augment --input FILE [--text-column C --label-column C] --output OUT.parquet [--overwrite] [key=value ...]
    dcls pipeline [key=value ...]          (jobs/pipeline.py: the whole pipeline on Ray)
    dcls tune tune=<preset> [key=value ...] (jobs/tune.py: a Ray Tune study)

Every command reads its settings through :func:`dcls_core.config.load_config` (the pipeline too,
through :func:`run_config`), so an override means the same thing everywhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

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
    """``load_config(overrides)``; every Hydra/OmegaConf error arrives as :class:`ConfigError`."""
    return load_config(list(overrides))


def _override_keys(overrides: Sequence[str]) -> List[str]:
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def _given(overrides: Sequence[str], key: str) -> bool:
    """True when an override sets ``key`` or something inside it."""
    return any(k == key or k.startswith(f"{key}.") for k in _override_keys(overrides))


def config_for_dataset(target: str, overrides: Sequence[str], test_size: float = 0.2) -> Config:
    """The composed config for a dataset preset name or a path to a data file.

    A path (a file, or a ``save_to_disk`` folder for Hugging Face datasets) becomes a custom
    dataset: ``dataset.format`` from the suffix, ``dataset.files={all: <path>}``, a stratified
    ``dataset.test_size`` (``test_size``) and ``dataset.name`` = the file's stem; any of these can be
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

    def given(name: str) -> bool:
        return _given(overrides, f"dataset.{name}")

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
        changes["test_size"] = test_size
    # replace() re-runs DatasetConfig's validation
    cfg.dataset = dataclasses.replace(cfg.dataset, **changes)
    return cfg


def run_config(overrides: Sequence[str]) -> Config:
    """The pipeline's config (``jobs/pipeline.py``): the overrides as every command reads them,
    where ``dataset=<path to a data file>`` works as in ``dcls data describe``."""
    overrides = list(overrides)
    for i, override in enumerate(overrides):
        key, sep, value = override.partition("=")
        if key == "dataset" and sep and value not in dataset_presets():
            return config_for_dataset(value, overrides[:i] + overrides[i + 1:])
    return compose(overrides)


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
        "describe", help="rows per split and label, dropped rows and warnings, as one JSON object",
        description="Load a dataset with its protocol and print one JSON object: "
                    '{"dataset", "splits": {split: {"rows", "labels"}}, "dropped", "warnings"}. '
                    "Logs go to stderr.")
    describe.add_argument("dataset", help="a preset name in configs/dataset (e.g. sst2, india_covid_x) "
                                          "or a path to a data file (.csv .tsv .json .jsonl .parquet)")
    describe.add_argument("overrides", nargs="*", metavar="key=value",
                          help="Hydra overrides, e.g. data.protocol=k_shot data.k=10 dataset.text_column=body")
    describe.set_defaults(func=_data_describe)


# ---------------------------------------------------------------------------------------
# dcls augment ...
# ---------------------------------------------------------------------------------------
def check_output(input_path: Path, output: Path, overwrite: bool) -> Path:
    """Refuse an output that would destroy data: the input itself, or an existing file without
    ``--overwrite`` (checked before any compute)."""
    if output.suffix != ".parquet":
        raise ConfigError(f"--output {output}: must end in .parquet")
    if output.resolve() == input_path.resolve():
        raise ConfigError(f"--output {output} is the input file: writing there would replace your data; "
                          f"choose another file")
    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder; give a file name ending in .parquet")
    if output.exists() and not overwrite:
        raise ConfigError(f"--output {output} exists; pass --overwrite to replace it, or choose another file")
    return output


def augment_inputs(args: argparse.Namespace):
    """(Config, DatasetBundle, originals) for ``dcls augment`` / ``jobs/augment.py``.

    The input file becomes a custom dataset as in ``dcls data describe <file>`` (every
    ``dataset.*`` override applies; ``--text-column`` etc. set the same settings) whose rows are
    all augmented: the loader carves stratified dev and test shares (``data.dev_size``,
    ``dataset.test_size``, default 0.1) that the proxy classifier uses for model selection; every
    row is an original of the output (``split`` says which share it was in). A column ``id`` is
    kept as the rows' ids; pseudo rows of an earlier run (``is_pseudo``) are set aside in
    ``bundle.pseudo``, not augmented again.
    """
    from dcls_core.data import load_dataset, read_columns
    from dcls_core.models import check_max_lengths

    path = Path(args.input).expanduser()
    if not path.is_file():
        raise DataError(f"input file not found: {path.resolve()}")
    check_output(path, Path(args.output).expanduser(), bool(getattr(args, "overwrite", False)))
    overrides = list(args.overrides)
    if getattr(args, "method", None):  # --method NAME is augment.method=NAME
        if "augment.method" in _override_keys(overrides):
            raise ConfigError("--method and augment.method= both given; give the method once")
        overrides.append(f"augment.method={args.method}")
    cfg = config_for_dataset(str(path), overrides, test_size=0.1)
    changes = {}
    for field in ("text_column", "label_column", "id_column"):
        value = getattr(args, field)
        if value is None:
            continue
        value = value or None  # --id-column "": number the rows
        if _given(overrides, f"dataset.{field}") and getattr(cfg.dataset, field) != value:
            raise ConfigError(f"--{field.replace('_', '-')} {value!r} and dataset.{field}="
                              f"{getattr(cfg.dataset, field)!r} disagree; give the column once")
        changes[field] = value
    if ("id_column" not in changes and not _given(overrides, "dataset.id_column")
            and "id" in read_columns(path, cfg.dataset.format, cfg.dataset.encoding)):
        changes["id_column"] = "id"  # keep the user's ids (--id-column "" numbers the rows instead)
    cfg.dataset = dataclasses.replace(cfg.dataset, **changes)
    if cfg.data.protocol != "full":
        raise ConfigError(f"data.protocol={cfg.data.protocol}: dcls augment augments every row of the file "
                          f"(data.protocol=full); sample the file first, or run jobs/pipeline.py dataset={path}")
    if cfg.augment.policy == "per_sample" and cfg.augment.n == 0:
        raise ConfigError("augment.n=0 with augment.policy=per_sample makes no pseudo samples; use augment.n >= 1")
    bundle = load_dataset(cfg.dataset, cfg.data)
    if len(bundle.train) < 2:
        raise DataError(f"{path}: {len(bundle.train)} usable rows; at least 2 are needed")
    check_max_lengths(cfg)  # loads the tokenizer: a model that cannot be found fails here too
    originals = bundle.to_frame()
    return cfg, bundle, originals


def augmented_output(originals, earlier, new):
    """The output of an augment run: originals, the pseudo rows the input already held (as they
    were) and the new ones; a new id that an earlier row holds is numbered on after that source's
    earlier samples (``<source>~p<k>``)."""
    import pandas as pd

    from dcls_core import diffusion_augmenter as da

    if earlier is not None and len(earlier) and new is not None and len(new):
        offset = {}
        for pid in earlier["id"].astype(str):
            source, sep, k = pid.rpartition("~p")
            if sep and k.isdigit():
                offset[source] = max(offset.get(source, 0), int(k) + 1)

        def renumber(pid: str) -> str:
            source, sep, k = pid.rpartition("~p")
            return f"{source}~p{int(k) + offset[source]}" if sep and k.isdigit() and source in offset else pid

        new = new.assign(id=[renumber(str(i)) for i in new["id"]])
    parts = [p for p in (earlier, new) if p is not None and len(p)]
    frame = da.augmented_frame(originals, pd.concat(parts, ignore_index=True, sort=False) if parts else None)
    repeated = frame["id"][frame["id"].duplicated()].unique().tolist()
    if repeated:
        raise DataError(f"ids {repeated[:5]} occur twice in the output (an original and an earlier pseudo row "
                        f"share an id?); pass --id-column with a column of unique ids")
    return frame


def _augment(args: argparse.Namespace) -> int:
    from dcls_core.artifacts import atomic_write_parquet
    from dcls_core.augment import augmenter_from_config, available_augmenters
    from dcls_core.baselines import ensure_available
    from dcls_core.diffusion_augmenter import drop_empty_pseudo

    cfg, bundle, originals = augment_inputs(args)
    if cfg.augment.method not in available_augmenters():
        raise ConfigError(f"augment.method={cfg.augment.method!r} is not a registered augmenter: use one of "
                          f"{available_augmenters()}")
    ensure_available(cfg.augment)  # e.g. EDA without WordNet: the message names the package
    out = Path(args.output).expanduser()
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path(cfg.storage_path).expanduser() / "cache"
    augmenter = augmenter_from_config(cfg, cache_dir=cache, dev_df=bundle.dev, progress=args.progress)
    names = bundle.vocab.names
    pseudo = augmenter.augment(originals, names, cfg.seed)
    pseudo, empty = drop_empty_pseudo(pseudo)  # any augmenter's; the diffusion one counts its own
    empty += int(getattr(augmenter, "stats", {}).get("empty_dropped", 0))
    frame = augmented_output(originals, bundle.pseudo, pseudo)
    atomic_write_parquet(out, frame)
    summary = {"output": str(out.resolve()), "originals": int((~frame["is_pseudo"]).sum()),
               "pseudo": int(frame["is_pseudo"].sum()), "new_pseudo": int(len(pseudo)),
               "earlier_pseudo": 0 if bundle.pseudo is None else int(len(bundle.pseudo)),
               "empty_pseudo_dropped": empty, "labels": names}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a labelled data file (.csv .tsv .json .jsonl .parquet)")
    parser.add_argument("--text-column", default=None,
                        help="column holding the text (default: dataset.text_column, i.e. text)")
    parser.add_argument("--label-column", default=None,
                        help="column holding the label (default: dataset.label_column, i.e. label)")
    parser.add_argument("--id-column", default=None,
                        help="column of unique row ids (default: the column 'id' if the file has one; "
                             "'' numbers the rows)")
    parser.add_argument("--output", required=True, help="where to write augmented.parquet (not the input)")
    parser.add_argument("--method", default=None,
                        help="the augmenter: diffusion (default), eda, aeda, mlm, resample, backtranslation, none "
                             "(the same as augment.method=NAME)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars with rows and time left (default: only on a terminal)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="Hydra overrides, e.g. model=tiny augment.n=2 dataset.encoding=latin-1 "
                             "dataset.label_names={0:negative,1:positive}")


def _add_augment_parser(commands: argparse._SubParsersAction) -> None:
    augment = commands.add_parser(
        "augment", help="write originals + DiffusionCLS pseudo samples of a labelled file to Parquet",
        description="Train the proxy classifier and the label-aware diffusion generator on a labelled "
                    "file and write its rows plus pseudo samples (columns id, text, label, split, "
                    "is_pseudo, source_id, step, mask_ratio, changed_ratio, consistency) to Parquet, in "
                    "one process. Rows the input marks is_pseudo (an earlier output) are kept as they "
                    "are, not augmented again (dataset.pseudo_column=null makes them originals). On a "
                    "Ray cluster: `ray job submit --working-dir . -- python jobs/augment.py` with the "
                    "same arguments.")
    _add_augment_arguments(augment)
    augment.set_defaults(func=_augment)


# ---------------------------------------------------------------------------------------
# dcls pipeline ... / dcls tune ...
# ---------------------------------------------------------------------------------------
# The Ray jobs themselves (jobs/pipeline.py, jobs/tune.py, shipped in the wheel): the console
# script makes them runnable from an installed package, e.g. as a RayJob's entrypoint.
JOBS = {
    "pipeline": ("jobs.pipeline", "run the whole pipeline on Ray (the same job as python jobs/pipeline.py)",
                 "Data -> proxy -> importance -> generator -> generation -> classifier arms -> evaluation -> "
                 "report, on a local Ray or the cluster in RAY_ADDRESS (`ray job submit ... -- dcls pipeline "
                 "key=value ...`). The same job and overrides as `python jobs/pipeline.py`; finished stages "
                 "are skipped when it runs again.",
                 "experiment=demo storage_path=/mnt/shared/runs ray=cluster"),
    "tune": ("jobs.tune", "run a hyper-parameter study on Ray Tune (the same job as python jobs/tune.py)",
             "Trials over tune.space, scored by dev macro-F1 on tune.datasets x tune.seeds, sharing proxy, "
             "importance, generator and pseudo samples; a stopped study resumes. The same job and overrides "
             "as `python jobs/tune.py` (presets: configs/tune).",
             "tune=english tune.search=optuna storage_path=/mnt/shared/runs"),
}


def _job(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(JOBS[args.command][0]).main(list(args.overrides))


def _add_job_parsers(commands: argparse._SubParsersAction) -> None:
    for name, (_module, help_text, description, example) in JOBS.items():
        job = commands.add_parser(name, help=help_text, description=description)
        job.add_argument("overrides", nargs="*", metavar="key=value", help=f"Hydra overrides, e.g. {example}")
        job.set_defaults(func=_job)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcls", description="DiffusionCLS data augmentation tools.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level for messages on stderr (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_parser(commands)
    _add_augment_parser(commands)
    _add_job_parsers(commands)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args``, where ``key=value`` overrides may also follow options
    (``--input a.csv model=tiny --output b.parquet augment.n=2``), which argparse alone refuses."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or not ("=" in a or a.startswith("~"))]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def is_bad_input(exc: BaseException) -> bool:
    """True for the errors that mean "fix your input" (exit 2): config, data, a model not found."""
    if isinstance(exc, (DataError, ConfigError)):
        return True
    models = sys.modules.get("dcls_core.models")  # raised only once it is imported; importing it costs torch
    return models is not None and isinstance(exc, models.ModelResolutionError)


def job_main(argv: Optional[Sequence[str]], prog: str, description: str, example: str,
             run: "Callable[[Config, List[str]], int]", log_format: str) -> int:
    """The command line of a Ray job (``jobs/pipeline.py``, ``jobs/tune.py``): ``key=value``
    overrides read by :func:`run_config`, then ``run(cfg, overrides)``; bad input, found before
    or during the run, is one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"config overrides, e.g. {example}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=log_format, stream=sys.stderr)
    try:
        return run(run_config(args.overrides), list(args.overrides))
    except Exception as exc:  # noqa: BLE001 - only bad input becomes a message
        if not is_bad_input(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(build_parser(), argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - only bad input becomes a message; the rest re-raises
        if not is_bad_input(exc):
            raise
        print(f"dcls: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
