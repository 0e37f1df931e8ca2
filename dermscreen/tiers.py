"""The tiers of a melanoma probability: ``alert`` notifies dermatologists, ``review`` lists the
image for review without a notification, ``none`` is neither.

    tier(0.3, alert=0.25, review=0.02)   # "alert"
"""

from __future__ import annotations

ALERT, REVIEW, NONE = "alert", "review", "none"
TIERS = (ALERT, REVIEW, NONE)


def tier(melanoma_probability: float, alert: float, review: float) -> str:
    """``alert`` at or above the alert threshold, ``review`` at or above the review threshold
    (a review threshold above the alert threshold leaves the review tier empty), else ``none``."""
    if melanoma_probability >= alert:
        return ALERT
    if melanoma_probability >= review:
        return REVIEW
    return NONE
