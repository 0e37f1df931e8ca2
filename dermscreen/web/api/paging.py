"""``?limit=&offset=`` paging shared by the API's lists: ``limit, offset = page_args()``."""

from __future__ import annotations

from flask import request

from dermscreen.web.api.errors import abort

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 10**9


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """The integer query argument ``name`` (``default`` when absent), else 400 with the reason."""
    raw = request.args.get(name, default)
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be an integer, not {raw!r}")
    if not low <= value <= high:
        abort(400, f"{name} must lie between {low} and {high}")
    return value


def page_args() -> tuple[int, int]:
    """``limit`` (1 to MAX_LIMIT, default DEFAULT_LIMIT) and ``offset`` (0 and up, default 0)."""
    return int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT), int_arg("offset", 0, 0, MAX_OFFSET)
