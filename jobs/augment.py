#!/usr/bin/env python
"""Augment only, as a Ray job: the pipeline's stages up to generation on a user's file.

    python jobs/augment.py --input my.csv --text-column text --label-column label \\
        --output augmented.parquet [--overwrite] [key=value ...]
    ray job submit --working-dir . -- python jobs/augment.py --input /mnt/data/my.csv ... \\
        --output /mnt/shared/my_augmented.parquet ray=cluster storage_path=/mnt/shared/runs

Same arguments, checks and output as ``dcls augment`` (which runs in one process without Ray):
the output may not be the input nor, without ``--overwrite``, an existing file; ``dataset.*``
overrides apply; pseudo rows of an earlier output are kept, not augmented again. Here the proxy,
importance scoring, generator training and generation are cached Ray stages in ``output_dir``
(default ``<storage_path>/augment-<file stem>``), so a killed job resumes; Ray Data's progress
bars show the scoring and generation stages.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EXIT_BAD_INPUT = 2


def main(argv=None) -> int:
    from dcls_core import diffusion_augmenter as da
    from dcls_core.artifacts import atomic_write_parquet
    from dcls_core.cli import _add_augment_arguments, augment_inputs, augmented_output, is_bad_input, parse_args
    from dcls_core.config import ConfigError
    from jobs.pipeline import LOG_FORMAT, run_pipeline
    from jobs.ray_runtime import check_local_resources

    parser = argparse.ArgumentParser(prog="jobs/augment.py", description=__doc__.split("\n")[0])
    _add_augment_arguments(parser)
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        cfg, bundle, originals = augment_inputs(args)
        from dcls_core.augment import available_augmenters
        from dcls_core.baselines import ensure_available

        if cfg.augment.method not in available_augmenters():
            raise ConfigError(f"augment.method={cfg.augment.method!r} is not a registered augmenter: use one of "
                              f"{available_augmenters()}")
        ensure_available(cfg.augment)
        if cfg.augment.mode != "static":
            raise ConfigError("augment.mode=reflective needs the classifier loop: use jobs/pipeline.py")
        check_local_resources(cfg.ray)
        if not cfg.output_dir:
            cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.storage_path) / f"augment-{Path(args.input).stem}"))
        # every row of the file is an original: the proxy still selects on the dev share
        bundle.frames["train"] = originals.reset_index(drop=True)
        result = run_pipeline(cfg, bundle, stop_after="generation", data_variant="augment-all-rows")
    except Exception as exc:  # noqa: BLE001 - only bad input becomes a message (also Ray found short)
        if not is_bad_input(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    frame = augmented_output(result["train"], bundle.pseudo, result["pseudo"])
    if result["consistency_model"] is not None and result["pseudo"] is not None and len(result["pseudo"]):
        model, tok = da.load_classifier_checkpoint(result["consistency_model"])
        ours = ~frame["id"].isin(set(bundle.pseudo["id"])) if bundle.pseudo is not None else frame["id"].notna()
        frame.loc[ours, "consistency"] = da.label_consistency(model, tok, frame[ours], bundle.vocab.names,
                                                              cfg.data.max_length)
    out = Path(args.output).expanduser()
    atomic_write_parquet(out, frame)
    print(json.dumps({"output": str(out.resolve()), "originals": int((~frame["is_pseudo"]).sum()),
                      "pseudo": int(frame["is_pseudo"].sum()),
                      "earlier_pseudo": 0 if bundle.pseudo is None else int(len(bundle.pseudo)),
                      "run": result["run"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
