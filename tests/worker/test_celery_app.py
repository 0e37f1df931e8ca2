"""The Celery app's delivery guarantees and routes, as configured from Config."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dermscreen.config import Config
from dermscreen.worker import dispatch, queues
from dermscreen.worker.celery_app import app_for, make_celery
from tests.conftest import REDIS_SERVER


def test_guarantees_routes_and_task_names(tmp_path):
    config = Config(home=tmp_path, broker_url=f"{REDIS_SERVER}/13", task_time_limit=600,
                    visibility_timeout=900)
    app = make_celery(config)
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost,
            conf.worker_prefetch_multiplier) == (True, True, 1)
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_time_limit == 600 and 0 < conf.task_soft_time_limit < 600
    assert conf.broker_transport_options["visibility_timeout"] == 900
    assert conf.task_routes[queues.PREDICT_TASK] == {"queue": queues.INFERENCE}
    assert conf.task_routes[queues.HEATMAP_TASK] == {"queue": queues.INFERENCE}
    assert conf.task_routes[queues.INGEST_TASK] == {"queue": queues.INGEST}
    assert conf.task_routes[queues.DELIVER_TASK] == {"queue": queues.NOTIFY}
    assert conf.beat_schedule["reconcile"]["task"] == queues.RECONCILE_TASK
    app.loader.import_default_modules()
    assert {queues.INGEST_TASK, queues.PREDICT_TASK, queues.DELIVER_TASK, queues.RECONCILE_TASK,
            queues.HEATMAP_TASK} <= set(app.tasks)
    assert not (tmp_path / "broker").exists()  # Redis: no local broker folders


def test_a_chunk_handed_out_again_is_taken_before_the_new_ones_waiting(tmp_path):
    import redis

    config = Config(home=tmp_path, broker_url=f"{REDIS_SERVER}/12")
    redis.Redis.from_url(config.broker_url).flushdb()
    dispatch.enqueue_chunks(config, [["new-1"], ["new-2"]])
    dispatch.enqueue_chunks(config, [["again"]], again=True)
    taken = []
    with app_for(config).connection_for_read() as connection:
        while (message := connection.default_channel.basic_get(queues.INFERENCE,
                                                               no_ack=True)) is not None:
            taken.append(message.decode()[0][0])  # the task's first argument: image ids
    assert taken == [["again"], ["new-1"], ["new-2"]]


def test_visibility_timeout_must_outlast_the_time_limit(tmp_path):
    with pytest.raises(ValueError, match="must be longer than task_time_limit"):
        make_celery(Config(home=tmp_path, task_time_limit=600, visibility_timeout=600))


def test_importing_the_entry_point_builds_nothing_until_app_is_used(tmp_path):
    script = ("import dermscreen.worker.celery_app as module, pathlib, sys; "
              "home = pathlib.Path(sys.argv[1]); assert not (home / 'broker').exists(); "
              "app = module.app; assert app.conf.task_acks_late; "
              "assert (home / 'broker' / 'queue').is_dir(); assert module.app is app")
    env = {"DERMSCREEN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
