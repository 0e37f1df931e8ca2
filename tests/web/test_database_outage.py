"""While the database cannot be reached (a restart, a failover), the app says so and when to try
again: 503 with Retry-After, not 500."""

from __future__ import annotations

import socket

from dermscreen.config import Config
from dermscreen.web import create_app


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_an_unreachable_database_is_a_503_with_retry_after(tmp_path, tiny_bundle):
    config = Config(home=tmp_path, model_bundle=str(tiny_bundle), secret_key="test-secret-key",
                    database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/gone")
    client = create_app(config).test_client()

    response = client.get("/api/v1/batches", headers={"Authorization": "Bearer some-token"})

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json["error"] == "service_unavailable"
    assert "database is unavailable" in response.json["reason"]
