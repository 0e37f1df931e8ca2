"""Fit and measure a bundle's gate (``dermscreen.gate``): which images get a melanoma score.

    dermscreen fit-gate BUNDLE --out OUT --version V --ood ../shared/data/ood

1. The bundle is copied to ``OUT`` with a second model output (``features_model``; Keras and
   ONNX): the pooled features that feed its classifier, and the statistics of two inner feature
   maps.
2. Dermoscopy: a sample of the images the bundle was trained on (its training config's pool,
   ``DERMOSCOPY_SAMPLE``), split by lesion into a fitting part and a held-back check part.
   Not dermoscopy: ``ood/labels.csv`` (clinical photographs, documents, natural photographs),
   split by ``group`` (DermNet disease folder) the same way, plus drawn documents, screenshots,
   drawings and gradients (``synthetic_outliers``) that no folder holds.
3. Quality thresholds (``fit_quality``): halfway beyond the ``QUALITY_QUANTILE`` of the fitting
   dermoscopy in each statistic of ``gate.image_statistics``; images under ``MIN_SIDE`` px are
   too small for a lesion's structures whatever the data says.
4. Detectors on the features (``fit_detectors``): a logistic regression (dermoscopy against the
   rest) and a Mahalanobis distance to the dermoscopy in its ``COMPONENTS`` main components.
   Their thresholds stop ``CLASSIFIER_BUDGET`` and ``DISTANCE_BUDGET`` of the fitting
   dermoscopy's out-of-fold scores (folds by group), so the budgets are honest estimates.
   DermNet photographs carry a logo in their bottom-left corner: the detectors see every image,
   in fitting and in serving, with that corner masked (``gate.mask_corner``), so the logo cannot
   be the cue. The check part is measured through ``Bundle.screen``, as served.
5. Measured on the check part (groups never fitted on) and on the cases every gate must stop;
   written with the thresholds and the data into the bundle's metadata (``gate``) and card.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

from dermscreen.bundle import (
    KERAS_FILE, ONNX_FILE, Bundle, file_sha256, load_bundle, write_metadata,
)
from dermscreen.gate import GATE_FILE, LOGO_CORNER, Gate, image_statistics, mask_corner
from dermscreen.training.datasets import IMAGE_SUFFIXES, read_dataset
from dermscreen.training.metrics import proportion_interval
from dermscreen.training.splits import grouped_split

DERMOSCOPY_SAMPLE = 4000
CHECK_FRACTION = 0.3
FOLDS = 5
# The detectors' budgets: together at most 0.5% of held-back dermoscopy (CHANGELOG, attempt 15).
CLASSIFIER_BUDGET = 0.002
DISTANCE_BUDGET = 0.001
QUALITY_QUANTILE = 0.0005
MIN_SIDE = 64
COMPONENTS = 32
SYNTHETIC = 300
GATE_HEADING = "## Gate: which images get a melanoma score"
# EfficientNet-Lite0 layers whose feature maps the gate also reads: the last frozen ImageNet
# block (generic) and a fine-tuned one.
FEATURE_MAPS = ("block7_add", "block11_project_bn")
BATCH = 64


def features_model(model):
    """``model`` with a second output, the features the gate's detectors read: the input of its
    ``logits`` layer (the pooled features), then the mean and standard deviation over the image
    of each ``FEATURE_MAPS`` layer it has (texture and scale at two depths: on the checked set
    they took clinical photographs stopped from 76% to 98%)."""
    import keras

    if len(model.outputs) > 1:
        return model
    names = {layer.name for layer in model.layers}
    parts = [model.get_layer("logits").input]
    for name in FEATURE_MAPS:
        if name in names:
            maps = model.get_layer(name).output
            parts += [keras.ops.mean(maps, axis=(1, 2)), keras.ops.std(maps, axis=(1, 2))]
    features = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="gate_features")(parts)
    return keras.Model(model.inputs, [model.outputs[0], features])


def with_features(source: Path, out: Path, version: str, changelog: str) -> Bundle:
    """A copy of the bundle at ``source`` at ``out`` whose model also outputs its pooled
    features (Keras and ONNX), under a new ``version``."""
    from dermscreen.training.onnx_export import export_onnx

    if out.exists():
        raise FileExistsError(f"{out} exists")
    shutil.copytree(source, out)
    bundle = load_bundle(out)
    model = features_model(bundle.keras_model)
    model.save(out / KERAS_FILE)
    files = [KERAS_FILE]
    if (out / ONNX_FILE).exists():
        (out / ONNX_FILE).write_bytes(export_onnx(model))
        files.append(ONNX_FILE)
    metadata = bundle.metadata
    metadata.update(version=version, changelog=[*metadata["changelog"], changelog])
    metadata["output"]["features"] = int(model.outputs[1].shape[-1])
    metadata["files"] = {**metadata.get("files", {}),
                         **{name: file_sha256(out / name) for name in files}}
    write_metadata(out, metadata, (out / "README.md").read_text())
    return load_bundle(out, backend="onnx")


def synthetic_outliers(count: int, seed: int = 0) -> list[Image.Image]:
    """Images no dermoscope makes: text documents, screenshots (panels, bars and text), line
    drawings, colour gradients with shapes; a quarter of each."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = int(rng.integers(240, 640)), int(rng.integers(240, 640))
        kind = index % 4
        if kind == 3:
            ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, 3)
            base = ramp + np.linspace(0, 1, height)[:, None, None] * rng.uniform(0, 255, 3)
            image = Image.fromarray(np.clip(base / 2, 0, 255).astype(np.uint8))
        else:
            background = (255, 255, 255) if kind != 1 else tuple(int(v) for v in rng.integers(0, 256, 3))
            image = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(8, 40))):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            if kind == 0:
                words = " ".join("".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 9))))
                                 for _ in range(int(rng.integers(2, 8))))
                draw.text((x, y), words, fill=(20, 20, 20))
            elif kind == 1:
                draw.rectangle((x, y, x + int(rng.integers(20, 200)), y + int(rng.integers(10, 60))),
                               fill=colour)
                draw.text((x + 4, y + 2), "Button", fill=(255, 255, 255))
            else:
                x2, y2 = int(rng.integers(0, width)), int(rng.integers(0, height))
                if kind == 2:
                    draw.line((x, y, x2, y2), fill=colour, width=int(rng.integers(1, 6)))
                else:
                    draw.ellipse((min(x, x2), min(y, y2), max(x, x2), max(y, y2)), outline=colour)
        images.append(image)
    return images


def dermoscopy_records(bundle: Bundle, sample: int = DERMOSCOPY_SAMPLE, seed: int = 0) -> pd.DataFrame:
    """A sample of the images of the bundle's training pool (its training config's ``train``),
    drawn evenly from its sources, with a lesion group each."""
    specs = bundle.metadata["training"]["train"]
    pool = pd.concat([read_dataset(spec["path"], spec.get("split")) for spec in specs],
                     ignore_index=True).drop_duplicates("image_id")
    per_source = max(1, sample // pool["source"].nunique())
    drawn = pd.concat([part.sample(min(len(part), per_source), random_state=seed)
                       for _, part in pool.groupby("source")], ignore_index=True)
    lesion = drawn["lesion_id"].fillna("").astype(str)
    drawn["group"] = np.where(lesion != "", "lesion:" + lesion, "image:" + drawn["image_id"])
    drawn["kind"] = "dermoscopy"
    return drawn


def outlier_records(ood: Path) -> pd.DataFrame:
    """``ood/labels.csv`` with paths; ``group`` is the DermNet folder, else the image itself."""
    table = pd.read_csv(ood / "labels.csv", dtype=str, keep_default_na=False)
    table["path"] = [str(ood / f"{image_id}.jpg") for image_id in table["image_id"]]
    table["group"] = np.where(table["group"] != "", "folder:" + table["group"],
                              "image:" + table["image_id"])
    return table


def prepare_all(bundle: Bundle, images) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Model inputs (as uint8, to hold thousands) and own sizes of ``images`` (paths or PIL
    images)."""
    prepared = [bundle.prepare(image) for image in images]
    return (np.stack([item.pixels.astype(np.uint8) for item in prepared]),
            [item.size for item in prepared])


def pooled_features(bundle: Bundle, pixels: np.ndarray) -> np.ndarray:
    """The detectors' features of ``pixels``: the bundle model's pooled features of the plain
    view with the logo corner masked (as ``Bundle.screen`` computes them)."""
    parts = []
    for start in range(0, len(pixels), BATCH):
        batch = pixels[start:start + BATCH].astype(np.float32)
        parts.append(bundle.model_outputs(mask_corner(batch))[1])
    return np.concatenate(parts).astype(np.float64)


def fit_quality(statistics: pd.DataFrame) -> dict:
    """Quality thresholds halfway from the ``QUALITY_QUANTILE`` of dermoscopy ``statistics`` to
    the end of each statistic's scale (0 or 255 for brightness, 1 for the flat share, 0 for
    sharpness): beyond what dermoscopy shows, with a margin for a scanner it did not."""
    low, high = statistics.quantile(QUALITY_QUANTILE), statistics.quantile(1 - QUALITY_QUANTILE)
    return {"min_side": MIN_SIDE,
            "min_brightness": round(float(low["brightness"]) / 2, 2),
            "max_brightness": round(float(high["brightness"] + 255) / 2, 2),
            "max_flat_share": round(float(high["flat_share"] + 1) / 2, 4),
            "min_sharpness": round(float(low["sharpness"]) / 2, 3)}


def _detector_arrays(features: np.ndarray, outlier: np.ndarray) -> dict:
    scaler = StandardScaler().fit(features)
    classifier = LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000)
    classifier.fit(scaler.transform(features), outlier)
    pca = PCA(min(COMPONENTS, features.shape[1]), random_state=0).fit(features[~outlier])
    return {"mean": scaler.mean_, "scale": scaler.scale_, "coef": classifier.coef_[0],
            "intercept": classifier.intercept_, "pca_mean": pca.mean_,
            "pca_components": pca.components_,
            # floored at 0.1% of the largest, so that a direction the dermoscopy hardly varies in
            # cannot make every new image look far
            "pca_variance": np.maximum(pca.explained_variance_, 1e-3 * pca.explained_variance_[0])}


def _scores(arrays: dict, features: np.ndarray) -> dict[str, np.ndarray]:
    return Gate(quality={}, detectors={}, arrays=arrays).scores(features)


def fit_detectors(features: np.ndarray, outlier: np.ndarray, groups: np.ndarray) -> tuple[dict, dict]:
    """(arrays, thresholds): the detectors fitted on all of ``features``, their thresholds from
    the out-of-fold scores of the dermoscopy (``outlier`` False) in ``FOLDS`` group folds."""
    out_of_fold = {"not_dermoscopy": np.zeros(len(features)), "distance": np.zeros(len(features))}
    for fit, held in GroupKFold(FOLDS).split(features, outlier, groups):
        scores = _scores(_detector_arrays(features[fit], outlier[fit]), features[held])
        for name, values in scores.items():
            out_of_fold[name][held] = values
    dermoscopy = ~outlier
    thresholds = {
        "classifier_threshold": float(np.quantile(out_of_fold["not_dermoscopy"][dermoscopy],
                                                  1 - CLASSIFIER_BUDGET)),
        "distance_threshold": float(np.quantile(out_of_fold["distance"][dermoscopy],
                                                1 - DISTANCE_BUDGET)),
    }
    return _detector_arrays(features, outlier), thresholds


def share(stopped: np.ndarray) -> dict:
    """How many of a set were stopped, their share and its 95% Wilson interval."""
    hits, n = int(np.sum(stopped)), len(stopped)
    return {"n": n, "stopped": hits, "share": hits / n if n else None,
            "ci95": proportion_interval(hits, n)}


def must_stop_cases() -> dict[str, Image.Image]:
    """The images every gate must stop."""
    rng = np.random.default_rng(0)
    return {"uniform grey": Image.new("RGB", (300, 300), (128, 128, 128)),
            "all black": Image.new("RGB", (300, 300), (0, 0, 0)),
            "all white": Image.new("RGB", (300, 300), (255, 255, 255)),
            "8x8": Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))}


def stopped_by(bundle: Bundle, images) -> list[str | None]:
    """The gate's reason for each image (paths or PIL images), None for those it lets through."""
    reasons = []
    for start in range(0, len(images), BATCH):
        prepared = [bundle.prepare(image) for image in images[start:start + BATCH]]
        reasons += [result.unassessable for result in bundle.screen(prepared)]
    return reasons


def fit_gate(source: Path, out: Path, version: str, ood: Path, log=print) -> dict:
    """Fit the gate of the bundle at ``source`` into a new bundle at ``out`` (see the module);
    returns its metadata's ``gate``."""
    bundle = with_features(source, out, version,
                           f"gate fitted: quality checks and a dermoscopy detector on the model's"
                           f" pooled features ({ood} as outliers; budgets: classifier"
                           f" {CLASSIFIER_BUDGET:.1%}, distance {DISTANCE_BUDGET:.1%})")
    dermoscopy = dermoscopy_records(bundle)
    outliers = outlier_records(ood)
    synthetic = synthetic_outliers(SYNTHETIC)
    table = pd.concat([dermoscopy[["path", "kind", "group"]], outliers[["path", "kind", "group"]],
                       pd.DataFrame({"path": None, "kind": "synthetic",
                                     "group": [f"synthetic:{i}" for i in range(SYNTHETIC)]})],
                      ignore_index=True)
    table["part"] = grouped_split(table.assign(label=table["kind"]), table["group"], CHECK_FRACTION)
    log(f"gate data: {table.groupby(['kind', 'part']).size().to_dict()}")
    images = [path if path is not None else synthetic[int(group.split(':')[1])]
              for path, group in zip(table["path"], table["group"])]
    pixels, sizes = prepare_all(bundle, images)
    fitting = (table["part"] == "train").to_numpy()
    is_dermoscopy = (table["kind"] == "dermoscopy").to_numpy()

    statistics = pd.DataFrame([image_statistics(p.astype(np.float32))
                               for p in pixels[is_dermoscopy & fitting]])
    quality = fit_quality(statistics)
    arrays, thresholds = fit_detectors(pooled_features(bundle, pixels[fitting]),
                                       ~is_dermoscopy[fitting], table["group"].to_numpy()[fitting])
    np.savez(out / GATE_FILE, **{name: np.asarray(value, dtype=np.float64)
                                 for name, value in arrays.items()})
    metadata = bundle.metadata
    metadata["gate"] = {
        "quality": quality,
        "detectors": {**thresholds, "components": len(arrays["pca_variance"]),
                      "budgets": {"classifier": CLASSIFIER_BUDGET, "distance": DISTANCE_BUDGET}},
        "fitted_on": {
            "dermoscopy": f"{int((is_dermoscopy & fitting).sum())} images of the training pool"
                          f" ({dermoscopy['source'].value_counts().to_dict()} drawn before the"
                          f" split by lesion)",
            "outliers": {kind: int(((table['kind'] == kind).to_numpy() & fitting).sum())
                         for kind in sorted(set(table["kind"]) - {"dermoscopy"})},
            "masked": f"bottom-left {LOGO_CORNER[0]:.0%} x {LOGO_CORNER[1]:.0%} of every image the detectors see",
        },
    }
    metadata["files"][GATE_FILE] = file_sha256(out / GATE_FILE)
    write_metadata(out, metadata, (out / "README.md").read_text())
    bundle = load_bundle(out, backend="onnx")

    check = ~fitting
    reasons = stopped_by(bundle, [image for image, keep in zip(images, check) if keep])
    stopped = np.array([reason is not None for reason in reasons])
    kinds = table["kind"].to_numpy()[check]
    measured = {f"check {kind}": share(stopped[kinds == kind]) for kind in sorted(set(kinds))}
    cases = must_stop_cases()
    measured["must stop"] = {name: reason for name, reason in zip(cases, stopped_by(bundle, list(cases.values())))}
    metadata["gate"]["measured"] = measured
    write_metadata(out, metadata, card(out, metadata))
    log(json.dumps(measured, indent=1))
    return metadata["gate"]


def card(out: Path, metadata: dict) -> str:
    """The fitted bundle's model card: the card it came with, its gate's section (from an
    earlier fit) replaced by this gate's."""
    before = (out / "README.md").read_text().split(GATE_HEADING)[0].rstrip("\n")
    return "\n".join([before, "", *gate_lines(metadata), ""])


def gate_lines(metadata: dict) -> list[str]:
    """Model card lines: the gate's checks, thresholds, data and what it stopped."""
    gate = metadata.get("gate")
    if not gate:
        return []
    q, d = gate["quality"], gate["detectors"]
    lines = [
        GATE_HEADING,
        f"- Quality (image as the model sees it): shorter side >= {q['min_side']} px; mean"
        f" brightness {q['min_brightness']:.1f}-{q['max_brightness']:.1f}; flat share <="
        f" {q['max_flat_share']:.3f}; sharpness >= {q['min_sharpness']:.2f} (each halfway from the"
        f" {QUALITY_QUANTILE:.2%} of the training dermoscopy to the end of its scale).",
        f"- Dermoscopy or not (the model's pooled features): logistic regression >="
        f" {d['classifier_threshold']:.3f}, or Mahalanobis distance in {d['components']} main"
        f" components >= {d['distance_threshold']:.1f}; thresholds stop"
        f" {d['budgets']['classifier']:.1%} and {d['budgets']['distance']:.1%} of the training"
        " dermoscopy out of fold.",
        f"- Fitted on: {gate['fitted_on']['dermoscopy']}; outliers {gate['fitted_on']['outliers']};"
        f" the {gate['fitted_on']['masked']} masked (in serving too), so a site logo cannot be the cue.",
    ]
    for name, result in gate.get("measured", {}).items():
        if name == "must stop":
            lines.append("- Must stop: " + "; ".join(f"{case}: {reason or 'NOT STOPPED'}"
                                                     for case, reason in result.items()) + ".")
        else:
            low, high = result["ci95"] or (float("nan"), float("nan"))
            lines.append(f"- Stopped, {name} (groups never fitted on, as served): {result['stopped']}"
                         f" of {result['n']} ({result['share']:.1%}, {low:.1%}-{high:.1%}).")
    return lines


def reason_kind(reason: str) -> str:
    """A reason without its measured values: ``too dark: mean brightness 3 of 255`` -> ``too
    dark``."""
    return reason.split(":")[0].split(" (")[0]


def gate_report(bundle: Bundle, folder: Path) -> dict:
    """What ``bundle``'s gate stops among the image files under ``folder``."""
    files = sorted(path for path in Path(folder).rglob("*")
                   if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    reasons, unreadable = [], 0
    for start in range(0, len(files), BATCH):
        prepared = []
        for path in files[start:start + BATCH]:
            try:
                prepared.append(bundle.prepare(path))
            except (OSError, ValueError):
                unreadable += 1
        reasons += [result.unassessable for result in bundle.screen(prepared)]
    stopped = np.array([reason is not None for reason in reasons])
    kinds = pd.Series([reason_kind(reason) for reason in reasons if reason]).value_counts()
    return {"model": f"{bundle.metadata.get('name', '')} {bundle.version}", "folder": str(folder),
            **share(stopped), "unreadable": unreadable, "by_reason": kinds.to_dict()}
