"""The data layer: every source becomes rows ``id, text, label, split`` (see :data:`SCHEMA`).

Public API::

    load_dataset(dataset_cfg, data_cfg) -> DatasetBundle   # protocol applied
    load_source(dataset_cfg, data_cfg) -> (frames, dropped) # the source's own splits
    LabelVocab, DatasetBundle, DataError, SCHEMA
    k_shot, fraction, carve_dev, stratified_split, apply_protocol

No Ray imports here: the Ray jobs call these functions.
"""
from .bundle import DatasetBundle
from .errors import DataError
from .loading import load_dataset, load_source, resolve_path
from .readers import FORMATS, infer_format, read_columns, read_file
from .sampling import apply_protocol, carve_dev, fraction, k_shot, stratified_split
from .schema import COLUMNS, SCHEMA, SPLITS, blank_text, empty_frame, to_arrow, validate_frame
from .vocab import VOCAB_FILE, LabelVocab

__all__ = [
    "COLUMNS", "DataError", "DatasetBundle", "FORMATS", "LabelVocab", "SCHEMA", "SPLITS",
    "VOCAB_FILE", "apply_protocol", "blank_text", "carve_dev", "empty_frame", "fraction", "infer_format",
    "k_shot", "load_dataset", "load_source", "read_columns", "read_file", "resolve_path", "stratified_split",
    "to_arrow", "validate_frame",
]
