"""The OpenAPI document is valid and describes every /api/v1 route and method."""

import re

from openapi_spec_validator import validate

API_PREFIX = "/api/v1"
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def test_openapi_document_is_valid(client):
    validate(client.get("/api/v1/openapi.json").json)


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule[len(API_PREFIX):])


def test_every_api_route_is_documented_and_nothing_else(app, client):
    document = client.get("/api/v1/openapi.json").json
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(API_PREFIX + "/"):
            methods = {method.lower() for method in rule.methods - IGNORED_METHODS}
            routes.setdefault(_openapi_path(rule.rule), set()).update(methods)
    documented = {path: set(operations) - {"parameters"}
                  for path, operations in document["paths"].items()}
    assert routes == documented
    assert "/batches/{batch_id}/results" in routes
