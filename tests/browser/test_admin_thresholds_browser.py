"""The admin threshold page in headless Chromium, against ``dermscreen serve`` on a bundle with a
validation curve: the admin follows the hospitals page's link, reads the drawn curve and picks a
stricter threshold from the table with JavaScript switched off; the page then marks it on the
curve. The page is checked at 1280 and 390 px like the others (no horizontal scrolling, labelled
fields, WCAG AA contrast, SVG text included). Screenshots go to test-artifacts/screenshots/.

    pytest tests/browser/test_admin_thresholds_browser.py -q
"""

from __future__ import annotations

import os
import re

import pytest

from dermscreen.db.migrate import upgrade
from tests.browser.test_pages_browser import (WIDTHS, browser, check_page, no_page_errors,  # noqa: F401
                                              serving, shoot, sign_in, watch)
from tests.conftest import TEST_PASSWORD
from tests.web.test_admin_thresholds import SHIPPED, make_curve_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def curve_site(tmp_path_factory):
    """``dermscreen serve`` (SQLite, embedded worker) on the tiny bundle with a validation curve."""
    home = tmp_path_factory.mktemp("serve-curve")
    bundle = make_curve_bundle(home / "bundle")
    url = f"sqlite:///{home / 'dermscreen.db'}"
    upgrade(url)
    env = {**os.environ, "DERMSCREEN_HOME": str(home), "DERMSCREEN_MODEL_BUNDLE": str(bundle)}
    with serving(home, url, env, prefix="") as running:
        yield running


def test_admin_picks_a_threshold_from_the_drawn_curve_without_javascript(browser, curve_site):
    base = curve_site["base"]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = watch(context.new_page())
    page.set_default_timeout(15_000)
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(curve_site["emails"]["admin"])
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{base}/admin/hospitals")
    shoot(page, "admin-hospitals-with-curve")
    page.get_by_role("link", name="Choose from the validation curve for First Hospital").click()
    assert page.url.endswith("/threshold")

    curve = page.get_by_role("img", name=re.compile("Expected melanoma sensitivity"))
    assert curve.bounding_box()["width"] > 800  # drawn across the page at 1280 px
    assert page.locator("svg.curve polyline").count() == 2
    assert page.locator("svg.curve g.mark").count() == 2  # shipped and review
    assert "(the model's own)" in page.get_by_test_id("in-force").inner_text()

    rows = page.locator("[data-testid=threshold-choices] tbody tr")
    stricter = rows.filter(has=page.get_by_role("button", name=re.compile(r"^Use 0\.\d{4}$"))).last
    threshold = stricter.locator("td").first.inner_text()
    sensitivity, alerted = (stricter.locator("td").nth(index).inner_text() for index in (1, 3))
    assert float(threshold) > SHIPPED
    stricter.get_by_role("button").click()
    page.wait_for_load_state()
    assert f"First Hospital alerts at {threshold} with test-curve." in page.locator(".flash").inner_text()
    in_force = page.get_by_test_id("in-force").inner_text()
    assert f"alerts at {threshold} (its own choice)" in in_force
    assert f"sensitivity {sensitivity}, {alerted.split()[0]} of images alerted" in in_force
    assert page.locator("svg.curve g.mark").count() == 3
    assert page.locator("svg.curve g.mark.hospital text").text_content().startswith(f"First Hospital {threshold}:")
    assert page.locator("tr.in-force td").first.inner_text() == threshold
    shoot(page, "admin-threshold-curve")
    context.close()


def test_threshold_page_fits_narrow_screens_and_has_contrast(browser, curve_site):
    problems = []
    for width in WIDTHS:
        page = sign_in(browser, curve_site, "admin", width)
        page.goto(f"{curve_site['base']}/admin/hospitals")
        page.get_by_role("link", name="Choose from the validation curve for First Hospital").click()
        problems += check_page(page, f"admin-threshold@{width}")
    assert problems == []
