"""Ingest: turn a batch's uploads into stored, validated images queued for inference, a chunk
at a time, so that workers score the first chunk while the rest is unpacked.

    ingest(sessions, config, batch_id, on_chunk=lambda ids: enqueue_chunks(config, [ids]))

Every upload becomes Image rows: one per image (an upload that is an image, or each file of an
archive, named with its archive: ``a.zip/lesions/img001.jpg``), ``queued`` once stored, ``failed``
with the reason when it is not a real image; a refused archive is one failed row naming the archive
and why. A DICOM instance is stored as its pixels with its UIDs (``dermscreen.worker.dicom``); a
DICOMDIR index file is skipped, the instances it lists are files of their own. Good images of a
batch never wait on its bad ones.

These entries come in the same order on every run. Each transaction commits the entries that
make the next chunk (``chunk_size`` queued images), advances ``Batch.ingested_entries`` from the
count it read (so of two ingesters of one batch only one goes on) and renews the ingester's lease
(``chunk_lease_seconds``), before ``on_chunk`` hands out the chunk's queued images. A batch whose
ingester died (its lease passed) is taken over by the next ingest: it hands out again the queued
images of the last chunks, skips the entries committed, and goes on. ``ingested_at`` marks the end;
the batch closes only after it.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dermscreen.config import Config
from dermscreen.db.base import utcnow
from dermscreen.db.screening import Batch, BatchStatus, Image, ImageStatus
from dermscreen.storage import ObjectMissing, Store, store_for
from dermscreen.submissions import MANIFEST, metadata_for, read_metadata
from dermscreen.worker.archives import ArchiveError, ArchiveLimits, archive_kind, extract_archive
from dermscreen.worker.batches import add_counts, close_if_complete
from dermscreen.worker.dicom import DicomReference, dicom_to_png, is_dicom, is_dicomdir
from dermscreen.worker.imagestore import ImageRejected, StoredImage, store_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One outcome of unpacking: a file to store as an image, or a name refused with a reason."""

    name: str
    path: Path | None = None
    reason: str | None = None


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


def _upload_entries(upload: Path, name: str, work_dir: Path,
                    limits: ArchiveLimits) -> Iterator[Entry]:
    """The entries of one upload: itself, or an archive's files (or why it is refused). A
    DICOMDIR is an index, not an image: the instances it lists are files of their own."""
    if archive_kind(upload, name) is None:
        if not is_dicomdir(upload):
            yield Entry(name, upload)
        return
    try:
        members = extract_archive(upload, work_dir, limits, name)
    except ArchiveError as error:
        yield Entry(name, reason=f"archive refused: {error}")
        return
    if not members:
        yield Entry(name, reason="archive refused: it holds no files")
    for member in members:
        member_name = f"{name}/{member.name}"
        if archive_kind(member.path, member.name) is not None:
            yield Entry(member_name, reason="an archive inside an archive is not unpacked")
        elif not is_dicomdir(member.path):
            yield Entry(member_name, member.path)


def _store(path: Path, store: Store, config: Config,
           work: Path) -> tuple[StoredImage, DicomReference | None]:
    """Store the file's pixels; a DICOM instance is turned into a PNG of its pixels first, and
    its references come back with it."""
    if not is_dicom(path):
        return store_image(path, store, config.max_image_pixels), None
    with tempfile.NamedTemporaryFile(dir=work, suffix=".png") as pixels:
        reference = dicom_to_png(path, Path(pixels.name), config.max_image_pixels)
        return store_image(Path(pixels.name), store, config.max_image_pixels), reference


def _entries(store: Store, upload_dir: str, files: list[dict], work: Path, limits: ArchiveLimits,
             on_upload: Callable[[int], None]) -> Iterator[Entry]:
    """The entries of the uploads, in the same order on every run."""
    for index, entry in enumerate(files):
        try:
            upload = store.download(f"{upload_dir}/{entry['path']}", work / f"{index}.upload")
        except ObjectMissing:
            yield Entry(entry["name"], reason="upload missing from the store")
        else:
            yield from _upload_entries(upload, entry["name"], work / str(index), limits)
        on_upload(1)


def _image(entry: Entry, batch: Batch, metadata: dict[str, dict], store: Store, config: Config,
           work: Path) -> Image:
    """The entry's Image row, its pixels stored: queued, or failed with the reason."""
    image = Image(batch_id=batch.id, hospital_id=batch.hospital_id,
                  original_name=entry.name[:500], status=ImageStatus.FAILED, error=entry.reason)
    if entry.path is None:
        return image
    image.details = metadata_for(metadata, entry.name)
    try:
        stored, reference = _store(entry.path, store, config, work)
    except ImageRejected as error:
        image.error = str(error)
        return image
    image.status, image.queued_at = ImageStatus.QUEUED, utcnow()
    image.content_hash, image.stored_path = stored.content_hash, stored.ref
    image.width, image.height = stored.width, stored.height
    if reference:
        image.dicom_study_uid = reference.study_uid
        image.dicom_series_uid = reference.series_uid
        image.dicom_sop_instance_uid = reference.sop_instance_uid
        image.dicom_sop_class_uid = reference.sop_class_uid
    return image


def _lease(config: Config) -> datetime:
    return utcnow() + timedelta(seconds=config.chunk_lease_seconds)


def claim(session: Session, config: Config, batch_id: str) -> Batch | None:
    """Hold the batch for ingest: one received, or one whose ingester's lease has passed. None
    when it is ingested, held by a live ingester, failed or unknown."""
    stopped = and_(Batch.status == BatchStatus.PROCESSING,
                   or_(Batch.held_until.is_(None), Batch.held_until < utcnow()))
    claimed = session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.ingested_at.is_(None),
                            or_(Batch.status == BatchStatus.RECEIVED, stopped))
        .values(status=BatchStatus.PROCESSING, held_until=_lease(config))
        .execution_options(synchronize_session=False)).rowcount
    return session.get(Batch, batch_id) if claimed else None


def _commit_entries(session: Session, config: Config, batch_id: str, committed: int,
                    images: list[Image]) -> bool:
    """Add the images as the entries after the first ``committed``; False when another
    ingester has gone past them."""
    advanced = session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.ingested_at.is_(None),
                            Batch.ingested_entries == committed)
        .values(ingested_entries=committed + len(images), held_until=_lease(config))
        .execution_options(synchronize_session=False)).rowcount
    if not advanced:
        return False
    session.add_all(images)
    add_counts(session, batch_id, total=len(images),
               failed=sum(image.status is ImageStatus.FAILED for image in images))
    session.flush()
    return True


def _queued(images: list[Image]) -> int:
    return sum(image.status is ImageStatus.QUEUED for image in images)


def _hand_out(sessions: sessionmaker, config: Config, batch_id: str, committed: int,
              images: list[Image], on_chunk: Callable[[list[str]], None]) -> bool:
    """Commit the images as the entries after the first ``committed``, then hand out the queued
    ones; False when another ingester has gone past them."""
    with sessions.begin() as session:
        if not _commit_entries(session, config, batch_id, committed, images):
            return False
    if _queued(images):
        on_chunk([image.id for image in images if image.status is ImageStatus.QUEUED])
    return True


def _finish(session: Session, batch_id: str, committed: int) -> None:
    finished = session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.ingested_at.is_(None),
                            Batch.ingested_entries == committed)
        .values(ingested_at=utcnow(), held_until=None)
        .execution_options(synchronize_session=False)).rowcount
    if finished and not committed:
        session.execute(update(Batch).where(Batch.id == batch_id)
                        .values(error="the batch holds no files")
                        .execution_options(synchronize_session=False))
    close_if_complete(session, batch_id)


def ingest(sessions: sessionmaker, config: Config, batch_id: str,
           on_chunk: Callable[[list[str]], None],
           on_upload: Callable[[int], None] = lambda count: None) -> None:
    """Unpack, validate and store the batch's uploads, a transaction per ``chunk_size`` queued
    images (or twice as many entries, when many are refused); after each commit
    ``on_chunk(queued image ids)``. ``on_upload(1)`` as each upload is done (progress). Returns
    at once when another ingester holds the batch or it is ingested."""
    with sessions.begin() as session:
        batch = claim(session, config, batch_id)
        resumed = queued_chunks(session, config, batch_id) if batch else []
    if batch is None:
        return
    for image_ids in resumed:  # a stopped ingester's chunks, whose messages may be lost
        on_chunk(image_ids)
    store = store_for(config)
    try:
        files, metadata = _read_manifest(store, batch.upload_dir)
    except (OSError, ValueError) as error:
        with sessions.begin() as session:
            session.execute(update(Batch).where(Batch.id == batch_id).values(
                status=BatchStatus.FAILED, error=str(error), completed_at=utcnow(),
                ingested_at=utcnow(), held_until=None))
        return
    try:
        _unpack(sessions, config, batch, files, metadata, store, on_chunk, on_upload)
    except BaseException:
        _release(sessions, batch_id)  # so that a retry takes the batch over at once
        raise


def _release(sessions: sessionmaker, batch_id: str) -> None:
    """End the ingest lease of a batch whose ingest failed: the task's retry, or the
    reconciler's next pass, resumes it."""
    try:
        with sessions.begin() as session:
            session.execute(update(Batch).where(Batch.id == batch_id, Batch.ingested_at.is_(None))
                            .values(held_until=utcnow()))
    except Exception:  # the database is down: the lease runs out instead
        log.warning("could not release the ingest lease of batch %s", batch_id, exc_info=True)


def _unpack(sessions: sessionmaker, config: Config, batch: Batch, files: list[dict],
            metadata: dict[str, dict], store: Store, on_chunk: Callable[[list[str]], None],
            on_upload: Callable[[int], None]) -> None:
    batch_id = batch.id
    limits = ArchiveLimits.from_config(config)
    committed = batch.ingested_entries
    work_root = config.home / "work"  # this node's scratch space: uploads are copied here
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_root) as work:
        entries = _entries(store, batch.upload_dir, files, Path(work), limits, on_upload)
        images: list[Image] = []
        for entry in islice(entries, committed, None):
            images.append(_image(entry, batch, metadata, store, config, Path(work)))
            if _queued(images) == config.chunk_size or len(images) == 2 * config.chunk_size:
                if not _hand_out(sessions, config, batch_id, committed, images, on_chunk):
                    return  # another ingester took the batch over
                committed, images = committed + len(images), []
        if images and not _hand_out(sessions, config, batch_id, committed, images, on_chunk):
            return
        committed += len(images)
    with sessions.begin() as session:
        _finish(session, batch_id, committed)


def remove_uploads(config: Config, batch_upload_dir: str) -> None:
    """Delete a batch's original uploads (with their EXIF) once its ingest has committed."""
    store_for(config).delete_tree(batch_upload_dir)
