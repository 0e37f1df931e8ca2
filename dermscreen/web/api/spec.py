"""The API's OpenAPI document (``dermscreen/web/openapi.yaml``) served as JSON."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from flask import jsonify

from dermscreen.web.api import bp

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())
