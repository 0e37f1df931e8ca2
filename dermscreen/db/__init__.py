"""The system of record: SQLAlchemy 2 models (one module per aggregate) and the session factory."""

from dermscreen.db.alerts import Alert, AlertStatus, Channel, Delivery, DeliveryStatus
from dermscreen.db.audit import AuditEntry
from dermscreen.db.base import Base
from dermscreen.db.review import Decision, Review
from dermscreen.db.screening import Batch, BatchStatus, Image, ImageStatus, ModelVersion, Prediction
from dermscreen.db.tenancy import ApiToken, Hospital, Role, User

__all__ = [
    "Alert", "AlertStatus", "ApiToken", "AuditEntry", "Base", "Batch", "BatchStatus", "Channel",
    "Decision", "Delivery", "DeliveryStatus", "Hospital", "Image", "ImageStatus", "ModelVersion",
    "Prediction", "Review", "Role", "User",
]
