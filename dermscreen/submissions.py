"""Batch submission: store what a hospital uploaded and write the Batch row, nothing more.

Unpacking, validating and scoring are the worker's (``screening.ingest``). The uploads go to the
store (dermscreen.storage); ``Batch.upload_dir`` is the store's reference to their "folder"::

    uploads/<batch id>/
        files/0000, files/0001, ...   each upload as sent, numbered; its name is never a path
        metadata.csv                  the optional per-image metadata CSV, as sent
        manifest.json                 {"files": [{"name", "path", "bytes", "sha256"}],
                                       "metadata": "metadata.csv" or null}

The caller commits, then enqueues (never before the commit)::

    check_upload(files, metadata_csv)            # raises UploadRefused(status, reasons)
    batch = submit_batch(session, config, hospital_id, files, metadata_csv, token_id=token.id)
    session.commit()
    enqueue_ingest(config, batch.id)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import PurePosixPath
from typing import BinaryIO, Iterable

from sqlalchemy.orm import Session

from dermscreen import metrics
from dermscreen.config import Config
from dermscreen.db import audit
from dermscreen.db.base import new_uid
from dermscreen.db.screening import Batch, BatchStatus
from dermscreen.storage import Store, store_for

MANIFEST = "manifest.json"
METADATA = "metadata.csv"
METADATA_NAME_COLUMNS = ("image", "filename")
# How many leading bytes tell a file's kind (a DICOM file's magic ends at byte 132).
HEAD_BYTES = 132
# Leading bytes of the image formats the worker accepts, and of zip and gzip (tar.gz) archives.
SIGNATURES = {
    b"\xff\xd8\xff": "image",           # JPEG
    b"\x89PNG\r\n\x1a\n": "image",      # PNG
    b"II*\x00": "image",                # TIFF, little-endian
    b"MM\x00*": "image",                # TIFF, big-endian
    b"BM": "image",                     # BMP
    b"PK\x03\x04": "archive",           # zip
    b"PK\x05\x06": "archive",           # empty zip
    b"\x1f\x8b": "archive",             # gzip (tar.gz, tgz)
}

Upload = tuple[str, BinaryIO]


class UploadRefused(ValueError):
    """A submission refused before anything is stored: an HTTP status and the reasons."""

    def __init__(self, status: int, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.status = status
        self.reasons = reasons


def display_name(filename: str | None, index: int, keep_folders: bool = False) -> str:
    """The upload's name as a label, never a path that is opened: its last path component, or
    with ``keep_folders`` its relative path (without empty, '.' or '..' parts); else
    ``upload-<n>``.

    A client's names are cut to the file name (a browser may send a full local path);
    ``dermscreen screen`` keeps the folders under the one it screens, so that two ``a.png`` in
    different sub-folders stay apart.
    """
    path = PurePosixPath((filename or "").replace("\\", "/"))
    if keep_folders:
        name = "/".join(part for part in path.parts if part not in ("/", ".."))
    else:
        name = path.name
    return (name.strip() or f"upload-{index}")[:500]


def upload_kind(head: bytes) -> str | None:
    """``"image"``, ``"archive"`` or None, from a file's first bytes (HEAD_BYTES of them: a DICOM
    file says ``DICM`` after its 128-byte preamble)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[128:132] == b"DICM":
        return "image"
    for signature, kind in SIGNATURES.items():
        if head.startswith(signature):
            return kind
    return None


def _peek(stream: BinaryIO, size: int = HEAD_BYTES) -> bytes:
    head = stream.read(size)
    stream.seek(0)
    return head


def read_metadata(stream: BinaryIO) -> dict[str, dict]:
    """Parse a metadata CSV into ``{image name: {column: value}}``; raise UploadRefused (400)."""
    try:
        text = stream.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadRefused(400, ["metadata: not a UTF-8 CSV file"]) from None
    finally:
        stream.seek(0)
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [column.strip() for column in reader.fieldnames or []]
        key = next((column for column in METADATA_NAME_COLUMNS if column in header), None)
        if key is None:
            raise UploadRefused(400, [f"metadata: needs an 'image' or 'filename' column, "
                                      f"found {header or 'no header'}"])
        reader.fieldnames = header
        metadata: dict[str, dict] = {}
        for line, row in enumerate(reader, start=2):
            name = (row.pop(key) or "").strip()
            if not name:
                raise UploadRefused(400, [f"metadata line {line}: empty '{key}'"])
            if name in metadata:
                raise UploadRefused(400, [f"metadata line {line}: '{name}' listed twice"])
            metadata[name] = {column: value for column, value in row.items() if column}
    except csv.Error as error:
        raise UploadRefused(400, [f"metadata: malformed CSV: {error}"]) from None
    return metadata


def metadata_for(metadata: dict[str, dict], name: str) -> dict | None:
    """The metadata row for an image named ``name``: by its full name, by any ending of its path
    (an archive member ``a.zip/lesions/x.jpg`` by ``lesions/x.jpg`` or ``x.jpg``), or by its file
    name sans suffix."""
    path = PurePosixPath(name.replace("\\", "/"))
    endings = ["/".join(path.parts[start:]) for start in range(1, len(path.parts))]
    for candidate in (name, *endings, path.stem):
        if candidate in metadata:
            return metadata[candidate]
    return None


def check_upload(files: list[Upload], metadata_csv: BinaryIO | None = None) -> None:
    """Refuse a submission with no files, an empty file, a file that is neither an image nor a
    zip/tar.gz archive (415), or a malformed metadata CSV (400). Streams are left at 0."""
    if not files:
        raise UploadRefused(400, ["no files: send images or archives as 'files' form fields"])
    empty, unsupported = [], []
    for index, (filename, stream) in enumerate(files):
        head = _peek(stream)
        name = display_name(filename, index)
        if not head:
            empty.append(f"{name}: empty file")
        elif upload_kind(head) is None:
            unsupported.append(f"{name}: not a JPEG, PNG, TIFF, BMP, WebP or DICOM image, "
                               f"nor a zip or tar.gz archive")
    if empty:
        raise UploadRefused(400, empty)
    if unsupported:
        raise UploadRefused(415, unsupported)
    if metadata_csv is not None:
        read_metadata(metadata_csv)


class _Digesting:
    """A read-only stream that counts and hashes what is read through it."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.digest, self.size = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        block = self.stream.read(size)
        self.digest.update(block)
        self.size += len(block)
        return block


def _store_uploads(files: Iterable[Upload], metadata_csv: BinaryIO | None, store: Store,
                   prefix: str, keep_folders: bool) -> dict:
    manifest: dict = {"files": [], "metadata": None}
    for index, (filename, stream) in enumerate(files):
        relative = f"files/{index:04d}"
        digesting = _Digesting(stream)
        store.put_stream(f"{prefix}/{relative}", digesting)
        manifest["files"].append({"name": display_name(filename, index, keep_folders),
                                  "path": relative, "bytes": digesting.size,
                                  "sha256": digesting.digest.hexdigest()})
    if metadata_csv is not None:
        store.put_stream(f"{prefix}/{METADATA}", metadata_csv)
        manifest["metadata"] = METADATA
    store.put(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    return manifest


def submit_batch(session: Session, config: Config, hospital_id: int, files: Iterable[Upload],
                 metadata_csv: BinaryIO | None = None, token_id: int | None = None,
                 user_id: int | None = None, keep_folders: bool = False) -> Batch:
    """Stream the uploads to the store, under the batch's folder, and add the Batch row (received).

    ``keep_folders``: the upload names are paths relative to a folder the caller chose
    (``dermscreen screen``), kept as labels; otherwise each is cut to its file name.
    """
    batch_id = new_uid()
    store, prefix = store_for(config), f"uploads/{batch_id}"
    upload_dir = store.ref(prefix)
    try:
        manifest = _store_uploads(files, metadata_csv, store, prefix, keep_folders)
    except BaseException:
        store.delete_tree(upload_dir)  # a broken upload leaves nothing behind
        raise

    batch = Batch(id=batch_id, hospital_id=hospital_id, status=BatchStatus.RECEIVED,
                  upload_dir=upload_dir, submitted_by_token_id=token_id,
                  submitted_by_user_id=user_id)
    session.add(batch)
    session.flush()
    audit.record(session, "submit", batch, token_id=token_id, user_id=user_id,
                 files=len(manifest["files"]), metadata=manifest["metadata"] is not None)
    metrics.BATCHES_SUBMITTED.inc()
    return batch
