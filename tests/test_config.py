"""Config composition of every preset, and the validation messages of the typed configs."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import pytest

from dcls_core.config import Config, ConfigError, DataConfig, DatasetConfig, configs_dir, load_config


def config_presets() -> List[Tuple[str, str]]:
    """(group, name) for every ``configs/<group>/<name>.yaml``."""
    return sorted((p.parent.name, p.stem) for p in Path(configs_dir()).glob("*/*.yaml"))


PRESETS = config_presets()


def test_preset_listing_sees_every_group():
    groups = {group for group, _ in PRESETS}
    assert {"dataset", "model", "generator", "augment", "classifier", "ray"} <= groups
    datasets = {name for group, name in PRESETS if group == "dataset"}
    assert {"sst2", "india_covid_x", "smp2020_ewect", "senwave_en", "senwave_ar", "senwave_es",
            "senwave_fr"} <= datasets


@pytest.mark.parametrize("group,name", PRESETS, ids=[f"{g}={n}" for g, n in PRESETS])
def test_every_preset_composes(group, name):
    if group == "suite":  # a benchmark suite, not a pipeline group: every one of its runs composes
        from dcls_core.config import SuiteConfig
        from jobs.benchmark_suite import load_suite

        suite = load_suite(name)
        assert isinstance(suite, SuiteConfig) and suite.name == name and suite.settings and suite.methods
        return
    cfg = load_config([f"{group}={name}"])
    assert isinstance(cfg, Config)
    if group == "dataset":  # dataset presets name themselves after their file
        assert isinstance(cfg.dataset, DatasetConfig) and cfg.dataset.name == name
        assert cfg.dataset.files, "a dataset preset must say where its files are"


def test_defaults_and_overrides():
    cfg = load_config(["data.protocol=k_shot", "data.k=5", "dataset.text_column=body", "seed=7"])
    assert (cfg.data.protocol, cfg.data.k, cfg.dataset.text_column) == ("k_shot", 5, "body")
    assert cfg.data.seed == 7  # data.seed follows the root seed
    assert cfg.dataset.name == "sst2" and cfg.dataset.split_columns == {"test": {"text": "content"}}
    assert cfg.dataset.label_names == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("override,needle", [
    ("generator.lam=-1.5", "generator.lam=-1.5 is invalid: must be in [-1, 1]"),
    ("generator.importance_norm=softmax", "generator.importance_norm='softmax' is invalid"),
    ("classifier.head_init=zeros", "classifier.head_init='zeros' is invalid"),
    ("classifier.select_confidence=0.3", "classifier.select_confidence=0.3 is invalid: must be in [0.5, 1]"),
    ("model.pooling=max", "model.pooling='max' is invalid"),
    ("generator.T=0", "generator.T=0 is invalid: must be >= 1"),
    ("generator.group_index=0", "generator.group_index=0 is invalid: must be in 1..T/group_size = 1..8"),
    ("generator.group_index=9", "generator.group_index=9 is invalid: must be in 1..T/group_size = 1..8"),
    ("data.k=0", "data.k=0 is invalid: must be >= 1"),
    ("data.fraction=0", "data.fraction=0.0 is invalid: must be in (0, 1]"),
    ("data.fraction=1.5", "data.fraction=1.5 is invalid: must be in (0, 1]"),
    ("data.protocol=all", "data.protocol='all' is invalid: must be one of ['full', 'k_shot', 'fraction']"),
    ("dataset.test_size=1", "dataset.test_size=1.0 is invalid: must be in (0, 1)"),
    ("dataset.format=xlsx", "dataset.format='xlsx' is invalid"),
])
def test_config_error_messages(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert needle in str(err.value)


def test_boundaries_that_are_valid():
    cfg = load_config(["data.fraction=1.0", "data.k=1", "generator.lam=0", "generator.T=4",
                       "generator.group_size=4", "generator.group_index=1"])
    assert cfg.data.fraction == 1.0 and cfg.generator.T == 4 and cfg.generator.group_steps() == [1, 2, 3, 4]
    # group_index is relative to T/group_size: with T=8, group_size=4 only 1..2 exist
    with pytest.raises(ConfigError, match=r"1\.\.2"):
        load_config(["generator.T=8", "generator.group_size=4", "generator.group_index=3"])


def test_dataclasses_validate_directly():
    with pytest.raises(ConfigError, match="data.k"):
        DataConfig(k=0)
    with pytest.raises(ConfigError, match="dataset.keep_top_labels"):
        DatasetConfig(keep_top_labels=1)
