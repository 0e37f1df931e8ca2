"""``GET /metrics`` (Prometheus text, see dermscreen.metrics) and the request counters behind it.

Unauthenticated, like any Prometheus target: it holds counts, no patient data; keep it to the
cluster network (the Kubernetes manifests expose it on the pod only).
"""

from __future__ import annotations

import time

from flask import Flask, Response, current_app, g, request

from dermscreen import metrics


def _start():
    g.metrics_started = time.perf_counter()


def _count(response):
    started = g.pop("metrics_started", None)
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    if started is not None and endpoint != "/metrics":
        metrics.HTTP_LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
        metrics.HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    return response


def metrics_view():
    return Response(metrics.exposition(current_app.config["DERMSCREEN"]),
                    mimetype=metrics.CONTENT_TYPE)


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_count)
    app.add_url_rule("/metrics", "metrics", metrics_view)
