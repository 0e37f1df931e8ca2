"""Drill 4: the SMTP server down while alerts are raised, then up again.

    PYTHONPATH=$PWD python -m benchmarks.drills.smtp_outage [-n 48] [--outage 120]

The deployment of benchmarks/drills/cluster.py, with ``DERMSCREEN_SMTP_URL`` pointing at a real
SMTP server process (aiosmtpd, storing what it receives in a Maildir) and production retries
(``DERMSCREEN_NOTIFY_BACKOFF_SECONDS`` 30, doubling; 8 retries). The hospital has two
dermatologists, so each alert is two emails. The SMTP server is stopped, N images go to the API
as one zip, and it is started again ``--outage`` seconds after it stopped (the issue asks for 10
minutes: ``--outage 600``). It prints the alerts and deliveries, the emails the server received
per Message-ID (each must come once), and the recovery time: from the server's start to the last
email delivered.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from datetime import timezone

import click

from benchmarks.drills.cluster import (REDIS_PORT, Process, audit, deployment, free_port,
                                       maildir_message_ids, new_work, pick_images, wait_until)


def smtp_server(work, port: int) -> Process:
    return Process("smtp", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                            "-c", "aiosmtpd.handlers.Mailbox", str(work / "maildir")],
                   work / "smtp.log")


def listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def deliveries(cluster, batch: str) -> list:
    from sqlalchemy import select

    from dermscreen.db.alerts import Alert, Delivery
    from dermscreen.db.screening import Image

    with cluster.sessions() as session:
        return session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.sent_at, Delivery.dedupe_key)
            .join(Alert).join(Image, Image.id == Alert.image_id)
            .where(Image.batch_id == batch)).all()


@click.command()
@click.option("-n", "count", default=48, show_default=True, help="images in the batch")
@click.option("--outage", default=120.0, show_default=True, help="seconds SMTP stays down")
@click.option("--redis-port", default=REDIS_PORT, show_default=True)
@click.option("--timeout", default=3600, show_default=True, help="seconds delivery may take")
def main(count, outage, redis_port, timeout):
    work = new_work("drill-smtp")
    port = free_port()
    smtp = smtp_server(work, port)
    try:
        drill(smtp, work, port, count, outage, redis_port, timeout)
    finally:
        smtp.stop()
    shutil.rmtree(work, ignore_errors=True)  # kept (with the logs) when the drill failed


def drill(smtp: Process, work, port: int, count: int, outage: float, redis_port: int,
          timeout: float) -> None:
    from dermscreen.db.base import utcnow

    with deployment("drill-smtp", redis_port, work=work,
                    smtp_url=f"smtp://127.0.0.1:{port}") as (cluster, _):
        paths = pick_images(count, work)
        cluster.warm(paths[:1])
        start = time.monotonic()
        click.echo("SMTP server down")
        batch = cluster.submit(paths)
        click.echo(f"submitted {count} images as one zip: batch {batch}")
        cluster.wait_done([batch], timeout)
        raised = deliveries(cluster, batch)
        wait_until(lambda: all(attempts for _, attempts, _, _ in deliveries(cluster, batch)),
                   timeout, "every delivery to be tried")
        tried = time.monotonic()
        click.echo(f"{tried - start:7.1f} s  batch scored; {len(raised)} deliveries, each "
                   f"tried and failed")
        time.sleep(max(0.0, start + outage - time.monotonic()))
        smtp.start()
        wait_until(lambda: listening(port), 60, "the SMTP server to listen")
        up, up_at = time.monotonic(), utcnow()
        click.echo(f"{up - start:7.1f} s  SMTP server started")
        wait_until(lambda: all(status.value != "pending"
                               for status, *_ in deliveries(cluster, batch)),
                   timeout, "every delivery to be settled", interval=1)
        time.sleep(15)  # a second copy of anything would arrive by now
        rows = deliveries(cluster, batch)
        received = maildir_message_ids(work / "maildir")
        last = max((sent for _, _, sent, _ in rows if sent), default=None)
        result = {
            "submitted": count, "outage_s": round(up - start, 1),
            "deliveries": dict(Counter(status.value for status, *_ in rows)),
            "attempts per delivery": dict(Counter(attempts for _, attempts, _, _ in rows)),
            "emails received": sum(received.values()),
            "distinct Message-IDs": len(received),
            "Message-IDs received more than once": sum(1 for n in received.values() if n > 1),
            "recovery_s (SMTP up to last email)":
                round((last.replace(tzinfo=timezone.utc) - up_at.replace(tzinfo=timezone.utc))
                      .total_seconds(), 1) if last else None,
            "outcome": audit(cluster.sessions, [batch], count)}
        click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
