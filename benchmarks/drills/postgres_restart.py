"""Drill 3: PostgreSQL restarted mid-batch, while API clients keep asking.

    PYTHONPATH=$PWD python -m benchmarks.drills.postgres_restart [-n 300] [--outage 10] [--port 5440]

A throwaway PostgreSQL cluster of this drill (initdb under /tmp, on ``--port``; run as the
``postgres`` user when this runs as root), this drill's redis-server (:6390), gunicorn and the
workers of benchmarks/drills/cluster.py. After the workers have loaded the model, N images go to
the API as one zip. Once the first images are scored, PostgreSQL is stopped (``pg_ctl stop -m
fast``: every connection is cut), stays down ``--outage`` seconds and is started again. All the
while a client asks the API for the batch's progress every 0.25 s and submits a one-image batch
every 2 s. It prints the API's answers before, during and after the outage (counts by status code,
connection errors), what came out of the big batch and the small ones, and the recovery time: from
the restart to the last image out of the queue.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections import Counter

import click
import requests

from benchmarks.drills.cluster import (REDIS_PORT, PostgresCluster, audit, deployment,
                                       new_work, pick_images, wait_until)


class Client(threading.Thread):
    """Polls the batch's progress and submits one-image batches; records (time, answer)."""

    def __init__(self, cluster, batch: str, image):
        super().__init__(daemon=True)
        self.cluster, self.batch, self.image = cluster, batch, image
        self.answers: list[tuple[float, str, str]] = []  # (time, GET/POST, status code or error)
        self.submitted: list[str] = []
        self.stopping = threading.Event()

    def ask(self, method: str, call) -> None:
        try:
            response = call()
            answer = str(response.status_code)
            if method == "POST" and response.status_code == 202:
                self.submitted.append(response.json()["id"])
        except requests.RequestException as error:
            answer = type(error).__name__
        self.answers.append((time.monotonic(), method, answer))

    def run(self) -> None:
        next_post = 0.0
        while not self.stopping.wait(0.25):
            self.ask("GET", lambda: requests.get(f"{self.cluster.api}/batches/{self.batch}",
                                                 headers=self.cluster.headers, timeout=30))
            if time.monotonic() >= next_post:
                next_post = time.monotonic() + 2
                self.ask("POST", lambda: self.cluster.post_paths([self.image], "one.zip"))


def tally(answers, start: float, end: float) -> dict:
    return dict(Counter(f"{method} {answer}" for at, method, answer in answers
                        if start <= at < end))


@click.command()
@click.option("-n", "count", default=300, show_default=True, help="images in the batch")
@click.option("--outage", default=10.0, show_default=True, help="seconds PostgreSQL stays down")
@click.option("--port", default=5440, show_default=True, help="the throwaway cluster's port")
@click.option("--redis-port", default=REDIS_PORT, show_default=True)
@click.option("--timeout", default=1800, show_default=True, help="seconds the batch may take")
def main(count, outage, port, redis_port, timeout):
    from dermscreen.db.base import utcnow

    work = new_work("drill-postgres")
    postgres = PostgresCluster(work, port)
    postgres.init()
    postgres.start()
    try:
        with deployment("drill-postgres", redis_port, postgres.url, work=work) as (cluster, _):
            paths = pick_images(count + 1, work)
            cluster.warm(paths)
            start = time.monotonic()
            batch = cluster.submit(paths[:count])
            click.echo(f"submitted {count} images as one zip: batch {batch}")
            client = Client(cluster, batch, paths[count])
            client.start()
            wait_until(lambda: cluster.finished([batch]), timeout, "the first images to be scored")
            left = count - cluster.finished([batch])
            down = time.monotonic()
            postgres.stop()
            click.echo(f"{down - start:7.1f} s  PostgreSQL stopped; {left} images unfinished")
            time.sleep(outage)
            postgres.start()
            up, up_utc = time.monotonic(), utcnow()
            click.echo(f"{up - start:7.1f} s  PostgreSQL started again")
            cluster.wait_done([batch], timeout)
            finished = time.monotonic()
            time.sleep(5)  # the client's answers after the batch is done
            client.stopping.set()
            client.join()
            small_done = cluster.wait_done(client.submitted, timeout)
            alive = {name: process.popen.poll() is None
                     for name, process in cluster.workers.items()}
            result = {
                "submitted": count, "outage_s": round(up - down, 1),
                "unfinished images at the stop": left,
                "API before the outage": tally(client.answers, 0, down),
                "API during the outage": tally(client.answers, down, up),
                "API after the restart": tally(client.answers, up, float("inf")),
                "workers alive after": alive, "wall_s": round(finished - start, 1),
                "first image scored after the restart (s)":
                    cluster.first_scored_after([batch], up_utc),
                "recovery_s (restart to last image)": round(finished - up, 1),
                "outcome": audit(cluster.sessions, [batch], count),
                "one-image batches": audit(cluster.sessions, client.submitted,
                                           len(client.submitted)),
                "their last done after the big batch (s)": round(small_done, 1)}
            click.echo(json.dumps(result, indent=1))
    except BaseException:
        click.echo(f"failed; logs kept in {work}", err=True)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        try:
            postgres.stop("immediate")
        except subprocess.CalledProcessError:  # already down
            pass


if __name__ == "__main__":
    main()
