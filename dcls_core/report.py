"""The run report: ``report.md`` with tables and PNG plots (matplotlib, Agg backend).

The arms side by side (``raw``: cross-entropy only; ``no_augmentation``: + L_c, the paper's
"w/o D.A."; ``augmented``: + pseudo samples) with the frozen-encoder ``probe``, and the arm the
run recommends. Plots (``<run>/plots/``): per-class F1 of the arms, the augmented classifier's
confusion matrix on test, the histogram of masked fractions of the pseudo samples; example
pseudo samples per label beside their originals, rebuilt words marked **bold**.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from dcls_core.artifacts import atomic_write_text
from dcls_core.diagnostics import HEADLINE
from dcls_core.evaluation import ARMS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt




def _split(metrics: Dict[str, Any]) -> str:
    return "test" if any("test" in metrics.get(a, {}) for a in ARMS) else "dev"


def _main_arm(metrics: Dict[str, Any]) -> str:
    return "augmented" if "augmented" in metrics else "raw"


def _per_class_f1(block: Dict[str, Any]) -> Dict[str, float]:
    per = block.get("per_class", {})
    if isinstance(per, dict):
        return {str(k): float(v.get("f1", 0.0)) for k, v in per.items()}
    return {str(row.get("label")): float(row.get("f1", 0.0)) for row in per}


def plot_per_class_f1(metrics: Dict[str, Any], path: Path) -> Path:
    plt = _plt()
    split = _split(metrics)
    arms = [a for a in ARMS if split in metrics.get(a, {})]
    f1 = {a: _per_class_f1(metrics[a][split]) for a in arms}
    labels = list(f1[arms[0]])
    x = np.arange(len(labels))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(labels) + 2), 3.5))
    for i, arm in enumerate(arms):
        ax.bar(x - 0.4 + width * (i + 0.5), [f1[arm].get(lab, 0.0) for lab in labels], width, label=arm)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"F1 ({split})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(metrics: Dict[str, Any], path: Path) -> Optional[Path]:
    split = _split(metrics)
    arm = _main_arm(metrics)
    conf = metrics[arm][split].get("confusion")
    if conf is None:
        return None
    plt = _plt()
    matrix = np.asarray(conf if not isinstance(conf, dict) else conf.get("matrix"), dtype=float)
    labels = metrics.get("labels") or [str(i) for i in range(len(matrix))]
    fig, ax = plt.subplots(figsize=(1.0 * len(labels) + 2.5, 1.0 * len(labels) + 2))
    im = ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{arm} classifier, {split}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_mask_hist(augmented: pd.DataFrame, path: Path) -> Optional[Path]:
    pseudo = augmented[augmented["is_pseudo"].astype(bool)]
    if pseudo.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for step, group in sorted(pseudo.groupby("step")):
        ax.hist(group["mask_ratio"], bins=20, range=(0, 1), alpha=0.5, label=f"step {step}")
    ax.set_xlabel("masked fraction of text tokens")
    ax.set_ylabel("pseudo samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _md_table(header: List[str], rows: List[List[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def mark_spans(text: str, spans: Any) -> str:
    """``text`` with each ``[start, end)`` span wrapped in ** (Markdown bold)."""
    if spans is None or len(spans) == 0:
        return text
    out, cursor = [], 0
    for start, end in sorted((int(a), int(b)) for a, b in spans):
        out += [text[cursor:start], "**", text[start:end], "**"]
        cursor = end
    return "".join(out + [text[cursor:]])


def examples_table(augmented: pd.DataFrame, per_label: int = 2, width: int = 160) -> str:
    pseudo = augmented[augmented["is_pseudo"].astype(bool)]
    if pseudo.empty:
        return "_no pseudo samples_"
    originals = augmented[~augmented["is_pseudo"].astype(bool)].set_index("id")["text"]
    rows = []
    for label, group in sorted(pseudo.groupby("label")):
        for _, r in group.sort_values("id").head(per_label).iterrows():
            src = str(originals.get(r["source_id"], ""))[:width]
            text = mark_spans(str(r["text"]), r["changed_spans"] if "changed_spans" in r else None)
            row = [label, r["step"], float(r["mask_ratio"]), src, text]
            if "consistency" in r:
                row.append(float(r["consistency"]))
            rows.append(row)
    header = ["label", "step", "masked", "original", "pseudo sample (rebuilt words in bold)"]
    if "consistency" in pseudo.columns:
        header.append("consistency")
    return _md_table(header, rows)


# how the report names the augmented arm's method
AUGMENTER_NAMES = {"diffusion": "DiffusionCLS", "retrieval": "retrieval from the unlabelled corpus, not DiffusionCLS"}


def write_report(run_dir: Path, metrics: Dict[str, Any], augmented: pd.DataFrame, config: Any = None,
                 stages: Optional[List[Dict[str, Any]]] = None,
                 checkpoints: Optional[Dict[str, str]] = None) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    made = {
        "per_class_f1": plot_per_class_f1(metrics, plots / "per_class_f1.png"),
        "confusion": plot_confusion(metrics, plots / "confusion_matrix.png"),
        "mask_hist": plot_mask_hist(augmented, plots / "mask_ratio_hist.png"),
    }
    lines = ["# DiffusionCLS run report", ""]
    if config is not None:
        c = config
        lines += [f"experiment `{c.experiment}` · dataset `{c.dataset.name}` ({c.data.protocol}"
                  + (f", k={c.data.k}" if c.data.protocol == "k_shot" else "")
                  + f") · model `{c.model.name}` · augment `{c.augment.method}`/{c.augment.policy}/{c.augment.mode}"
                  + f" n={c.augment.n} · seed {c.seed}", ""]
    rows = []
    method = getattr(getattr(config, "augment", None), "method", "diffusion")
    names = {"probe": "probe (logistic regression on the frozen encoder)", "raw": "raw (no augmentation, alpha = 0)",
             "no_augmentation": "no_augmentation (L_c, no pseudo samples)",
             "augmented": f"augmented ({AUGMENTER_NAMES.get(method, method)})"}
    for key in ("probe",) + ARMS:
        for split in ("dev", "test"):
            m = metrics.get(key, {}).get(split)
            if m:
                rows.append([names[key], split, float(m["accuracy"]), float(m["macro_f1"])])
    lines += ["## Metrics", "", _md_table(["classifier", "split", "accuracy", "macro-F1"], rows), ""]
    selected = metrics.get("selected")
    if selected:
        lines += [f"**Recommended classifier: `{selected['arm']}`** ({selected['reason']}).", ""]
    proxy = metrics.get("proxy")
    if proxy:
        lines += [f"Proxy classifier ({proxy.get('checkpoint')}): best dev accuracy {proxy.get('dev_accuracy')} "
                  f"(at step 0: {proxy.get('dev_accuracy_at_start')}); importance comes from it.", ""]
    split = _split(metrics)
    arms = [a for a in ARMS if split in metrics.get(a, {})]
    f1 = {a: _per_class_f1(metrics[a][split]) for a in arms}
    lines += [f"### Per-class F1 ({split})", "",
              _md_table(["label"] + arms, [[lab] + [f1[a].get(lab, 0.0) for a in arms] for lab in f1[arms[0]]]), "",
              "![per-class F1](plots/per_class_f1.png)", ""]
    if made["confusion"]:
        lines += ["![confusion matrix](plots/confusion_matrix.png)", ""]
    pseudo = augmented[augmented["is_pseudo"].astype(bool)]
    lines += ["## Augmented data", "",
              f"`augmented.parquet`: {int((~augmented['is_pseudo'].astype(bool)).sum())} originals + "
              f"{len(pseudo)} pseudo samples.", ""]
    if len(pseudo):
        by_step = pseudo.groupby("step").agg(rows=("id", "size"), mask_ratio=("mask_ratio", "mean"),
                                             changed_ratio=("changed_ratio", "mean"))
        step_rows = [[int(s), int(r.rows), float(r.mask_ratio), float(r.changed_ratio)] for s, r in by_step.iterrows()]
        lines += [_md_table(["step", "rows", "mean masked fraction", "mean changed fraction"], step_rows), ""]
        if "consistency" in pseudo.columns:
            lines += [f"Mean label consistency (the judging classifier's probability of the inherited label): "
                      f"{float(pseudo['consistency'].mean()):.4f}", ""]
        diag = metrics.get("pseudo_diagnostics") or {}
        shown = [(k, label) for k, label in HEADLINE.items() if diag.get(k) is not None]
        if shown:
            lines += ["Pseudo-sample diagnostics (`dcls_core.diagnostics`):", "",
                      _md_table([label for _, label in shown], [[float(diag[k]) for k, _ in shown]]), ""]
        lines += ["![masked fraction](plots/mask_ratio_hist.png)", "", "### Example pseudo samples", "",
                  examples_table(augmented), ""]
    if checkpoints:
        lines += ["## Checkpoints", ""] + [f"- {k}: `{v}`" for k, v in checkpoints.items()] + [""]
    if stages:
        lines += ["## Stages", "", _md_table(["stage", "key", "reused"],
                                            [[s["stage"], s["key"], "yes" if s["skipped"] else "no"] for s in stages]), ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
