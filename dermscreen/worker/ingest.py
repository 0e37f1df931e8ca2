"""Ingest: turn a batch's uploads into stored, validated images queued for inference.

    with sessions.begin() as session:
        chunks = ingest(session, config, batch_id)    # lists of image ids
    for image_ids in chunks:                          # after the commit
        enqueue_chunk(config, image_ids)

Every upload becomes Image rows: one per image (an upload that is an image, or each file of an
archive, named with its archive: ``a.zip/lesions/img001.jpg``), ``queued`` once stored, ``failed``
with the reason when it is not a real image; a refused archive is one failed row naming the archive
and why. A DICOM instance is stored as its pixels with its UIDs (``dermscreen.worker.dicom``); a
DICOMDIR index file is skipped, the instances it lists are files of their own. Good images of a
batch never wait on its bad ones. Running ingest again for a batch already ingested only returns its still-queued images.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dermscreen.config import Config
from dermscreen.db.base import utcnow
from dermscreen.db.screening import Batch, BatchStatus, Image, ImageStatus
from dermscreen.storage import ObjectMissing, Store, store_for
from dermscreen.submissions import MANIFEST, metadata_for, read_metadata
from dermscreen.worker.archives import ArchiveError, ArchiveLimits, archive_kind, extract_archive
from dermscreen.worker.dicom import DicomReference, dicom_to_png, is_dicom, is_dicomdir
from dermscreen.worker.imagestore import ImageRejected, StoredImage, store_image


@dataclass(frozen=True)
class Candidate:
    """A file that should be an image: its name as the hospital knows it (an archive member's
    with its archive's, so two archives that each hold ``img001.jpg`` stay apart), and where it
    is."""

    name: str
    path: Path


def chunked(ids: list[str], size: int) -> list[list[str]]:
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def queued_chunks(session: Session, config: Config, batch_id: str) -> list[list[str]]:
    ids = session.scalars(select(Image.id).where(Image.batch_id == batch_id,
                                                 Image.status == ImageStatus.QUEUED)
                          .order_by(Image.created_at, Image.id)).all()
    return chunked(list(ids), config.chunk_size)


def _read_manifest(store: Store, upload_dir: str) -> tuple[list[dict], dict[str, dict]]:
    manifest = json.loads(store.read(f"{upload_dir}/{MANIFEST}"))
    metadata = {}
    if manifest.get("metadata"):
        metadata = read_metadata(io.BytesIO(store.read(f"{upload_dir}/{manifest['metadata']}")))
    return manifest["files"], metadata


def _candidates(upload: Path, name: str, work_dir: Path, limits: ArchiveLimits,
                rejected: list[tuple[str, str]]) -> list[Candidate]:
    """The image candidates in one upload; a refused archive goes to ``rejected``."""
    if archive_kind(upload, name) is None:
        return [Candidate(name, upload)]
    try:
        members = extract_archive(upload, work_dir, limits, name)
    except ArchiveError as error:
        rejected.append((name, f"archive refused: {error}"))
        return []
    if not members:
        rejected.append((name, "archive refused: it holds no files"))
    candidates = []
    for member in members:
        member_name = f"{name}/{member.name}"
        if archive_kind(member.path, member.name) is None:
            candidates.append(Candidate(member_name, member.path))
        else:
            rejected.append((member_name, "an archive inside an archive is not unpacked"))
    return candidates


def _store(candidate: Candidate, store: Store, config: Config,
           work: Path) -> tuple[StoredImage, DicomReference | None]:
    """Store the candidate's pixels; a DICOM instance is turned into a PNG of its pixels first,
    and its references come back with it."""
    if not is_dicom(candidate.path):
        return store_image(candidate.path, store, config.max_image_pixels), None
    with tempfile.NamedTemporaryFile(dir=work, suffix=".png") as pixels:
        reference = dicom_to_png(candidate.path, Path(pixels.name), config.max_image_pixels)
        return store_image(Path(pixels.name), store, config.max_image_pixels), reference


def ingest(session: Session, config: Config, batch_id: str,
           on_upload: Callable[[int], None] = lambda count: None) -> list[list[str]]:
    """Unpack and validate the batch's uploads; return its queued image ids in chunks.

    ``on_upload(1)`` is called as each upload is done (progress). The caller commits, then
    enqueues the chunks.
    """
    claimed = session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.status == BatchStatus.RECEIVED)
        .values(status=BatchStatus.PROCESSING)
    ).rowcount
    if not claimed:  # already ingested (a redelivered message), or unknown
        return queued_chunks(session, config, batch_id)
    batch = session.get(Batch, batch_id)
    store = store_for(config)
    try:
        files, metadata = _read_manifest(store, batch.upload_dir)
    except (OSError, ValueError) as error:
        batch.status, batch.error, batch.completed_at = BatchStatus.FAILED, str(error), utcnow()
        return []

    limits = ArchiveLimits.from_config(config)
    now = utcnow()
    images: list[Image] = []
    work_root = config.home / "work"  # this node's scratch space: uploads are copied here
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_root) as work:
        for index, entry in enumerate(files):
            rejected: list[tuple[str, str]] = []
            try:
                upload = store.download(f"{batch.upload_dir}/{entry['path']}",
                                        Path(work) / f"{index}.upload")
            except ObjectMissing:
                rejected.append((entry["name"], "upload missing from the store"))
                upload = None
            candidates = [] if upload is None else _candidates(
                upload, entry["name"], Path(work) / str(index), limits, rejected)
            for name, reason in rejected:
                images.append(Image(batch_id=batch.id, hospital_id=batch.hospital_id,
                                    original_name=name[:500], status=ImageStatus.FAILED,
                                    error=reason))
            for candidate in candidates:
                if is_dicomdir(candidate.path):  # a DICOMDIR's index; its instances are files
                    continue
                image = Image(batch_id=batch.id, hospital_id=batch.hospital_id,
                              original_name=candidate.name[:500],
                              details=metadata_for(metadata, candidate.name))
                try:
                    stored, reference = _store(candidate, store, config, Path(work))
                except ImageRejected as error:
                    image.status, image.error = ImageStatus.FAILED, str(error)
                else:
                    image.status, image.queued_at = ImageStatus.QUEUED, now
                    image.content_hash, image.stored_path = stored.content_hash, stored.ref
                    image.width, image.height = stored.width, stored.height
                    if reference:
                        image.dicom_study_uid = reference.study_uid
                        image.dicom_series_uid = reference.series_uid
                        image.dicom_sop_instance_uid = reference.sop_instance_uid
                        image.dicom_sop_class_uid = reference.sop_class_uid
                images.append(image)
            on_upload(1)
    session.add_all(images)
    batch.total_images = len(images)
    batch.failed_images = sum(image.status is ImageStatus.FAILED for image in images)
    if batch.failed_images == batch.total_images:
        batch.status, batch.completed_at = BatchStatus.DONE, utcnow()
        if not images:
            batch.error = "the batch holds no files"
    session.flush()
    return chunked([image.id for image in images if image.status is ImageStatus.QUEUED],
                   config.chunk_size)


def remove_uploads(config: Config, batch_upload_dir: str) -> None:
    """Delete a batch's original uploads (with their EXIF) once its ingest has committed."""
    store_for(config).delete_tree(batch_upload_dir)
