"""Evaluate a model bundle on a labelled dataset.

    dermscreen evaluate [--model BUNDLE] --data DATASET [--split NAME] [--json] [--report DIR]

Images the bundle was trained or tuned on are dropped first: by image id (``training_ids.txt``)
and, when the bundle lists its training pHashes (``training_phashes.txt``), as near-duplicates
of a training image (recoloured or resized copies under another id). Metrics are scikit-learn's
(see ``metrics``), at the bundle's own alert threshold, on the images its gate lets through;
``gate`` says what it stopped and ``tiers`` what the alert and review tiers give. The ISIC challenge scorer
(isic-challenge-scoring 5.6) is not used: it calls ``DataFrame.applymap``, which pandas 3
removed; ``--report`` writes its CSV layout so it can score the predictions elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dermscreen.bundle import CARD_FILE, MELANOMA, METADATA_FILE, Bundle, Screening
from dermscreen.training.audit import with_hashes
from dermscreen.training.datasets import acquisition, sources_within_collections
from dermscreen.training.hashing import NEAR_DUPLICATE_BITS, hamming_pairs
from dermscreen.training.gate import reason_kind, share
from dermscreen.training.metrics import auc_difference_interval, ranked_auc, screening_metrics
from dermscreen.training.operating_point import tier_point
from dermscreen.training.train import TRAINING_IDS_FILE, TRAINING_PHASHES_FILE
from dermscreen.training.trainers import model_card

BATCH = 64


def drop_seen(records: pd.DataFrame, bundle: Bundle) -> tuple[pd.DataFrame, int, int]:
    """Remove records the bundle was trained on; returns (kept, dropped by id, dropped as
    near-duplicates)."""
    ids_file = bundle.path / TRAINING_IDS_FILE
    seen = set(ids_file.read_text().split()) if ids_file.exists() else set()
    by_id = records["image_id"].isin(seen).to_numpy()
    records = records[~by_id].reset_index(drop=True)
    near = 0
    phash_file = bundle.path / TRAINING_PHASHES_FILE
    if phash_file.exists() and len(records):
        training = phash_file.read_text().split()
        hashed = with_hashes(records)
        ours = hashed["phash"].tolist()
        readable = [i for i, value in enumerate(ours) if value]
        pairs = hamming_pairs([ours[i] for i in readable] + training, NEAR_DUPLICATE_BITS)
        cross = pairs[(pairs[:, 0] < len(readable)) & (pairs[:, 1] >= len(readable))]
        near_rows = {readable[i] for i in cross[:, 0]}
        keep = np.array([i not in near_rows for i in range(len(records))])
        near = int((~keep).sum())
        records = records[keep].reset_index(drop=True)
    return records, int(by_id.sum()), near


def predict_records(bundle: Bundle, records: pd.DataFrame, progress=None,
                    gate: bool = True) -> pd.DataFrame:
    """``records`` plus one probability column per class of the bundle and ``unassessable``: the
    reason its gate stopped an image (whose probabilities are then NaN), else None. Without
    ``gate`` every image is scored (to compare two models' rankings on the same images)."""
    probabilities, reasons = [], []
    for start in range(0, len(records), BATCH):
        paths = records["path"].iloc[start:start + BATCH]
        if gate:
            screened = bundle.screen([bundle.prepare(path) for path in paths])
        else:
            screened = [Screening(row) for row in bundle.predict(paths)]
        for result in screened:
            missing = np.full(len(bundle.classes), np.nan)
            probabilities.append(missing if result.probabilities is None else result.probabilities)
            reasons.append(result.unassessable)
        if progress:
            progress(min(start + BATCH, len(records)), len(records))
    probabilities = np.stack(probabilities) if probabilities else np.zeros((0, len(bundle.classes)))
    return pd.concat([records.reset_index(drop=True),
                      pd.DataFrame(probabilities, columns=bundle.classes),
                      pd.DataFrame({"unassessable": pd.Series(reasons, dtype=object)})], axis=1)


def gate_summary(predictions: pd.DataFrame) -> dict:
    """What the gate stopped: how many images (share, 95% interval), melanomas among them, and
    how many for each reason."""
    stopped = predictions["unassessable"].notna().to_numpy()
    reasons = predictions["unassessable"].dropna().map(reason_kind).value_counts()
    return {**share(stopped),
            "melanomas_stopped": int((stopped & (predictions["label"] == MELANOMA)).sum()),
            "by_reason": reasons.to_dict()}


def tiers(bundle: Bundle, predictions: pd.DataFrame) -> dict:
    """Each tier's sensitivity, specificity and share of images (with intervals) and what it
    gives per 1,000 images of this set's case mix."""
    score = predictions[MELANOMA].to_numpy()
    positive = (predictions["label"] == MELANOMA).to_numpy()
    out = {}
    for name, threshold in (("alert", bundle.threshold), ("review", bundle.review_threshold)):
        point = tier_point(score, positive, threshold)
        caught = int((score[positive] >= threshold).sum())
        out[name] = {**point, "per_1000_images": {
            "flagged": round(1000 * point["share"], 1),
            "melanomas_caught": round(1000 * caught / len(score), 1),
            "melanomas_missed": round(1000 * (int(positive.sum()) - caught) / len(score), 1)}}
    return out


def evaluate(bundle: Bundle, records: pd.DataFrame, data: str = "", progress=None
             ) -> tuple[dict, pd.DataFrame]:
    """Drop seen images, screen the rest (gate, then model), and compute the metrics on the
    images the gate let through; returns (result, their predictions)."""
    unknown = sorted(set(records["label"]) - set(bundle.classes))
    if unknown:
        raise ValueError(f"labels the model does not know: {unknown}")
    kept, by_id, near = drop_seen(records, bundle)
    if kept.empty:
        raise ValueError("no images left to evaluate after dropping the model's training images")
    screened = predict_records(bundle, kept, progress)
    predictions = screened[screened["unassessable"].isna()].reset_index(drop=True)
    labels = predictions["label"].map({name: i for i, name in enumerate(bundle.classes)}).to_numpy()
    result = {
        "model": {"name": bundle.metadata.get("name", ""), "version": bundle.version,
                  "path": str(bundle.path)},
        "data": data,
        "images_given": len(records),
        "dropped_training_ids": by_id,
        "dropped_near_duplicates": near,
        "gate": gate_summary(screened),
        **screening_metrics(predictions[bundle.classes].to_numpy(), labels, bundle.classes,
                            bundle.threshold),
        "tiers": tiers(bundle, predictions),
        "classes": bundle.classes,
    }
    return result, predictions


def compare(bundle: Bundle, other: Bundle, records: pd.DataFrame, data: str = "",
            progress=None, drop_training: bool = True) -> dict:
    """The melanoma AUCs of two bundles on the same images, their difference and its 95%
    interval (``auc_difference_interval``: paired), over all images, within each image
    collection (``datasets.acquisition``) and within each source of each collection
    (``datasets.sources_within_collections``) that holds both classes, with the mean of
    the differences within each. The images are those neither bundle was trained on, or all of
    ``records`` without ``drop_training`` (a validation fold, which both bundles' training pools
    list but neither trained on)."""
    kept = drop_seen(drop_seen(records, bundle)[0], other)[0] if drop_training else records
    positive = (kept["label"] == MELANOMA).to_numpy()
    if not 0 < positive.sum() < len(kept):
        raise ValueError("comparing AUCs needs melanomas and other images the models were not trained on")
    scores = [predict_records(model, kept, progress, gate=False)[MELANOMA].to_numpy()
              for model in (bundle, other)]
    groups = {"collection": acquisition(kept).to_numpy(), "source": sources_within_collections(kept)}
    parts = {kind: {name: auc_comparison([score[mine] for score in scores], positive[mine])
                    for name in sorted(set(names))
                    for mine in [names == name] if 0 < positive[mine].sum() < mine.sum()}
             for kind, names in groups.items()}
    return {
        "data": data, "models": [f"{model.metadata.get('name', '')} {model.version}" for model in (bundle, other)],
        **auc_comparison(scores, positive),
        **{f"by_{kind}": part for kind, part in parts.items()},
        **{f"within_{kind}_mean_difference": float(np.mean([c["difference"] for c in part.values()]))
           if part else None for kind, part in parts.items()},
    }


def auc_comparison(scores: list[np.ndarray], positive: np.ndarray) -> dict:
    """Two models' melanoma AUCs on the same images (``scores``: one array per model), their
    difference and its paired 95% interval."""
    aucs = [ranked_auc(score[positive], score[~positive]) for score in scores]
    return {
        "n": len(positive), "melanomas": int(positive.sum()),
        "melanoma_auc": [float(auc) for auc in aucs],
        "difference": float(aucs[0] - aucs[1]),
        "difference_ci95": auc_difference_interval(tuple(score[positive] for score in scores),
                                                   tuple(score[~positive] for score in scores)),
    }


def record_metrics(bundle: Bundle, name: str, result: dict) -> None:
    """Store ``result``'s metrics in the bundle's metadata under ``name`` (with the data they
    were measured on and what was dropped) and rewrite the model card."""
    keep = ("n", "melanomas", "accuracy", "balanced_accuracy", "melanoma_auc", "threshold",
            "sensitivity", "specificity", "flagged", "missed_melanomas", "ece", "melanoma_ece", "ci95",
            "gate", "tiers")
    dropped = (f"; dropped {result['dropped_training_ids']} training ids and "
               f"{result['dropped_near_duplicates']} near-duplicates of training images")
    metadata = json.loads((bundle.path / METADATA_FILE).read_text())
    metadata["metrics"][name] = {**{key: result[key] for key in keep},
                                 "data": result["data"] + dropped}
    (bundle.path / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    if "training" in metadata:  # cards of bundles made by dermscreen train, by their trainer
        (bundle.path / CARD_FILE).write_text(model_card(metadata))
    bundle.metadata = metadata
