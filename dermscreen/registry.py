"""Model versions: register a bundle, activate one, find the active one.

    version = active_version(session, config)   # registers config.model_bundle if none is active

A bundle's ``version`` names it for good: registering a different bundle under a version that is
already registered is refused, so a prediction always names the model that made it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dermscreen.bundle import Bundle, load_bundle
from dermscreen.config import Config
from dermscreen.db.screening import ModelVersion


class RegistryError(ValueError):
    """A bundle that cannot be registered as given."""


def register_bundle(session: Session, path: str | Path, activate: bool = False) -> ModelVersion:
    """Add the bundle at ``path`` as a model version (or return it if its version is registered)."""
    return register_loaded(session, load_bundle(path), activate)


def register_loaded(session: Session, bundle: Bundle, activate: bool = False) -> ModelVersion:
    """The model version of an already loaded bundle, registered from its own metadata (what a
    worker scores with, even if the files at its path have changed since it loaded them)."""
    version = session.scalar(select(ModelVersion).where(ModelVersion.version == bundle.version))
    if version is None:
        version = ModelVersion(version=bundle.version, path=str(Path(bundle.path).resolve()),
                               classes=bundle.classes, alert_threshold=bundle.threshold,
                               card=bundle.metadata, active=False)
        try:
            with session.begin_nested():
                session.add(version)
        except IntegrityError:  # another process registered it first
            version = session.scalar(
                select(ModelVersion).where(ModelVersion.version == bundle.version))
    elif version.card != bundle.metadata:
        raise RegistryError(f"model version {bundle.version!r} is already registered with "
                            f"different metadata (from {version.path}); give the bundle a new "
                            f"version")
    if activate and not version.active:
        _activate(session, version)
    return version


def activate(session: Session, version_id: int) -> ModelVersion:
    """Make ``version_id`` the one active model version."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise RegistryError(f"no model version {version_id}")
    _activate(session, version)
    return version


def _activate(session: Session, version: ModelVersion) -> None:
    session.execute(update(ModelVersion).where(ModelVersion.id != version.id)
                    .values(active=False))
    version.active = True
    session.flush()


def active_version(session: Session, config: Config) -> ModelVersion:
    """The active model version; registers and activates ``config.model_bundle`` when none is."""
    version = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))
    return version or register_bundle(session, config.model_bundle, activate=True)


def bundle_path(version: ModelVersion, config: Config) -> Path:
    """Where this node loads ``version`` from: its own configured bundle when that is the same
    version (install paths differ between nodes), else the path it was registered from."""
    configured = Path(config.model_bundle)
    if configured != Path(version.path) and (configured / "metadata.json").is_file():
        if load_bundle(configured).version == version.version:
            return configured
    return Path(version.path)


def operating_curve(version: ModelVersion) -> dict:
    """The validation curve ``version``'s bundle recorded to choose alert thresholds from:
    ``{"data": what it was measured on, "points": [...]}`` as ``Bundle.operating_curve`` reads
    them; empty for bundles that recorded none."""
    return version.card.get("operating_curve") or {}


def review_threshold(version: ModelVersion) -> float | None:
    """The review tier's threshold ``version`` ships (below its alert threshold); None for
    bundles without a review tier."""
    return (version.card.get("output") or {}).get("review_threshold")


def validation_operating_points(version: ModelVersion) -> list[dict]:
    """The alert thresholds that ``version``'s bundle measured on its validation images: the one
    it ships and the alternative it recorded (``collections_alone``), each with the melanoma
    sensitivity and specificity there; empty when the bundle recorded none. (What bundles
    without an ``operating_curve`` offer to choose from.)"""
    validation = (version.card.get("metrics") or {}).get("validation") or {}
    points = []
    if validation.get("sensitivity") is not None:
        points.append({"name": "shipped", "threshold": version.alert_threshold,
                       "sensitivity": validation["sensitivity"], "specificity": validation["specificity"]})
    alone = validation.get("collections_alone")
    if alone and alone["threshold"] != version.alert_threshold:
        points.append({"name": "held within the image collections alone", "threshold": alone["threshold"],
                       "sensitivity": alone["sensitivity"], "specificity": alone["specificity"]})
    return points
