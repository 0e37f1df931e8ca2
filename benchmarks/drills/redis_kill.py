"""Drill 2: ``kill -9`` of Redis (the broker) with work queued, then Redis started again.

    PYTHONPATH=$PWD python -m benchmarks.drills.redis_kill [-n 300] [--outage 10]

The deployment of benchmarks/drills/cluster.py (this drill's redis-server on :6390 with AOF,
``appendfsync everysec``, as docker-compose.yml runs it). After the workers have loaded the model,
N images go to the API as one zip; once its chunks wait in Redis (the inference queue also
holds the heatmap tasks of flagged images), redis-server gets
SIGKILL, stays down ``--outage`` seconds and is started again on its data folder. It prints the
messages in Redis before the kill and after the restart, whether every worker process lived
through it, what came out, and the recovery time: from the restart to the last image out of the
queue, and from the restart to the first image scored after it (scoring resumed).
"""

from __future__ import annotations

import json
import time

import click

from benchmarks.drills.cluster import (REDIS_PORT, audit, deployment, pick_images,
                                       queued_messages, wait_until)


@click.command()
@click.option("-n", "count", default=300, show_default=True, help="images in the batch")
@click.option("--outage", default=10.0, show_default=True, help="seconds Redis stays down")
@click.option("--redis-port", default=REDIS_PORT, show_default=True)
@click.option("--timeout", default=1800, show_default=True, help="seconds the batch may take")
def main(count, outage, redis_port, timeout):
    from dermscreen.db.base import utcnow

    with deployment("drill-redis", redis_port) as (cluster, redis):
        paths = pick_images(count, cluster.work)
        cluster.warm(paths)
        start = time.monotonic()
        batch = cluster.submit(paths)
        click.echo(f"submitted {count} images as one zip: batch {batch}")
        wait_until(lambda: cluster.queued([batch]) and queued_messages(redis.url)["inference"],
                   timeout, "the batch's chunks to wait in Redis", interval=0.1)
        before = queued_messages(redis.url)
        left = count - cluster.finished([batch])
        redis.process.kill()
        killed = time.monotonic()
        click.echo(f"{killed - start:7.1f} s  kill -9 redis-server; messages {before}; "
                   f"{left} images unfinished")
        time.sleep(outage)
        redis.start()
        restarted, restarted_utc = time.monotonic(), utcnow()
        after = queued_messages(redis.url)
        click.echo(f"{restarted - start:7.1f} s  redis-server started again; messages {after}")
        cluster.wait_done([batch], timeout)
        finished = time.monotonic()
        alive = {name: process.popen.poll() is None for name, process in cluster.workers.items()}
        result = {"submitted": count, "outage_s": outage, "messages before the kill": before,
                  "messages after the restart": after, "unfinished images at the kill": left,
                  "workers alive after": alive, "wall_s": round(finished - start, 1),
                  "first image scored after the restart (s)":
                      cluster.first_scored_after([batch], restarted_utc),
                  "recovery_s (restart to last image)": round(finished - restarted, 1),
                  "outcome": audit(cluster.sessions, [batch], count)}
        click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
