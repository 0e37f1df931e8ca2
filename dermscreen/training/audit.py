"""Data audit: what is wrong with a set of labelled images before anything is trained on it.

    dermscreen audit ../shared/data/isic9 ../shared/data/extra/labels.csv \\
        --reference ../shared/data/reference_labels.csv [--json]

Finds exact duplicates (content hash), image ids filed under several classes, ids on both sides of
a split, near-duplicates across everything given (perceptual hash, see ``hashing``), unreadable
files and disagreements with a reference label file (``image_id`` plus one label column).
``run_audit`` returns a dict whose top-level numbers are the report; ``details`` holds the lists.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dermscreen.training.hashing import NEAR_DUPLICATE_BITS, hamming_pairs, hash_files

# (label, reference label) pairs that are not disagreements: the ISIC 2019 reference has one
# "benign keratosis" class (mapped to "pigmented benign keratosis") that includes seborrheic ones.
COMPATIBLE_LABELS = {("seborrheic keratosis", "pigmented benign keratosis")}

SUMMARY_KEYS = [
    "images", "distinct_ids", "exact_duplicate_groups", "ids_in_several_classes", "split_leaks",
    "lesion_split_leaks", "near_duplicate_groups", "near_duplicate_cross_source_groups",
    "near_duplicate_split_leaks", "unreadable", "reference_disagreements",
]


def read_reference(path: str | os.PathLike) -> pd.Series:
    """A reference label file as a Series image_id -> label (its first non-id column)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    label_column = next(column for column in table.columns if column != "image_id")
    return table.drop_duplicates("image_id").set_index("image_id")[label_column]


def disagrees_with_reference(labels, reference_labels) -> np.ndarray:
    """Per pair: True where a reference label exists and differs (compatible pairs agree)."""
    return np.array([
        isinstance(ref, str) and ref != "" and label != ref and (label, ref) not in COMPATIBLE_LABELS
        for label, ref in zip(labels, reference_labels)
    ], dtype=bool)


def with_hashes(records: pd.DataFrame, cache_dir=None, progress=None) -> pd.DataFrame:
    """``records`` plus the ``sha256``, ``phash`` and ``error`` columns of ``hashing.hash_files``."""
    hashes = hash_files(records["path"], cache_dir=cache_dir, progress=progress)
    return pd.concat([records.reset_index(drop=True), hashes], axis=1)


def near_duplicate_components(hashed: pd.DataFrame, max_bits: int = NEAR_DUPLICATE_BITS) -> np.ndarray:
    """Connected-component label per row: rows joined by a pHash distance <= ``max_bits``.

    Unreadable rows are their own component.
    """
    readable = np.flatnonzero(hashed["phash"].to_numpy() != "")
    pairs = hamming_pairs(hashed["phash"].iloc[readable], max_bits)
    n = len(hashed)
    rows, cols = readable[pairs[:, 0]], readable[pairs[:, 1]]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _values(frame: pd.DataFrame, column: str) -> list[str]:
    return sorted(value for value in frame[column].unique() if value != "")


def run_audit(records: pd.DataFrame, reference: pd.Series | None = None, cache_dir=None,
              progress=None, max_bits: int = NEAR_DUPLICATE_BITS) -> dict:
    """Audit a record table (see ``datasets``); returns the summary numbers plus ``details``."""
    hashed = with_hashes(records, cache_dir, progress)
    readable = hashed[hashed["error"] == ""]
    details: dict[str, list] = {}

    by_content = readable.groupby("sha256")
    details["exact_duplicate_groups"] = [
        sorted(group["path"]) for _, group in by_content if len(group) > 1
    ]
    labels_per_id = hashed.groupby("image_id")["label"].unique()
    details["ids_in_several_classes"] = [
        {"image_id": image_id, "labels": sorted(labels)}
        for image_id, labels in labels_per_id.items() if len(labels) > 1
    ]
    with_split = hashed[hashed["split"] != ""]
    details["split_leaks"] = [
        {"image_id": image_id, "splits": _values(group, "split"), "labels": _values(group, "label")}
        for image_id, group in with_split.groupby("image_id") if group["split"].nunique() > 1
    ]
    with_lesion = with_split[with_split["lesion_id"] != ""]
    details["lesion_split_leaks"] = [
        {"lesion_id": lesion, "splits": _values(group, "split")}
        for lesion, group in with_lesion.groupby("lesion_id") if group["split"].nunique() > 1
    ]

    hashed["near_duplicate_group"] = near_duplicate_components(hashed, max_bits)
    groups = []
    for _, group in hashed.groupby("near_duplicate_group"):
        if group["image_id"].nunique() > 1:
            groups.append({"image_ids": _values(group, "image_id"), "sources": _values(group, "source"),
                           "splits": _values(group, "split"), "labels": _values(group, "label")})
    details["near_duplicate_groups"] = groups
    details["near_duplicate_cross_source_groups"] = [g for g in groups if len(g["sources"]) > 1]
    details["near_duplicate_split_leaks"] = [g for g in groups if len(g["splits"]) > 1]

    details["unreadable"] = [
        {"path": row.path, "error": row.error} for row in hashed[hashed["error"] != ""].itertuples()
    ]
    disagreements = []
    if reference is not None:
        known = hashed[hashed["image_id"].isin(reference.index)]
        expected = reference.reindex(known["image_id"]).to_numpy()
        flags = disagrees_with_reference(known["label"], expected)
        for row, label, flag in zip(known.itertuples(), expected, flags):
            if flag:
                disagreements.append({"image_id": row.image_id, "path": row.path,
                                      "label": row.label, "reference": label})
    details["reference_disagreements"] = disagreements

    summary = {"images": len(hashed), "distinct_ids": int(hashed["image_id"].nunique())}
    summary.update({key: len(details[key]) for key in SUMMARY_KEYS[2:]})
    summary["reference_checked"] = reference is not None
    summary["near_duplicate_max_bits"] = max_bits
    summary["details"] = details
    return summary


def format_report(result: dict, examples: int = 5) -> str:
    """The audit as readable text: counts, then a few examples of each finding."""
    lines = ["Data audit", "=========="]
    for key in SUMMARY_KEYS:
        if key == "reference_disagreements" and not result["reference_checked"]:
            lines.append(f"{key.replace('_', ' '):38s} (no --reference given)")
            continue
        lines.append(f"{key.replace('_', ' '):38s} {result[key]}")
    for key, items in result["details"].items():
        if not items:
            continue
        lines += ["", f"{key.replace('_', ' ')} (first {min(examples, len(items))} of {len(items)}):"]
        for item in items[:examples]:
            if isinstance(item, dict):
                lines.append("  " + "; ".join(f"{k}: {_short(v)}" for k, v in item.items()))
            else:
                lines.append("  " + _short(item))
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, list):
        text = ", ".join(str(v) for v in value[:6])
        return f"[{text}{', ...' if len(value) > 6 else ''}]"
    return str(value)
