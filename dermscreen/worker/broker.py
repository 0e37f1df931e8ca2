"""What the reconciler asks the broker: has Redis restarted since the reconciler last looked?

A Redis that restarts (``kill -9``, a node reboot, a failover) comes back without the messages of
its last second (AOF ``everysec``), and the messages its dead connections had taken come back
only after ``visibility_timeout``. The database still knows the work: so, once per restart, the
reconciler queues again at once every image queued and held by no worker, and every batch not
yet ingested, instead of waiting for ``queue_lease_seconds`` (duplicates are harmless: every task
is idempotent and a lease keeps a second worker off a chunk).

    seen = run_id(config)                  # None for the filesystem broker
    restarted = seen is not None and seen != last_run_id(config)
    ...re-enqueue, after the commit...
    remember(config, seen)

Redis's ``run_id`` changes at every start; the last one seen is kept in Redis itself, so a Redis
that lost its data looks restarted as well.
"""

from __future__ import annotations

from dermscreen.config import Config

KEY = "dermscreen:reconciler:broker-run-id"


def _client(config: Config):
    import redis

    return redis.Redis.from_url(config.broker_url, socket_timeout=10, socket_connect_timeout=10)


def _is_redis(config: Config) -> bool:
    return config.broker_url.startswith(("redis://", "rediss://"))


def run_id(config: Config) -> str | None:
    """The Redis server's ``run_id`` (new at each start); None for other brokers."""
    if not _is_redis(config):
        return None
    return _client(config).info("server")["run_id"]


def last_run_id(config: Config) -> str | None:
    """The ``run_id`` the reconciler last handled (None: never, or Redis lost its data)."""
    if not _is_redis(config):
        return None
    value = _client(config).get(KEY)
    return value.decode() if value is not None else None


def remember(config: Config, seen: str) -> None:
    _client(config).set(KEY, seen)
