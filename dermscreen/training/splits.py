"""Cleaning policy and honest, grouped, seeded splits.

Cleaning (``clean_records``), in this order:

1. Unreadable files are dropped.
2. Label conflicts (one image id, or one picture by content hash, filed under several classes)
   and disagreements with the reference label file are settled by ``policy``:
   ``"reference"`` (default): the reference label (the official ISIC 2019 ground truth) wins for
   every id it covers, records are relabelled to it (a seborrheic keratosis the reference calls
   benign keratosis keeps its finer label); conflicting ids it does not cover are dropped.
   ``"drop"``: every id in conflict or in disagreement with the reference is dropped.
3. Exact copies (same content hash) collapse to one record (the first path in sort order).

Splits never cut a group: records are grouped by image id, lesion id, content hash and
near-duplicate cluster (pHash, see ``hashing``), and ``grouped_split`` hands whole groups to
validation with scikit-learn's ``StratifiedGroupKFold`` under a fixed seed::

    hashed, log = clean_records(read_dataset("../shared/data/isic9", split="train"), reference)
    hashed["group"] = group_ids(hashed)
    hashed["split"] = grouped_split(hashed, hashed["group"], val_fraction=0.15, seed=0)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from dermscreen.training.audit import disagrees_with_reference, near_duplicate_components, with_hashes
from dermscreen.training.hashing import NEAR_DUPLICATE_BITS

POLICIES = ("reference", "drop")


def clean_records(records: pd.DataFrame, reference: pd.Series | None = None,
                  policy: str = "reference", cache_dir=None) -> tuple[pd.DataFrame, dict]:
    """Apply the cleaning policy; returns the hashed, cleaned records and a log of counts."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    hashed = with_hashes(records, cache_dir)
    log = {"input": len(hashed), "policy": policy}
    readable = hashed["error"] == ""
    log["dropped_unreadable"] = int((~readable).sum())
    hashed = hashed[readable].copy()

    # An id is in conflict when it, or a file with the same content, carries several labels.
    hashed["conflict_key"] = linked_components([hashed["image_id"], hashed["sha256"]])
    conflicted = hashed.groupby("conflict_key")["label"].transform("nunique") > 1
    reference_label = (reference.reindex(hashed["image_id"]).to_numpy() if reference is not None
                       else np.full(len(hashed), np.nan, dtype=object))
    has_reference = np.array([isinstance(label, str) and label != "" for label in reference_label])
    disagrees = disagrees_with_reference(hashed["label"], reference_label)
    log["conflicting_ids"] = int(hashed.loc[conflicted, "conflict_key"].nunique())
    log["reference_disagreements"] = int(disagrees.sum())
    if policy == "reference":
        # conflicts the reference settles keep the reference label; compatible labels stay
        drop = conflicted.to_numpy() & ~has_reference
        settle = disagrees | (conflicted.to_numpy() & has_reference)
        hashed.loc[settle, "label"] = reference_label[settle]
        log["relabelled_by_reference"] = int(disagrees.sum())
    else:
        bad_keys = set(hashed.loc[conflicted | disagrees, "conflict_key"])
        drop = hashed["conflict_key"].isin(bad_keys).to_numpy()
    log["dropped_for_labels"] = int(drop.sum())
    hashed = hashed[~drop]

    before = len(hashed)
    hashed = hashed.sort_values("path").drop_duplicates("sha256").drop(columns="conflict_key")
    log["dropped_exact_copies"] = before - len(hashed)
    hashed = hashed.sort_values(["label", "image_id"]).reset_index(drop=True)
    log["output"] = len(hashed)
    return hashed, log


def group_ids(hashed: pd.DataFrame, max_bits: int = NEAR_DUPLICATE_BITS) -> np.ndarray:
    """One integer group per row: rows sharing an image id, lesion id, content hash or
    near-duplicate cluster (transitively) share a group. ``hashed`` comes from ``clean_records``
    or ``audit.with_hashes``."""
    keys = [hashed["image_id"], hashed["sha256"], hashed["lesion_id"].replace("", np.nan),
            pd.Series(near_duplicate_components(hashed, max_bits), index=hashed.index)]
    return linked_components(keys)


def linked_components(keys: list[pd.Series]) -> np.ndarray:
    """Component per row of the graph joining rows that share a value in any of ``keys``
    (missing values join nothing)."""
    n = len(keys[0])
    rows, cols = [], []
    for key in keys:
        codes = pd.factorize(key.reset_index(drop=True))[0]
        valid = np.flatnonzero(codes >= 0)
        first = pd.Series(valid).groupby(codes[valid]).transform("first").to_numpy()
        rows.append(valid)
        cols.append(first)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def grouped_split(records: pd.DataFrame, groups, val_fraction: float = 0.15,
                  seed: int = 0) -> np.ndarray:
    """``"train"`` / ``"val"`` per record; no group is cut, class shares are kept close.

    Uses ``StratifiedGroupKFold`` with ``round(1 / val_fraction)`` folds and takes the first
    fold as validation, so the same seed always gives the same split.
    """
    folds = max(2, round(1 / val_fraction))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, val_index = next(splitter.split(np.zeros(len(records)), records["label"], groups))
    split = np.full(len(records), "train", dtype=object)
    split[val_index] = "val"
    return split


def drop_overlap(records: pd.DataFrame, others: pd.DataFrame,
                 max_bits: int = NEAR_DUPLICATE_BITS) -> tuple[pd.DataFrame, int]:
    """Remove from ``records`` every row grouped (see ``group_ids``) with a row of ``others``:
    the honest way to use a test set next to a training set. Both are hashed tables.
    Returns the kept rows and how many were removed."""
    both = pd.concat([records.assign(_side=0), others.assign(_side=1)], ignore_index=True)
    both["_group"] = group_ids(both, max_bits)
    touched = set(both.loc[both["_side"] == 1, "_group"])
    mine = both[both["_side"] == 0]
    keep = ~mine["_group"].isin(touched).to_numpy()
    return records[keep].reset_index(drop=True), int((~keep).sum())
