"""Accessibility checks that need no browser: the palette's contrast and labelled form fields.
(tests/browser checks the rendered pages too: contrast of every visible text, no horizontal scroll.)

    pytest tests/web/test_pages_accessibility.py -q
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from dermscreen.config import PACKAGE_DIR
from dermscreen.db.tenancy import Role
from tests.web.test_pages import case, pages_app, sign_in  # noqa: F401  (fixtures)

STYLE = PACKAGE_DIR / "web" / "static" / "style.css"
# (text colour, background) pairs the stylesheet uses for text.
TEXT_PAIRS = [
    ("text", "page"), ("text", "surface"), ("muted", "page"), ("muted", "surface"),
    ("primary", "page"), ("primary", "surface"), ("primary-dark", "info-soft"),
    ("on-primary", "primary"), ("on-primary", "primary-dark"), ("on-primary", "danger"),
    ("danger", "surface"), ("danger", "danger-soft"), ("ok", "ok-soft"), ("warn", "warn-soft"),
    ("text", "info-soft"), ("primary", "info-soft"),
]


def palette() -> dict[str, str]:
    return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;", STYLE.read_text()))


def luminance(hex_colour: str) -> float:
    def channel(value: int) -> float:
        value /= 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (int(hex_colour[index:index + 2], 16) for index in (1, 3, 5))
    return 0.2126 * channel(red) + 0.7152 * channel(green) + 0.0722 * channel(blue)


def contrast(first: str, second: str) -> float:
    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_formula_matches_known_values():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("foreground,background", TEXT_PAIRS)
def test_palette_text_meets_wcag_aa(foreground, background):
    colours = palette()
    assert contrast(colours[foreground], colours[background]) >= 4.5


class FieldLabels(HTMLParser):
    """Collects form fields and what labels them."""

    def __init__(self):
        super().__init__()
        self.fields, self.label_targets, self.open_labels = [], set(), 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "label":
            self.open_labels += 1
            if attrs.get("for"):
                self.label_targets.add(attrs["for"])
        elif tag in {"input", "select", "textarea"} and attrs.get("type") not in {"hidden", "submit"}:
            self.fields.append((attrs, self.open_labels > 0))

    def handle_endtag(self, tag):
        if tag == "label":
            self.open_labels -= 1

    def unlabelled(self) -> list[dict]:
        return [attrs for attrs, wrapped in self.fields
                if not wrapped and attrs.get("id") not in self.label_targets
                and not attrs.get("aria-label") and not attrs.get("aria-labelledby")]


def test_every_form_field_has_a_label(sign_in, make_user, case):  # noqa: F811
    dermatologist = sign_in(make_user(Role.DERMATOLOGIST, hospital=case.hospital))
    admin = sign_in(make_user(Role.ADMIN))
    pages = [(dermatologist, url) for url in ["/upload", f"/batches/{case.batch.id}",
                                              f"/cases/{case.red.id}", "/alerts", "/reviews"]]
    pages += [(admin, url) for url in ["/admin/hospitals", "/admin/users", "/admin/tokens", "/admin/models"]]
    seen = 0
    for client, url in pages:
        parser = FieldLabels()
        parser.feed(client.get(url).text)
        assert parser.unlabelled() == [], url
        seen += len(parser.fields)
    assert seen >= 15  # the pages do have forms
