"""Figures and the markdown evaluation report (matplotlib, Agg backend: no display needed).

``write_report(folder, result, predictions, bundle)`` writes ``report.md`` with ROC,
threshold (sensitivity and specificity at every threshold), reliability, confusion-matrix and
training-curve PNGs, and ``predictions.csv`` in the ISIC challenge layout
(``image`` then one probability column per class; ``truth.csv`` is the one-hot ground truth in
the same layout).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay, roc_curve  # noqa: E402

from dermscreen.measured import span  # noqa: E402
from dermscreen.training.metrics import proportion_interval  # noqa: E402

# ISIC challenge column names of the nine classes.
ISIC_COLUMNS = {
    "actinic keratosis": "AK", "basal cell carcinoma": "BCC", "dermatofibroma": "DF",
    "melanoma": "MEL", "nevus": "NV", "pigmented benign keratosis": "BKL",
    "seborrheic keratosis": "SK", "squamous cell carcinoma": "SCC", "vascular lesion": "VASC",
}


def plot_training_curves(history: dict, path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, training and validation."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--o")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + metric)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def plot_roc(positive: np.ndarray, scores: np.ndarray, threshold: float, path: Path,
             intervals: dict) -> Path:
    """The melanoma ROC with the alert threshold's point; ``intervals`` (``metrics.ci95``) draw
    that point's 95% intervals as error bars and give the AUC's in the title."""
    figure, axis = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(positive, scores, name="melanoma", ax=axis)
    flagged = scores >= threshold
    sensitivity = flagged[positive].mean()
    specificity = (~flagged[~positive]).mean()
    sens_low, sens_high = intervals["sensitivity"]
    spec_low, spec_high = intervals["specificity"]
    axis.errorbar([1 - specificity], [sensitivity], fmt="ro",
                  xerr=[[spec_high - specificity], [specificity - spec_low]],
                  yerr=[[sensitivity - sens_low], [sens_high - sensitivity]],
                  label=f"alert threshold {threshold:.3f} (95% intervals)")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.legend(loc="lower right")
    auc_low, auc_high = intervals["melanoma_auc"]
    axis.set_title(f"Melanoma ROC (AUC 95% interval {auc_low:.3f}-{auc_high:.3f})")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def plot_thresholds(positive: np.ndarray, scores: np.ndarray, threshold: float, path: Path) -> Path:
    """Melanoma sensitivity and specificity at every threshold (log scale) with their 95%
    bands (Wilson), the shipped one marked: what a hospital's own threshold would cost on this
    data, and how sure that is."""
    false_positive, true_positive, thresholds = roc_curve(positive, scores)
    keep = np.isfinite(thresholds) & (thresholds > 0)
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, rate, n in (("sensitivity", true_positive[keep], positive.sum()),
                          ("specificity", 1 - false_positive[keep], (~positive).sum())):
        line, = axis.step(thresholds[keep], rate, where="post", label=name)
        band = np.array([proportion_interval(int(round(r * n)), int(n)) for r in rate])
        axis.fill_between(thresholds[keep], band[:, 0], band[:, 1], step="post", alpha=0.2,
                          color=line.get_color(), linewidth=0)
    axis.axvline(threshold, color="red", linestyle="--", label=f"alert threshold {threshold:.4f}")
    axis.set(xscale="log", xlabel="threshold on the melanoma probability", ylabel="rate",
             ylim=(0, 1.02), title="Sensitivity and specificity by threshold (95% bands)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="center left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def plot_reliability(positive: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(positive, scores, n_bins=10, strategy="quantile",
                                        name="melanoma probability", ax=axis)
    axis.set_title("Reliability (melanoma)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def plot_confusion(matrix, classes: list[str], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(8, 7))
    labels = [ISIC_COLUMNS.get(name, name) for name in classes]
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(
        ax=axis, colorbar=False, xticks_rotation=45)
    axis.set_title("Confusion matrix (rows: truth)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def isic_tables(predictions: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, truth) in the ISIC layout: ``image`` then one column per class."""
    columns = [ISIC_COLUMNS.get(name, name) for name in classes]
    probabilities = predictions[classes].set_axis(columns, axis=1)
    truth = pd.get_dummies(predictions["label"]).reindex(columns=classes, fill_value=False)
    truth = truth.astype(float).set_axis(columns, axis=1)
    image = predictions["image_id"].rename("image")
    return (pd.concat([image, probabilities], axis=1),
            pd.concat([image, truth.set_index(image.index)], axis=1))


def tier_lines(tiers: dict | None) -> list[str]:
    """The alert and review tiers' table, with what each gives per 1,000 images of this set."""
    if not tiers:
        return []
    lines = ["## Tiers", "", "| tier | threshold | sensitivity | specificity | share of images |"
             " per 1,000 images: flagged / melanomas caught / missed |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, tier in tiers.items():
        cells = [f"{tier[key]:.3f} ({span(tier['ci95'][key])})" if tier[key] is not None else "n/a"
                 for key in ("sensitivity", "specificity", "share")]
        per = tier["per_1000_images"]
        lines.append(f"| {name} | {tier['threshold']:.4f} | {' | '.join(cells)} | {per['flagged']:.0f} /"
                     f" {per['melanomas_caught']:.0f} / {per['melanomas_missed']:.0f} |")
    return [*lines, ""]


def gate_lines(gate: dict | None) -> list[str]:
    """What the gate stopped before scoring (the metrics above are of the images it let through)."""
    if not gate:
        return []
    reasons = ", ".join(f"{reason} {count}" for reason, count in gate["by_reason"].items()) or "none"
    return ["## Gate", "", f"Stopped as unassessable before scoring: {gate['stopped']} of {gate['n']}"
            f" images ({span(gate['ci95'])}), {gate['melanomas_stopped']} melanomas among them;"
            f" by reason: {reasons}. The metrics above are of the images it let through.", ""]


def write_report(folder: str | Path, result: dict, predictions: pd.DataFrame, bundle) -> Path:
    """Write the figures, the ISIC-format CSVs and ``report.md`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    classes = bundle.classes
    positive = (predictions["label"] == "melanoma").to_numpy()
    scores = predictions["melanoma"].to_numpy()
    figures = {}
    if 0 < positive.sum() < len(positive):
        figures["ROC"] = plot_roc(positive, scores, bundle.threshold, folder / "roc.png",
                                  result["ci95"])
        figures["Thresholds"] = plot_thresholds(positive, scores, bundle.threshold,
                                                folder / "thresholds.png")
        figures["Calibration"] = plot_reliability(positive, scores, folder / "calibration.png")
    figures["Confusion matrix"] = plot_confusion(result["confusion_matrix"], classes,
                                                 folder / "confusion_matrix.png")
    curves = bundle.path / "training_curves.png"
    if curves.exists():
        figures["Training curves"] = Path(shutil.copy(curves, folder / "training_curves.png"))
    isic_predictions, truth = isic_tables(predictions, classes)
    isic_predictions.to_csv(folder / "predictions.csv", index=False)
    truth.to_csv(folder / "truth.csv", index=False)

    lines = [f"# Evaluation of {result['model']['name']} {result['model']['version']}", "",
             f"Data: `{result['data']}`. Images the model was trained or tuned on were dropped: "
             f"{result['dropped_training_ids']} by image id, {result['dropped_near_duplicates']} as "
             f"near-duplicates of training images.", "",
             "| metric | value | 95% interval |", "| --- | --- | --- |"]
    for key in ("n", "melanomas", "accuracy", "balanced_accuracy", "melanoma_auc", "threshold",
                "sensitivity", "specificity", "flagged", "missed_melanomas", "ece", "melanoma_ece"):
        value, interval = result[key], result["ci95"].get(key)
        shown = f"{value:.4f}" if isinstance(value, float) else f"{value}"
        lines.append(f"| {key} | {shown} | {span(interval) if interval else ''} |")
    lines += ["", *tier_lines(result.get("tiers")), *gate_lines(result.get("gate"))]
    for title, path in figures.items():
        lines += [f"## {title}", "", f"![{title}]({path.name})", ""]
    lines += ["Predictions (ISIC layout): `predictions.csv`; ground truth: `truth.csv`.", ""]
    report = folder / "report.md"
    report.write_text("\n".join(lines))
    return report
