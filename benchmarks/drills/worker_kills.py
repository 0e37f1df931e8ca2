"""Drill 1: a large batch while inference workers are SIGKILLed at random and started again.

    PYTHONPATH=$PWD python -m benchmarks.drills.worker_kills [-n 1000] [--kills 20] [--every 3]

PostgreSQL (a throwaway database on 127.0.0.1:5432), this drill's own redis-server (:6390), the
web app under gunicorn, a CPU worker (ingest, notify, beat) and two inference workers, production
leases (``DERMSCREEN_CHUNK_LEASE_SECONDS`` 30, reconcile every 10 s, visibility timeout 3600 s).
After the workers have loaded the model, N images go to the API as one zip. Every ``--every``
seconds on average (uniform, half to one and a half times), from the moment a worker takes the
first chunk, a random inference worker that is up gets SIGKILL on its whole process group (the
Celery parent and its pool child), and is started again at once. For each kill, with the images held by a worker at that instant (either worker: a
lease in force), two recovery times: from the kill until each was handed out again (scored, or
queued afresh by the reconciler once the dead worker's lease passed), and until each was scored
(a chunk queued afresh waits behind the chunks already queued). It prints what
was submitted, what came out (by status, lost, doubled predictions and alerts) and the recovery
times.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time

import click

from benchmarks.drills.cluster import (Cluster, audit, deployment, pick_images, wait_until,
                                       REDIS_PORT)


def held_now(cluster: Cluster, batch_id: str) -> set[str]:
    from sqlalchemy import select

    from dermscreen.db.base import utcnow
    from dermscreen.db.screening import Image, ImageStatus

    with cluster.sessions() as session:
        return set(session.scalars(select(Image.id).where(
            Image.batch_id == batch_id, Image.status == ImageStatus.QUEUED,
            Image.held_until > utcnow())))


def still_queued(cluster: Cluster, ids: set[str], since=None) -> int:
    """How many of ``ids`` are still queued (with ``since``: and not queued again after it)."""
    from sqlalchemy import func, select

    from dermscreen.db.screening import Image, ImageStatus

    with cluster.sessions() as session:
        return session.scalar(select(func.count()).select_from(Image).where(
            Image.id.in_(ids), Image.status == ImageStatus.QUEUED,
            *([Image.queued_at <= since] if since is not None else [])))


class Recoveries:
    """For each kill, seconds until the images held at that instant were all handed out again
    (scored, or queued again by the reconciler) and until they were all scored."""

    def __init__(self, cluster: Cluster):
        self.cluster, self.open, self.closed = cluster, [], []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def add(self, killed_at: float, worker: str, ids: set[str]) -> None:
        from dermscreen.db.base import utcnow

        self.open.append({"killed_at": killed_at, "utc": utcnow(), "worker": worker, "ids": ids})

    def _watch(self) -> None:
        while not self.stopping.wait(0.5):
            for entry in list(self.open):
                now = time.monotonic() - entry["killed_at"]
                if "requeued_s" not in entry and \
                        not still_queued(self.cluster, entry["ids"], entry["utc"]):
                    entry["requeued_s"] = round(now, 1)
                if not still_queued(self.cluster, entry["ids"]):
                    self.open.remove(entry)
                    self.closed.append({"worker": entry["worker"], "held": len(entry["ids"]),
                                        "handed out again (s)": entry["requeued_s"],
                                        "scored (s)": round(now, 1)})

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


@click.command()
@click.option("-n", "count", default=1000, show_default=True, help="images in the batch")
@click.option("--kills", default=20, show_default=True)
@click.option("--every", default=3.0, show_default=True,
              help="mean seconds between kills (the 20 kills fall within the batch)")
@click.option("--seed", default=19, show_default=True)
@click.option("--redis-port", default=REDIS_PORT, show_default=True)
@click.option("--timeout", default=3600, show_default=True, help="seconds the batch may take")
def main(count, kills, every, seed, redis_port, timeout):
    rng = random.Random(seed)
    with deployment("drill-kills", redis_port) as (cluster, _):
        paths = pick_images(count, cluster.work)
        cluster.warm(paths)
        start = time.monotonic()
        batch = cluster.submit(paths)
        click.echo(f"submitted {count} images as one zip: batch {batch}")
        recoveries = Recoveries(cluster)
        # The kills start once the first chunk is taken (the zip is ingested before that).
        wait_until(lambda: held_now(cluster, batch), timeout, "a worker to take a chunk")
        killed = 0
        while killed < kills and cluster.unfinished([batch]):
            time.sleep(rng.uniform(0.5, 1.5) * every)
            up = [name for name in cluster.workers
                  if name.startswith("inference") and cluster.ready(name)]
            if not up:
                continue
            name = rng.choice(up)
            ids = held_now(cluster, batch)
            killed_at = time.monotonic()
            cluster.workers[name].kill()
            cluster.start(name)
            killed += 1
            recoveries.add(killed_at, name, ids)
            click.echo(f"{killed_at - start:7.1f} s  SIGKILL {name} ({len(ids)} images "
                       f"held by the workers), started again")
        last_kill = time.monotonic()
        cluster.wait_done([batch], timeout)
        finished = time.monotonic()
        wall = finished - start
        wait_until_closed = time.monotonic() + 60
        while recoveries.open and time.monotonic() < wait_until_closed:
            time.sleep(0.5)
        recoveries.stop()
        outcome = audit(cluster.sessions, [batch], count)
        held = [entry for entry in recoveries.closed if entry["held"]]

        def spread(key):
            values = [entry[key] for entry in held]
            return {"median": round(statistics.median(values), 1) if values else None,
                    "max": max(values) if values else None}

        result = {"submitted": count, "kills": killed, "wall_s": round(wall, 1),
                  "done after the last kill (s)": round(finished - last_kill, 1),
                  "outcome": outcome,
                  "kills while images were held": len(held),
                  "handed out again after the kill (s)": spread("handed out again (s)"),
                  "scored after the kill (s)": spread("scored (s)"),
                  "per kill": recoveries.closed}
        click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
