"""The run report (dcls_core.report): the arms side by side and the pseudo samples' diagnostics."""
from __future__ import annotations

import pandas as pd

from dcls_core.diagnostics import pseudo_diagnostics
from dcls_core.diffusion_augmenter import augmented_frame
from dcls_core.evaluation import classification_metrics
from dcls_core.report import write_report


def test_the_report_shows_the_arms_and_the_pseudo_sample_diagnostics(tmp_path):
    names = ["neg", "pos"]
    train = pd.DataFrame({"id": ["a", "b"], "text": ["a dull film", "a fine film"], "label": names,
                          "split": "train"})
    pseudo = pd.DataFrame({"id": ["a#1", "b#1"], "text": ["a dull film", "a great film"], "label": names,
                           "split": "pseudo", "is_pseudo": True, "source_id": ["a", "b"], "step": [6, 6],
                           "mask_ratio": [0.3, 0.3], "changed_ratio": [0.0, 0.33], "changed_spans": [[], [[2, 7]]]})
    block = classification_metrics(["neg", "pos", "pos"], [0, 1, 0], names)
    metrics = {arm: {"test": block} for arm in ("probe", "raw", "no_augmentation", "augmented")}
    metrics["labels"] = names
    metrics["pseudo_diagnostics"] = pseudo_diagnostics(pseudo, train, [[0.9, 0.1], [0.8, 0.2]], names)
    report = write_report(tmp_path, metrics, augmented_frame(train, pseudo)).read_text()
    assert "| raw (no augmentation, alpha = 0) | test |" in report
    assert "judge predicts the inherited label" in report and "duplicates" in report
    # one of two pseudo samples keeps its judged label; one is its source's text unchanged
    table = report.split("Pseudo-sample diagnostics")[1].split("\n\n")[1].splitlines()
    assert table[2].startswith("| 0.5000 |") and table[2].endswith("| 0.5000 |")
