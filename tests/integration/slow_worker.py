"""`dermscreen worker` whose inference chunks are slow, so that a test can kill it mid-chunk.

    python -m tests.integration.slow_worker SECONDS HELD_FILE worker --queues inference ...

Every chunk first appends the ids of the images it holds (a line to HELD_FILE), then sleeps
SECONDS while holding their lease, then is scored as usual: ``dermscreen.worker.jobs.score_images``
is wrapped before the worker forks its pool, so every pool process has it. Everything after
HELD_FILE is the real ``dermscreen`` command line. Production code knows nothing of this.
"""

from __future__ import annotations

import json
import sys
import time

from dermscreen.cli import main
from dermscreen.worker import jobs

score_images = jobs.score_images


def slow_score_images(bundle, store, stored):
    with open(HELD_FILE, "a") as held:
        held.write(json.dumps([image_id for image_id, _ in stored]) + "\n")
    time.sleep(DELAY)
    return score_images(bundle, store, stored)


if __name__ == "__main__":
    DELAY, HELD_FILE = float(sys.argv[1]), sys.argv[2]
    jobs.score_images = slow_score_images
    main(args=sys.argv[3:], prog_name="dermscreen")
