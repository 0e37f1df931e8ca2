"""The worker: Celery tasks on three queues, and the plain functions that do the work.

    archives, imagestore   safe extraction; validated, metadata-free, content-addressed images
    ingest                 uploads -> Image rows (queued | failed with a reason) -> chunks
    inference              batched forward pass, idempotent predictions, counters (alerting: outbox)
    notifier               claimed email/webhook deliveries with back-off
    reconcile              re-hands out work a lost message or a dead worker left behind
    jobs                   one transaction per unit of work, shared by tasks and `dermscreen screen`
    celery_app, tasks, dispatch, queues    the Celery side: app, thin tasks, sending by name
    embedded, commands     `dermscreen screen`, `dermscreen worker`, the embedded background worker
"""
