"""The evaluation plots, written as PNG files for the README."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training import metrics  # noqa: E402


def _save(fig, path: pathlib.Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roc(labels, probs, threshold: float, path: pathlib.Path) -> None:
    fpr, tpr, _ = metrics.roc_curve(labels, probs)
    point = metrics.at_threshold(labels, probs, threshold)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"AUC {metrics.roc_auc(labels, probs):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.scatter(
        [1 - point["specificity"]], [point["sensitivity"]], c="crimson", zorder=3, label=f"threshold {threshold:.2f}"
    )
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, official test set", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    _save(fig, path)


def confusion(confusion_counts: dict, path: pathlib.Path) -> None:
    grid = np.array(
        [[confusion_counts["tn"], confusion_counts["fp"]], [confusion_counts["fn"], confusion_counts["tp"]]]
    )
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(grid, cmap="Blues")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=14,
            color="white" if value > grid.max() / 2 else "black",
        )
    ax.set_xticks([0, 1], ["NORMAL", "PNEUMONIA"])
    ax.set_yticks([0, 1], ["NORMAL", "PNEUMONIA"])
    ax.set(xlabel="predicted (stored threshold)", ylabel="truth", title="Confusion matrix, test set")
    _save(fig, path)


def reliability_diagram(labels, probs, path: pathlib.Path) -> None:
    rows = metrics.reliability(labels, probs, bins=15)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.scatter([r[0] for r in rows], [r[1] for r in rows], s=[10 + r[2] for r in rows], alpha=0.7)
    ax.plot([r[0] for r in rows], [r[1] for r in rows], lw=1)
    ece = metrics.expected_calibration_error(labels, probs)
    ax.set(
        xlabel="predicted P(pneumonia)",
        ylabel="observed frequency",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"Reliability, test set (ECE {ece:.3f})",
    )
    _save(fig, path)


def training_curves(history: list[dict], path: pathlib.Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(epochs, [h["loss"] for h in history], label="training loss")
    left.plot(epochs, [h["val_nll"] for h in history], label="validation NLL (pneumonia)")
    left.set(xlabel="epoch", title="Loss")
    left.legend()
    right.plot(epochs, [h["val_auc"] for h in history], label="validation AUC")
    right.plot(epochs, [h["val_shifted_auc"] for h in history], label="shifted validation AUC")
    rejected = [h.get("held_out_not_chest_rejected") for h in history]
    if all(r is not None for r in rejected):
        right.plot(epochs, rejected, label="held-out not-chest rejected")
    right.set(xlabel="epoch", title="Validation")
    right.legend(loc="lower right")
    _save(fig, path)
