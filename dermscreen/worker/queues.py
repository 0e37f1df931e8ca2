"""Queue names and which task goes to which queue.

GPU nodes run ``dermscreen worker --queues inference``; CPU nodes take ingest and notify.
"""

INGEST = "ingest"        # unpacking, validation, the reconciler: CPU
INFERENCE = "inference"  # model forward passes (and heatmaps): GPU or CPU
NOTIFY = "notify"        # email and webhook deliveries: network only

ALL = (INGEST, INFERENCE, NOTIFY)

# Redis hands out a queue's messages by priority, 0 first (kombu's steps 0, 3, 6, 9): a chunk
# handed out again (its worker died, its message was lost) goes before the new chunks behind it,
# so recovery does not wait for a backlog; heatmaps, drawn for alerts already raised, wait until
# no chunk does. (The filesystem broker of embedded mode ignores priorities.)
AGAIN_PRIORITY = 0
NEW_PRIORITY = 6
HEATMAP_PRIORITY = 9

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
