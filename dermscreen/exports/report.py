"""The batch report for people, as PDF (reportlab) and HTML (Jinja): the summary, the alert list
with each image's thumbnail and heatmap, the review list, the images that cannot be assessed or
failed with their reasons, the model card's headline numbers and the intended-use statement.
The hospital's metadata for each image is printed beside it.

    pdf = batch_pdf(content)      # bytes
    html = batch_html(content)    # str, images inline (data: URIs)

A heatmap is shown where one was rendered (the worker renders them for alerts); otherwise the
report says it was not rendered.
"""

from __future__ import annotations

import base64
import io

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from dermscreen.exports.content import INTENDED_USE, BatchContent
from dermscreen.storage import ObjectMissing, Store
from dermscreen.tiers import ALERT, REVIEW

THUMBNAIL_PX = 160


def thumbnail_png(store: Store, ref: str | None) -> bytes | None:
    """A small PNG of the stored image (or heatmap) at ``ref``; None when there is none."""
    if not ref:
        return None
    try:
        data = store.read(ref)
    except ObjectMissing:
        return None
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def probability(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def metadata_text(details: dict | None) -> str:
    return "; ".join(f"{key}: {value}" for key, value in sorted((details or {}).items()))


def sections(content: BatchContent) -> dict:
    """The report's lists, shared by the PDF and the HTML."""
    rows = content.rows
    return {
        "alerts": [row for row in rows if row["tier"] == ALERT],
        "review": [row for row in rows if row["tier"] == REVIEW],
        "unassessable": [row for row in rows if row["status"] == "unassessable"],
        "failed": [row for row in rows if row["status"] == "failed"],
        "counts": content.summary["counts"],
    }


def summary_lines(content: BatchContent) -> list[str]:
    counts, model = content.summary["counts"], content.model
    lines = [f"Batch {content.summary['id']} ({content.summary['status']})"
             + (f", submitted by {content.hospital}" if content.hospital else ""),
             f"Submitted {content.summary['created_at']}; report generated {content.generated_at}",
             f"{counts['total']} images: {counts['flagged']} alert, "
             f"{sum(row['tier'] == REVIEW for row in content.rows)} review, "
             f"{counts['done']} scored, {counts['unassessable']} cannot be assessed, "
             f"{counts['failed']} failed, {counts['pending']} pending"]
    if model:
        review = model["review_threshold"]
        lines.append(f"Model {model['name']} {model['version']}: alert at melanoma probability "
                     f">= {model['alert_threshold']:.4f}"
                     + (f", review at >= {review:.4f}" if review is not None else ""))
    return lines


def batch_html(content: BatchContent) -> str:
    environment = Environment(loader=PackageLoader("dermscreen.exports", "templates"),
                              autoescape=select_autoescape(["html"]))

    def data_uri(path: str | None) -> str | None:
        data = thumbnail_png(content.store, path)
        return f"data:image/png;base64,{base64.b64encode(data).decode()}" if data else None

    environment.filters.update(probability=probability, metadata=metadata_text,
                               data_uri=data_uri)
    return environment.get_template("report.html").render(
        content=content, summary=summary_lines(content), intended_use=INTENDED_USE,
        **sections(content))


def batch_pdf(content: BatchContent) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (Image as Picture, Paragraph, SimpleDocTemplate,
                                    Table, TableStyle)
    from xml.sax.saxutils import escape

    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["Normal"].clone("small", fontSize=8, leading=10)
    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                       ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                       ("VALIGN", (0, 0), (-1, -1), "TOP"),
                       ("FONTSIZE", (0, 0), (-1, -1), 8)])

    def cell(text: str) -> Paragraph:
        return Paragraph(escape(text), small)

    def picture(path: str | None, missing: str):
        data = thumbnail_png(content.store, path)
        if data is None:
            return cell(missing)
        return Picture(io.BytesIO(data), width=30 * mm, height=30 * mm, kind="proportional")

    def table(header: list[str], rows: list[list], widths=None) -> Table:
        made = Table([[cell(text) for text in header]] + rows, colWidths=widths, repeatRows=1)
        made.setStyle(grid)
        return made

    parts = sections(content)
    story = [Paragraph("dermscreen batch report", styles["Title"])]
    story += [Paragraph(escape(line), body) for line in summary_lines(content)]
    story += [Paragraph("Intended use", styles["Heading2"]), Paragraph(escape(INTENDED_USE), body)]
    if content.model and content.model["metrics"]:
        story += [Paragraph("Model card headline numbers", styles["Heading2"]), table(
            ["data", "images (melanomas)", "melanoma AUC", "sensitivity", "specificity"],
            [[cell(str(m["data"])), cell(f"{m['n']} ({m['melanomas']})"),
              cell(m["melanoma_auc"]), cell(m["sensitivity"]), cell(m["specificity"])]
             for m in content.model["metrics"]],
            [60 * mm, 25 * mm, 32 * mm, 32 * mm, 32 * mm])]
    story += [Paragraph(f"Alerts ({len(parts['alerts'])})", styles["Heading2"])]
    story += [table(["image", "melanoma", "diagnosis / metadata", "image", "heatmap"],
                    [[cell(row["image"]), cell(probability(row["melanoma_probability"])),
                      [cell(row["diagnosis"] or ""), cell(metadata_text(row["details"]))],
                      picture(row["stored_path"], "no image"),
                      picture(row["heatmap_path"], "heatmap not rendered")]
                     for row in parts["alerts"]],
                    [45 * mm, 18 * mm, 45 * mm, 34 * mm, 34 * mm])
              if parts["alerts"] else Paragraph("No image is in the alert tier.", body)]
    story += [Paragraph(f"Review tier ({len(parts['review'])})", styles["Heading2"])]
    story += [table(["image", "melanoma", "diagnosis", "metadata"],
                    [[cell(row["image"]), cell(probability(row["melanoma_probability"])),
                      cell(row["diagnosis"] or ""), cell(metadata_text(row["details"]))]
                     for row in parts["review"]], [60 * mm, 20 * mm, 40 * mm, 56 * mm])
              if parts["review"] else Paragraph("No image is in the review tier.", body)]
    for key, title in (("unassessable", "Cannot be assessed"), ("failed", "Failed")):
        story += [Paragraph(f"{title} ({len(parts[key])})", styles["Heading2"])]
        story += [table(["image", "reason", "metadata"],
                        [[cell(row["image"]), cell(row["error"] or ""),
                          cell(metadata_text(row["details"]))] for row in parts[key]],
                        [60 * mm, 70 * mm, 46 * mm])
                  if parts[key] else Paragraph("None.", body)]
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, title=f"dermscreen batch {content.summary['id']}",
                      author="dermscreen", leftMargin=15 * mm, rightMargin=15 * mm,
                      topMargin=15 * mm, bottomMargin=15 * mm).build(story)
    return buffer.getvalue()
