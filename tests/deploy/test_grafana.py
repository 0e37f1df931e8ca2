"""deploy/grafana/dermscreen.json: the panels an operator looks at first, and every PromQL
expression reads only metric names (and label values) that the code exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.promql import exported_names, metric_names, unknown_label_values

DASHBOARD = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" /
                        "dermscreen.json").read_text())
PANELS = DASHBOARD["panels"]
EXPRS = [target["expr"] for panel in PANELS for target in panel["targets"]]


def test_dashboard_has_the_panels_an_operator_looks_at_first():
    reads = {panel["title"]: set().union(*(metric_names(target["expr"])
                                           for target in panel["targets"]))
             for panel in PANELS}
    wanted = {
        "Queue depth": {"dermscreen_queue_messages"},
        "Images scored per second, by outcome": {"dermscreen_images_scored_total"},
        "Chunk latency": {"dermscreen_chunk_duration_seconds_bucket"},
        "Flagged and unassessable share": {"dermscreen_images_flagged_total",
                                           "dermscreen_images_scored_total"},
        "HTTP requests per second, by status": {"dermscreen_http_requests_total"},
        "HTTP latency": {"dermscreen_http_request_duration_seconds_bucket"},
        "HTTP 5xx per second, by endpoint": {"dermscreen_http_requests_total"},
        "Model version": {"dermscreen_model_info"},
        "Inference workers with a model loaded": {"dermscreen_model_info"},
    }
    for title, names in wanted.items():
        assert reads[title] == names, title
    latency = [target["expr"] for panel in PANELS if panel["title"] == "Chunk latency"
               for target in panel["targets"]]
    assert [expr.split(",")[0] for expr in latency] == ["histogram_quantile(0.5",
                                                        "histogram_quantile(0.95"]
    assert any('status=~"5.."' in expr for expr in EXPRS)


@pytest.mark.parametrize("expr", EXPRS)
def test_expression_reads_only_exported_metrics(expr):
    names = metric_names(expr)
    assert names, f"reads no metric: {expr}"
    assert names <= exported_names(), names - exported_names()
    assert unknown_label_values(expr) == []


def test_a_misnamed_metric_or_label_value_is_caught():
    exported = exported_names()
    assert not metric_names("sum(rate(dermscreen_images_scored[5m]))") <= exported  # no _total
    assert not metric_names("max(dermscreen_queue_depth)") <= exported
    assert unknown_label_values('max(dermscreen_queue_messages{queue="predict"})') == [
        ("dermscreen_queue_messages", "queue", "predict")]
    assert unknown_label_values('sum(dermscreen_images_scored_total{outcome=~"ok|fine"})')


def test_dashboard_is_importable():
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 36
    variable, = DASHBOARD["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert len({panel["id"] for panel in PANELS}) == len(PANELS)
    cells = set()
    for panel in PANELS:
        assert panel["datasource"]["uid"] == "${%s}" % variable["name"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
