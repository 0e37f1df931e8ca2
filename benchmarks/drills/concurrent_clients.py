"""Drill 5: concurrent API clients submitting batches for a while.

    PYTHONPATH=$PWD python -m benchmarks.drills.concurrent_clients [--clients 20] [--minutes 5]
        [--images 2]

The deployment of benchmarks/drills/cluster.py (gunicorn with two processes of four threads).
Each client, in its own thread with its own connection, loops for ``--minutes``: it POSTs a zip
of ``--images`` images to ``/api/v1/batches``, then asks for the batch every second until it is
done (a PACS that waits for its results), then submits the next. Any answer other than 202 to a
submission or 200 to a question, and any connection error, is an error. It prints the number of
batches and images, the errors, the submit latency (median, p95, max) and what came out.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter

import click
import requests

from benchmarks.drills.cluster import REDIS_PORT, audit, deployment, pick_images
from benchmarks.pipeline_throughput import zip_of


class ApiClient(threading.Thread):
    def __init__(self, cluster, paths, until: float):
        super().__init__(daemon=True)
        self.cluster, self.paths, self.until = cluster, paths, until
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.batches: list[str] = []

    def run(self) -> None:
        session = requests.Session()
        session.headers.update(self.cluster.headers)
        api = self.cluster.api
        body = zip_of(self.paths)
        while time.monotonic() < self.until:
            started = time.perf_counter()
            try:
                response = session.post(f"{api}/batches", timeout=120,
                                        files=[("files", ("visit.zip", body, "application/zip"))])
            except requests.RequestException as error:
                self.errors[f"POST {type(error).__name__}"] += 1
                continue
            self.latencies.append(time.perf_counter() - started)
            if response.status_code != 202:
                self.errors[f"POST {response.status_code}"] += 1
                continue
            batch = response.json()["id"]
            self.batches.append(batch)
            while True:
                time.sleep(1)
                try:
                    answer = session.get(f"{api}/batches/{batch}", timeout=60)
                except requests.RequestException as error:
                    self.errors[f"GET {type(error).__name__}"] += 1
                    continue
                if answer.status_code != 200:
                    self.errors[f"GET {answer.status_code}"] += 1
                elif answer.json()["status"] in ("done", "failed"):
                    break


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


@click.command()
@click.option("--clients", default=20, show_default=True)
@click.option("--minutes", default=5.0, show_default=True, help="how long clients submit")
@click.option("--images", default=2, show_default=True, help="images per batch")
@click.option("--redis-port", default=REDIS_PORT, show_default=True)
@click.option("--timeout", default=1800, show_default=True, help="seconds the last batches may take")
def main(clients, minutes, images, redis_port, timeout):
    with deployment("drill-clients", redis_port) as (cluster, _):
        paths = pick_images(clients * images, cluster.work)
        cluster.warm(paths)
        start = time.monotonic()
        pool = [ApiClient(cluster, paths[i * images:(i + 1) * images], start + minutes * 60)
                for i in range(clients)]
        for client in pool:
            client.start()
        for client in pool:
            client.join()
        wall = time.monotonic() - start
        batches = [batch for client in pool for batch in client.batches]
        cluster.wait_done(batches, timeout)
        latencies = [latency for client in pool for latency in client.latencies]
        errors = sum((client.errors for client in pool), Counter())
        result = {"clients": clients, "minutes": minutes, "wall_s": round(wall, 1),
                  "batches": len(batches), "images": len(batches) * images,
                  "errors": dict(errors),
                  "submit latency (s)": {"median": round(statistics.median(latencies), 3),
                                         "p95": round(percentile(latencies, 0.95), 3),
                                         "max": round(max(latencies), 3)},
                  "outcome": audit(cluster.sessions, batches, len(batches) * images)}
        click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
