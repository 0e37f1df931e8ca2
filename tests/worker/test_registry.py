"""Model versions: register, activate, and the default registration of the configured bundle."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import select

from dermscreen.bundle import load_bundle
from dermscreen.db import ModelVersion
from dermscreen.registry import (RegistryError, activate, active_version, bundle_path,
                                 register_bundle, register_loaded)


def copy_bundle(source, target, version=None, threshold=None):
    shutil.copytree(source, target)
    metadata = json.loads((target / "metadata.json").read_text())
    if version:
        metadata["version"] = version
    if threshold:
        metadata["output"]["alert_threshold"] = threshold
    (target / "metadata.json").write_text(json.dumps(metadata))
    return target


def test_active_version_registers_the_configured_bundle_once(sessions, config):
    with sessions.begin() as session:
        first = active_version(session, config)
        assert (first.version, first.active, first.alert_threshold) == ("test-1", True, 0.5)
    with sessions.begin() as session:
        assert active_version(session, config).id == first.id
        assert len(session.scalars(select(ModelVersion)).all()) == 1


def test_register_and_activate_keep_one_active(sessions, config, tiny_bundle, tmp_path):
    other = copy_bundle(tiny_bundle, tmp_path / "v2", version="test-2", threshold=0.3)
    with sessions.begin() as session:
        one = active_version(session, config)
        two = register_bundle(session, other)
        assert not two.active and two.alert_threshold == 0.3
        assert register_bundle(session, other).id == two.id
        activate(session, two.id)
    with sessions.begin() as session:
        assert active_version(session, config).id == two.id
        assert session.get(ModelVersion, one.id).active is False
        with pytest.raises(RegistryError, match="no model version"):
            activate(session, 9999)


def test_same_version_with_other_metadata_is_refused(sessions, tiny_bundle, tmp_path):
    changed = copy_bundle(tiny_bundle, tmp_path / "changed", threshold=0.7)
    with sessions.begin() as session:
        register_bundle(session, tiny_bundle)
        with pytest.raises(RegistryError, match="already registered with different metadata"):
            register_bundle(session, changed)


def test_a_node_loads_its_own_copy_of_the_active_version(sessions, config, tiny_bundle, tmp_path):
    with sessions.begin() as session:
        version = register_bundle(session, tiny_bundle, activate=True)
    copy = copy_bundle(tiny_bundle, tmp_path / "installed-elsewhere")
    config.model_bundle = str(copy)
    assert bundle_path(version, config) == copy
    config.model_bundle = str(copy_bundle(tiny_bundle, tmp_path / "v9", version="test-9"))
    assert bundle_path(version, config) == tiny_bundle.resolve()


def test_a_loaded_bundle_registers_as_what_was_loaded(sessions, tiny_bundle, tmp_path):
    path = copy_bundle(tiny_bundle, tmp_path / "in-place")
    loaded = load_bundle(path)
    copy_bundle(tiny_bundle, tmp_path / "replacement", version="test-7")
    (path / "metadata.json").write_text((tmp_path / "replacement" / "metadata.json").read_text())
    with sessions.begin() as session:
        assert register_loaded(session, loaded).version == "test-1"
        assert register_bundle(session, path).version == "test-7"
