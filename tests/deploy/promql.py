"""What the deploy tests know of PromQL: the metric names an expression reads, the label matchers
it puts on them, and the names dermscreen exports (from the metric objects in the code)."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from dermscreen import metrics
from dermscreen.config import Config
from dermscreen.db.screening import ImageStatus
from dermscreen.worker import queues

# Sample names a family of each type puts in the text exposition.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}
STRING = re.compile(r'"(?:\\.|[^"\\])*"')
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
WORD = re.compile(r"(?<![0-9.a-zA-Z_:$])[a-zA-Z_:][a-zA-Z0-9_:]*")


# Label values the exporters write, per metric and label (queue names, image statuses, outcomes).
LABEL_VALUES = {
    ("dermscreen_queue_messages", "queue"): set(queues.ALL),
    ("dermscreen_queue_messages", "state"): {"waiting", "reserved"},
    ("dermscreen_images", "status"): {status.value for status in ImageStatus},
    ("dermscreen_images_scored_total", "outcome"): {ImageStatus.DONE.value, ImageStatus.FAILED.value,
                                                    ImageStatus.UNASSESSABLE.value},
}


def unknown_label_values(expr: str) -> list[tuple[str, str, str]]:
    """``(metric, label, value)`` of each matcher that no value the exporters write satisfies."""
    unknown = []
    for name, label, operator, value in matchers(expr):
        known = LABEL_VALUES.get((name, label))
        if known is None or operator in ("!=", "!~"):
            continue
        if not any(re.fullmatch(value, each) if operator == "=~" else value == each
                   for each in known):
            unknown.append((name, label, value))
    return unknown


def exported_names() -> set[str]:
    """Every sample name dermscreen's exporters can write: the web app's and the workers'."""
    families = [family for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)
                for family in value.describe()]
    families += metrics.StateCollector(Config()).describe()
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, keywords or label names)."""
    text = GROUPING.sub(" ", re.sub(r"\[[^\]]*\]", " ", re.sub(r"\{[^}]*\}", " ",
                                                              STRING.sub('""', expr))))
    names = set()
    for match in WORD.finditer(text):
        if match.group() in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(match.group())
    return names


def matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """``(metric, label, operator, value)`` for each label matcher on a named metric."""
    return [(name, *matcher.groups()) for name, body in SELECTOR.findall(expr)
            for matcher in MATCHER.finditer(body)]
