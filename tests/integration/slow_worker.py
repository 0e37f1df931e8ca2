"""`dermscreen worker` whose inference chunks are slow, so that a test can kill it mid-batch.

    python -m tests.integration.slow_worker SECONDS worker --queues inference ...

Every ``screening.predict_chunk`` task first sleeps SECONDS (a Celery ``task_prerun`` handler,
connected before the worker forks its pool, so every pool process has it); everything after
SECONDS is the real ``dermscreen`` command line. Production code knows nothing of this.
"""

from __future__ import annotations

import sys
import time

from celery.signals import task_prerun

from dermscreen.cli import main
from dermscreen.worker.queues import PREDICT_TASK

delay = 0.0


@task_prerun.connect
def slow_chunk(sender=None, **_):
    if sender is not None and sender.name == PREDICT_TASK:
        time.sleep(delay)


if __name__ == "__main__":
    delay = float(sys.argv[1])
    main(args=sys.argv[2:], prog_name="dermscreen")
