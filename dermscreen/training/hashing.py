"""Content and perceptual hashes of image files, cached on disk so reruns are fast.

The content hash (sha256 of the bytes) finds exact copies. The perceptual hash is ImageHash's
pHash of the grayscale image with a 16x16 DCT (256 bits): it survives recolouring, JPEG
re-encoding and resizing, so a small Hamming distance between two hashes means "the same
picture". The 64-bit pHash is too coarse for dermoscopy (a dark blob on skin): unrelated
lesions often sit 2-6 bits apart. On isic9 + extra, 256-bit pairs at <= 36 bits were checked by
eye to be the same picture (one look-alike in ~35 pairs); from ~40 bits unrelated lesions
appear. The cache is a JSON file under ``$DERMSCREEN_HOME/cache`` keyed by path, size and
modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermscreen.config import Config

HASH_SIZE = 16  # pHash side: HASH_SIZE**2 bits
# Hamming distance (of 256 bits) at or below which two pHashes are near-duplicates.
NEAR_DUPLICATE_BITS = 36
CACHE_FILE = f"image-hashes-phash{HASH_SIZE}.json"


def default_cache_dir() -> Path:
    return Config.from_env().home / "cache"


def hash_file(path: str) -> dict:
    """sha256 and pHash of one file; ``error`` holds why it could not be read ("" if it could)."""
    import imagehash  # here: a machine that only trains a packed run (portable.py) needs none

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return {"sha256": "", "phash": "", "error": f"{type(error).__name__}: {error}"}
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "phash": "", "error": ""}
    try:
        with Image.open(path) as image:
            image.load()
            entry["phash"] = str(imagehash.phash(image.convert("L"), hash_size=HASH_SIZE))
    except Exception as error:  # Pillow raises many types for broken files
        entry["error"] = f"{type(error).__name__}: {error}"
    return entry


def hash_files(paths, cache_dir: str | os.PathLike | None = None, progress=None) -> pd.DataFrame:
    """Hash every path (cached); returns a DataFrame indexed like ``paths`` with columns
    ``sha256``, ``phash`` (hex, "" when unreadable) and ``error``.

    ``progress`` is an optional callable taking (done, total).
    """
    cache_path = Path(cache_dir or default_cache_dir()) / CACHE_FILE
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    paths = list(paths)
    rows, changed = [], False
    for done, path in enumerate(paths, 1):
        try:
            stat = os.stat(path)
            key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:
            key = None
        if key and key in cache:
            entry = cache[key]
        else:
            entry = hash_file(path)
            if key:
                cache[key], changed = entry, True
        rows.append(entry)
        if progress and (done % 500 == 0 or done == len(paths)):
            progress(done, len(paths))
    if changed:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_path)
    return pd.DataFrame(rows, columns=["sha256", "phash", "error"])


def hamming_pairs(hex_hashes, max_bits: int = NEAR_DUPLICATE_BITS, chunk: int = 256):
    """Index pairs (i < j) and distances of hex pHashes at Hamming distance <= ``max_bits``.

    Returns an int array of rows (i, j, bits). All pairs are compared with numpy (XOR of the
    packed 64-bit words, then popcount) in row chunks: 10k hashes take about two seconds.
    """
    hex_hashes = list(hex_hashes)
    if not hex_hashes:
        return np.zeros((0, 3), dtype=np.int64)
    words = np.frombuffer(b"".join(bytes.fromhex(value) for value in hex_hashes), dtype=np.uint64)
    words = words.reshape(len(hex_hashes), -1)
    found = []
    for start in range(0, len(words), chunk):
        block = words[start:start + chunk]
        bits = sum(np.bitwise_count(block[:, None, k] ^ words[None, :, k]).astype(np.int64)
                   for k in range(words.shape[1]))
        rows, cols = np.nonzero(bits <= max_bits)
        keep = rows + start < cols
        rows, cols = rows[keep], cols[keep]
        found.append(np.stack([rows + start, cols, bits[rows, cols]], axis=1))
    return np.concatenate(found)
