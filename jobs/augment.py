#!/usr/bin/env python
"""Augment only, as a Ray job: the pipeline's stages up to generation on a user's file.

    python jobs/augment.py --input my.csv --text-column text --label-column label \\
        --output augmented.parquet [key=value ...]
    ray job submit --working-dir . -- python jobs/augment.py --input /mnt/data/my.csv ... \\
        --output /mnt/shared/my_augmented.parquet ray=cluster storage_path=/mnt/shared/runs

Same arguments and output as ``dcls augment`` (which runs in one process without Ray); here the
proxy, importance scoring, generator training and generation are cached Ray stages in
``output_dir`` (default ``<storage_path>/augment-<file stem>``), so a killed job resumes.
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


def main(argv=None) -> int:
    from dcls_core import diffusion_augmenter as da
    from dcls_core.artifacts import atomic_write_parquet
    from dcls_core.cli import _add_augment_arguments, augment_inputs
    from dcls_core.config import ConfigError
    from dcls_core.data import DataError
    from dcls_core.models import ModelResolutionError
    from jobs.pipeline import run_pipeline

    parser = argparse.ArgumentParser(prog="jobs/augment.py", description=__doc__.split("\n")[0])
    _add_augment_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg, bundle, originals = augment_inputs(args)
        if cfg.augment.method != "diffusion":
            raise ConfigError(f"augment.method={cfg.augment.method!r}: augment-only runs the diffusion augmenter")
        if cfg.augment.mode != "static":
            raise ConfigError("augment.mode=reflective needs the classifier loop: use jobs/pipeline.py")
        from dcls_core.models import load_tokenizer

        load_tokenizer(cfg.model)
    except (ConfigError, DataError, ModelResolutionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not cfg.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.storage_path) / f"augment-{Path(args.input).stem}"))
    # every row of the file is an original: the proxy still selects on the dev share
    bundle.frames["train"] = originals.reset_index(drop=True)
    result = run_pipeline(cfg, bundle, stop_after="generation", data_variant="augment-all-rows")
    frame = da.augmented_frame(result["train"], result["pseudo"])
    if result["consistency_model"] is not None and result["pseudo"] is not None and len(result["pseudo"]):
        model, tok = da.load_classifier_checkpoint(result["consistency_model"])
        frame["consistency"] = da.label_consistency(model, tok, frame, bundle.vocab.names, cfg.data.max_length)
    out = Path(args.output).expanduser()
    atomic_write_parquet(out, frame)
    print(json.dumps({"output": str(out.resolve()), "originals": int((~frame["is_pseudo"]).sum()),
                      "pseudo": int(frame["is_pseudo"].sum()), "run": result["run"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
