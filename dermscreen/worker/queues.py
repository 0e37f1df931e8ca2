"""Queue names and which task goes to which queue.

GPU nodes run ``dermscreen worker --queues inference``; CPU nodes take ingest and notify.
"""

INGEST = "ingest"        # unpacking, validation, the reconciler: CPU
INFERENCE = "inference"  # model forward passes (and heatmaps): GPU or CPU
NOTIFY = "notify"        # email and webhook deliveries: network only

ALL = (INGEST, INFERENCE, NOTIFY)

# Task names are part of the message format: keep them stable across deploys.
INGEST_TASK = "screening.ingest"
PREDICT_TASK = "screening.predict_chunk"
DELIVER_TASK = "screening.deliver"
RECONCILE_TASK = "screening.reconcile"
HEATMAP_TASK = "screening.heatmap"

ROUTES = {
    INGEST_TASK: {"queue": INGEST},
    RECONCILE_TASK: {"queue": INGEST},
    PREDICT_TASK: {"queue": INFERENCE},
    HEATMAP_TASK: {"queue": INFERENCE},
    DELIVER_TASK: {"queue": NOTIFY},
}
