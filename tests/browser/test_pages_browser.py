"""The pages in headless Chromium, against ``dermscreen serve`` over real HTTP: with its embedded
worker (SQLite, filesystem broker, the real Celery tasks, the tiny bundle), and on the production
setup (PostgreSQL, Redis as the broker, a ``dermscreen worker`` Celery process).

One dermatologist signs in, drops an archive on the upload page, watches the progress bar finish,
sorts the results, opens the flagged case, waits for the worker's Grad-CAM heatmap and toggles it,
reviews the case, acknowledges its alert and exports the reviews; a dermatologist of another
hospital gets 404 on the case URL (on both setups). Every main page is then checked at 1280 and
390 px: no horizontal scrolling, a label on every form field, and WCAG AA contrast of all visible
text. Screenshots go to test-artifacts/screenshots/ (``services-*`` for the production setup).

    pytest tests/browser -q          # needs /usr/bin/chromium (apt-get install chromium)
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from dermscreen import accounts
from dermscreen.db.migrate import upgrade
from dermscreen.db.session import engine_for, session_factory
from dermscreen.db.tenancy import Role
from dermscreen.worker import queues
from tests.conftest import TEST_PASSWORD, throwaway_postgres
from tests.factories import BLUE, RED, image_bytes, lesion_image
from tests.integration.conftest import Workers, config_env, redis_database, service_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WIDTHS = (1280, 390)
SERVER_START_SECONDS = 90
WORK_SECONDS = 180  # the embedded worker imports TensorFlow and scores the batch in this time

# In-page checks. Contrast follows WCAG 2.x: 4.5:1, or 3:1 for large text (24px, or 18.66px bold).
UNLABELLED_FIELDS = """() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter((el) => el.type !== 'hidden')
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.getAttribute('aria-labelledby'))
  .map((el) => el.outerHTML.slice(0, 120))"""
LOW_CONTRAST_TEXT = """() => {
  const channel = (c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const parse = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const rgba = parse(getComputedStyle(node).backgroundColor);
      if (rgba.length === 3 || (rgba.length === 4 && rgba[3] > 0.99)) return rgba.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const text = walker.currentNode.textContent.trim();
    const el = walker.currentNode.parentElement;
    if (!text || !el) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility === 'hidden' || style.display === 'none' || box.width < 2 || box.height < 2
        || el.closest('.visually-hidden, .skip, noscript, option')) continue;
    const [fg, bg] = [luminance(parse(style.color).slice(0, 3)), luminance(background(el))];
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) failures.push(`${text.slice(0, 40)}: ${ratio.toFixed(2)}`);
  }
  return failures;
}"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def create_accounts(url: str) -> dict[str, str]:
    """Two hospitals, a dermatologist in each and an admin; their emails by role key."""
    with session_factory(url).begin() as session:
        first = accounts.create_hospital(session, "First Hospital")
        second = accounts.create_hospital(session, "Second Hospital")
        users = {
            "derm": accounts.create_user(session, "derm@first.example", Role.DERMATOLOGIST, first,
                                         TEST_PASSWORD, name="Dr First"),
            "other": accounts.create_user(session, "derm@second.example", Role.DERMATOLOGIST,
                                          second, TEST_PASSWORD, name="Dr Second"),
            "admin": accounts.create_user(session, "admin@example.org", Role.ADMIN, None,
                                          TEST_PASSWORD, name="Admin"),
        }
        emails = {key: user.email for key, user in users.items()}
    engine_for(url).dispose()
    return emails


@contextmanager
def serving(home: Path, url: str, env: dict, prefix: str):
    """``dermscreen serve`` in a subprocess on the database at ``url``, with ``create_accounts``;
    ``prefix`` names its screenshots."""
    emails = create_accounts(url)
    port = free_port()
    env = {**env, "DERMSCREEN_SECRET_KEY": "browser-test-secret",
           "DERMSCREEN_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    log = open(home / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-c", "from dermscreen.cli import main; main()", "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        try:
            if requests.get(f"{base}/login", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"dermscreen serve did not start:\n{(home / 'serve.log').read_text()}")
        time.sleep(0.5)
    try:
        yield {"base": base, "emails": emails, "home": home, "prefix": prefix}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_bundle):
    """The embedded setup: SQLite, the filesystem broker, ``serve``'s own worker thread."""
    home = tmp_path_factory.mktemp("serve-home")
    url = f"sqlite:///{home / 'dermscreen.db'}"
    upgrade(url)
    env = {**os.environ, "DERMSCREEN_HOME": str(home), "DERMSCREEN_MODEL_BUNDLE": str(tiny_bundle),
           "DERMSCREEN_CHUNK_SIZE": "2"}
    with serving(home, url, env, prefix="") as running:
        yield running


@pytest.fixture
def services_site(tmp_path_factory, tiny_bundle):
    """The production setup: a throwaway PostgreSQL database, Redis as the broker and a
    ``dermscreen worker`` (Celery) subprocess on every queue."""
    home = tmp_path_factory.mktemp("services-home")
    with throwaway_postgres("dermscreen_browser") as url:
        config = service_config(home, url, redis_database(12), tiny_bundle, smtp_url="", chunk_size=2)
        workers = Workers(home)
        workers.start("worker", config, ",".join(queues.ALL))
        try:
            with serving(home, url, config_env(config), prefix="services-") as running:
                yield running
        finally:
            workers.stop_all()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# Script errors and Content-Security-Policy violations of every page the tests open.
PAGE_ERRORS: list[str] = []


def watch(page):
    page.on("pageerror", lambda error: PAGE_ERRORS.append(f"{page.url}: {error}"))
    page.on("console", lambda message: PAGE_ERRORS.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text else None)
    return page


@pytest.fixture(autouse=True)
def no_page_errors():
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


def sign_in(browser, site, who: str, width: int = 1280):
    context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
    page = watch(context.new_page())
    page.set_default_timeout(15_000)
    page.goto(f"{site['base']}/login")
    page.get_by_label("Email").fill(site["emails"][who])
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()
    return page


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def lesion_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, color in enumerate([RED, BLUE, RED, BLUE]):
            name = "red" if color == RED else "blue"
            archive.writestr(f"lesions/{name}-{index}.jpg",
                             image_bytes(lesion_image(color, size=(96, 96), seed=index)))
        archive.writestr("lesions/broken.jpg", b"\xff\xd8\xff not really a jpeg")
    return buffer.getvalue()


def drop_file(page, selector: str, name: str, data: bytes, mime: str) -> None:
    """Drop a file on an element as a user dragging it from the desktop would."""
    transfer = page.evaluate_handle(
        """([name, b64, mime]) => {
             const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], name, { type: mime }));
             return transfer;
           }""", [name, base64.b64encode(data).decode(), mime])
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def wait_for_heatmap(page) -> None:
    """Reload the case page until the worker has stored its heatmap."""
    deadline = time.monotonic() + WORK_SECONDS
    while page.locator("#show-heatmap").count() == 0:
        assert time.monotonic() < deadline, "no heatmap from the worker"
        time.sleep(1)
        page.reload()


def test_dermatologist_screens_reviews_and_exports_in_a_browser(browser, site):
    site["case_url"], site["batch_url"] = screen_review_and_export(browser, site)


def test_the_same_on_postgresql_redis_and_a_celery_worker(browser, services_site):
    screen_review_and_export(browser, services_site)


def screen_review_and_export(browser, site) -> tuple[str, str]:
    """The dermatologist's scenario of the module docstring; returns the case and batch URLs."""
    page = sign_in(browser, site, "derm")
    assert page.url.endswith("/alerts")

    # Upload: drop an archive on the drop zone, then submit the form.
    page.goto(f"{site['base']}/upload")
    shoot(page, site["prefix"] + "upload")
    drop_file(page, "[data-dropzone]", "lesions.zip", lesion_archive(), "application/zip")
    assert "lesions.zip" in page.locator(".file-list").inner_text()
    polls = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith("/progress") else None)
    page.get_by_role("button", name="Upload and screen").click()
    page.wait_for_url(re.compile(r"/batches/[0-9a-f]{32}$"))
    batch_url = page.url
    shoot(page, site["prefix"] + "batch-progress")

    # Progress: the page polls the counters and reloads into the results when the batch is done.
    page.locator("table#results").wait_for(timeout=WORK_SECONDS * 1000)
    assert polls, "the batch page never polled its progress"
    progress = page.locator("#batch-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "5"
    assert "done: 5 of 5 images (1 failed, 2 flagged)" in page.locator("[data-progress-text]").inner_text()
    names = page.locator("#results tbody td.name").all_inner_texts()
    assert sorted(names[:2]) == ["lesions.zip/lesions/red-0.jpg", "lesions.zip/lesions/red-2.jpg"]  # flagged first
    assert page.locator("#results tbody tr.flagged").count() == 2
    broken = page.locator("#results tbody tr", has_text="broken.jpg")
    assert broken.locator(".badge").inner_text() == "failed"
    assert page.locator("#results img.thumb").first.evaluate("(img) => img.naturalWidth") > 0
    shoot(page, site["prefix"] + "batch-results")
    page.get_by_role("button", name="Name").click()
    names_sorted = page.locator("#results tbody td.name").all_inner_texts()
    assert names_sorted == sorted(names, reverse=True)
    page.get_by_role("button", name="Name").click()
    assert page.locator("#results tbody td.name").all_inner_texts() == sorted(names)

    # The flagged case: the worker renders its heatmap; the checkbox shows and hides it.
    page.goto(batch_url)
    page.locator("#results tbody tr.flagged a", has_text="Open case").first.click()
    case_url = page.url
    wait_for_heatmap(page)
    heatmap = page.locator("img.heatmap")
    # a loaded picture (on a busy machine it may still be loading when the page is)
    page.wait_for_function("() => document.querySelector('img.heatmap').complete")
    assert heatmap.evaluate("(img) => img.naturalWidth") > 0
    assert heatmap.evaluate("(img) => getComputedStyle(img).opacity") == "0"
    shoot(page, site["prefix"] + "case")
    page.get_by_label(re.compile("Show Grad-CAM heatmap")).check()
    page.wait_for_function("() => getComputedStyle(document.querySelector('img.heatmap')).opacity === '1'")
    shoot(page, site["prefix"] + "case-heatmap")
    page.get_by_label(re.compile("Show Grad-CAM heatmap")).uncheck()
    page.wait_for_function("() => getComputedStyle(document.querySelector('img.heatmap')).opacity === '0'")

    # Review, then acknowledge the case's alert; the count in the navigation drops.
    assert page.get_by_test_id("alert-count").inner_text() == "2"
    page.get_by_label("Melanoma", exact=True).check()
    page.get_by_label("Notes").fill("asymmetric, blue-white veil")
    page.get_by_role("button", name="Save review").click()
    assert "Review saved: Melanoma." in page.locator(".flash").inner_text()
    assert "asymmetric, blue-white veil" in page.content()
    page.get_by_role("button", name="Acknowledge").click()
    assert page.url == case_url
    assert page.get_by_test_id("alert-count").inner_text() == "1"
    page.goto(f"{site['base']}/alerts")
    assert page.locator("tbody tr").first.locator(".badge").inner_text() == "pending"
    assert page.locator("tbody .badge", has_text="acknowledged").count() == 1
    shoot(page, site["prefix"] + "alerts")

    # An unflagged case has no heatmap until a dermatologist asks the worker for one.
    page.goto(batch_url)
    page.locator("#results tbody tr:not(.flagged) a", has_text="Open case").first.click()
    assert page.locator("#show-heatmap").count() == 0
    page.get_by_role("button", name="Compute heatmap").click()
    wait_for_heatmap(page)

    # Review loop: the page counts the review, the export holds it in the training layout.
    page.goto(f"{site['base']}/reviews")
    assert re.search(r"Reviewed\s+1", page.locator(".stats").inner_text())
    shoot(page, site["prefix"] + "reviews")
    with page.expect_download() as download_info:
        page.get_by_role("link", name=re.compile("Export reviewed cases")).click()
    exported = Path(download_info.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        labels = archive.read("reviewed/labels.csv").decode().splitlines()
        case_id = case_url.rsplit("/", 1)[1]
        assert labels[1].startswith(f"{case_id},melanoma,dermscreen-review")
        assert f"reviewed/images/{case_id}.jpg" in archive.namelist()

    # Another hospital's dermatologist cannot open the case by its URL.
    outsider = sign_in(browser, site, "other")
    response = outsider.goto(case_url)
    assert response.status == 404
    assert outsider.goto(f"{batch_url}/progress").status == 404
    outsider.goto(f"{site['base']}/batches")
    assert batch_url.rsplit("/", 1)[1] not in outsider.content()
    return case_url, batch_url


def test_pages_fit_narrow_screens_label_fields_and_have_contrast(browser, site):
    if "case_url" not in site:
        pytest.fail("needs the batch of the scenario test (run the module)")
    base = site["base"]
    pages = {
        "derm": {"upload": "/upload", "batch": site["batch_url"].removeprefix(base),
                 "case": site["case_url"].removeprefix(base), "alerts": "/alerts",
                 "reviews": "/reviews", "batches": "/batches"},
        "admin": {"admin": "/admin/", "admin-hospitals": "/admin/hospitals",
                  "admin-users": "/admin/users", "admin-tokens": "/admin/tokens",
                  "admin-models": "/admin/models"},
    }
    problems = []
    for width in WIDTHS:
        anonymous = watch(browser.new_context(viewport={"width": width, "height": 900}).new_page())
        anonymous.goto(f"{base}/login")
        problems += check_page(anonymous, f"login@{width}")
        for who, urls in pages.items():
            page = sign_in(browser, site, who, width)
            for name, path in urls.items():
                page.goto(f"{base}{path}")
                problems += check_page(page, f"{name}@{width}")
    assert problems == []


def check_page(page, label: str) -> list[str]:
    page.wait_for_load_state("networkidle")
    shoot(page, label.replace("@", "-"))
    problems = []
    scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    if scroll > inner:
        problems.append(f"{label}: scrolls horizontally ({scroll} > {inner} px)")
    problems += [f"{label}: unlabelled {field}" for field in page.evaluate(UNLABELLED_FIELDS)]
    problems += [f"{label}: low contrast {text}" for text in page.evaluate(LOW_CONTRAST_TEXT)]
    return problems


def test_admin_issues_a_token_shown_once_and_revokes_it(browser, site):
    page = sign_in(browser, site, "admin")
    page.goto(f"{site['base']}/admin/tokens")
    page.get_by_label("Hospital").select_option(label="First Hospital")
    page.get_by_label(re.compile("Token name")).fill("PACS export")
    page.get_by_role("button", name="Issue token").click()
    token = page.get_by_test_id("new-token").inner_text()
    assert token.startswith("ds_")
    response = requests.get(f"{site['base']}/api/v1/alerts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    shoot(page, "admin-token-issued")
    page.goto(f"{site['base']}/admin/tokens")
    assert token not in page.content()
    page.get_by_role("button", name=re.compile(f"Revoke {re.escape(token[:10])}")).click()
    assert "revoked" in page.locator("table").inner_text()
    response = requests.get(f"{site['base']}/api/v1/alerts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_admin_sets_a_threshold_finer_than_a_thousandth(browser, site):
    # calibrated thresholds sit near 0.004-0.04: the browser must not round or refuse them
    page = sign_in(browser, site, "admin")
    page.goto(f"{site['base']}/admin/hospitals")
    page.get_by_label(re.compile("Alert threshold")).first.fill("0.0401")
    page.get_by_role("button", name="Save First Hospital").click()
    page.wait_for_load_state()
    assert "Settings of First Hospital saved." in page.content()
    assert page.get_by_label(re.compile("Alert threshold")).first.input_value() == "0.0401"
    page.get_by_label(re.compile("Alert threshold")).first.fill("")  # back to the model's own
    page.get_by_role("button", name="Save First Hospital").click()
    page.wait_for_load_state()
    assert page.get_by_label(re.compile("Alert threshold")).first.input_value() == ""
