"""Shared fixtures. Tests use the tiny random model and read real data from ../shared/data."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("DCLS_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (root / "README.md").exists():
        pytest.fail(f"shared data not found at {root}; set DCLS_DATA_DIR")
    return root


@pytest.fixture(scope="session")
def tiny_model_cfg():
    from dcls_core.config import ModelConfig

    return ModelConfig(name="tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny_model_cfg):
    from dcls_core.models import load_tokenizer

    return load_tokenizer(tiny_model_cfg)
