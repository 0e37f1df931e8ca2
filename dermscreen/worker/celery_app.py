"""The Celery application, configured from ``Config`` (DERMSCREEN_* environment variables).

    celery -A dermscreen.worker.celery_app worker --queues inference   # what `dermscreen worker` runs
    celery -A dermscreen.worker.celery_app beat                        # the reconciler's schedule

Delivery guarantees: messages are acknowledged after the task ends (``task_acks_late``) and given
back when a worker process dies (``task_reject_on_worker_lost``); each worker process reserves one
message at a time; Redis hands an unacknowledged message (a dead worker's) to another worker after
``visibility_timeout``, which is longer than any task may run. A dead worker's chunk does not wait
for that: its lease on the images passes and the reconciler queues them again
(dermscreen.worker.leases). Tasks are idempotent, so a redone chunk doubles nothing. No result backend: job state lives in the database.
"""

from __future__ import annotations

from celery import Celery

from dermscreen.config import Config
from dermscreen.worker import queues

TASK_MODULES = ["dermscreen.worker.tasks", "dermscreen.worker.heatmap_tasks"]


def broker_options(config: Config) -> dict:
    """Transport options: the visibility timeout for Redis, folders for the filesystem broker."""
    if config.embedded:
        folders = {name: config.broker_dir / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {"data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
                "processed_folder": str(folders["processed"]), "store_processed": False,
                "control_folder": str(folders["control"])}
    # Look for a dead worker's messages a few times per visibility timeout (at most every 10 s).
    return {"visibility_timeout": config.visibility_timeout,
            "unacked_restore_interval": max(1, min(10, config.visibility_timeout // 5)),
            "unacked_restore_throttle": 1}


def make_celery(config: Config | None = None) -> Celery:
    config = config or Config.from_env()
    if config.visibility_timeout <= config.task_time_limit:
        raise ValueError(f"visibility_timeout ({config.visibility_timeout}s) must be longer than "
                         f"task_time_limit ({config.task_time_limit}s), or Redis would hand a "
                         f"running task to a second worker")
    app = Celery("dermscreen", broker=config.broker_url, include=TASK_MODULES)
    app.conf.update(
        broker_transport_options=broker_options(config),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=config.task_time_limit,
        # A task is told to stop (SoftTimeLimitExceeded) a little before it is killed.
        task_soft_time_limit=config.task_time_limit - min(30, config.task_time_limit // 10),
        task_routes=queues.ROUTES,
        task_default_queue=queues.INGEST,
        beat_schedule={
            "reconcile": {"task": queues.RECONCILE_TASK,
                          "schedule": float(config.reconcile_interval_seconds)},
        },
        beat_schedule_filename=str(config.home / "celerybeat-schedule"),
    )
    # The settings object of the tasks; kept off app.conf so `celery inspect conf` cannot show it.
    app.dermscreen_config = config
    _apps.setdefault(_key(config), app)
    return app


_apps: dict[tuple, Celery] = {}


def _key(config: Config) -> tuple:
    return config.broker_url, str(config.broker_dir), config.visibility_timeout


def app_for(config: Config) -> Celery:
    """The Celery app of this process for ``config``'s broker (a worker's own app, inside it)."""
    return _apps.get(_key(config)) or make_celery(config)


def task_config(app: Celery) -> Config:
    """The Config of the app running a task (from the environment for a bare Celery app)."""
    config = getattr(app, "dermscreen_config", None)
    if config is None:
        config = app.dermscreen_config = Config.from_env()
    return config


def __getattr__(name: str):
    """``app``, the application of ``celery -A dermscreen.worker.celery_app``, built on first use
    (not at import, so importing this module creates no broker folders)."""
    if name != "app":
        raise AttributeError(name)
    globals()["app"] = made = make_celery()
    return made
