"""The rendered site, tested as a reader sees it: every page in headless Chromium, offline.

Serves a fresh build of the book on 127.0.0.1 and opens each page in Debian's Chromium (driven
by Selenium with the system chromedriver; no browser download). Checks: no console errors,
every image loads, all math is typeset by the local MathJax (no raw TeX, no MathJax errors),
every internal link and anchor resolves (launch links: tests/test_book.py). A
full-page light- and dark-theme screenshot of every page is written to _build/screenshots/.

Without Chromium the browser tests skip, unless TC_REQUIRE_BROWSER=1 (CI sets it), which
turns a missing browser into a failure.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import socketserver
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from bookcheck import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from pdf import outside_requests  # noqa: E402  (the PDF build's check for requests leaving the site)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("TC_SCREENSHOTS", ROOT / "_build" / "screenshots"))


class _Links(HTMLParser):
    """Collects hrefs/srcs and element ids of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.links.append(attrs["src"])


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(site).parts))


def test_internal_links_and_anchors_resolve(built_site: Path):
    site, broken = built_site, []
    for page in _pages(site):
        for link in _parse(page).links:
            parsed = urlparse(link)
            if parsed.scheme or link.startswith(("mailto:", "//")):
                continue
            target_path, anchor = urldefrag(link)
            target = (page.parent / unquote(target_path)).resolve() if target_path else page
            if target.is_dir():
                target = target / "index.html"
            if target_path.startswith("downloads/") and not (site / "downloads").exists():
                continue  # written by `make pdf` after the HTML build; tests/test_pdf.py checks them
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {link} (no file)")
            elif anchor and target.suffix == ".html" and unquote(anchor) not in _parse(target).ids:
                broken.append(f"{page.relative_to(site)} -> {link} (no anchor)")
    assert not broken, "\n".join(broken)


def _browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("TC_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium/chromedriver not found; install Debian packages chromium chromium-driver")
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def served(built_site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_site))
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    driver = _browser()
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup) { done('no-mathjax'); return; }
MathJax.startup.promise.then(() => done('ok')).catch(e => done('error: ' + e));
"""

PAGE_REPORT = """
const imgs = Array.from(document.images);
const math = Array.from(document.querySelectorAll('.math'));
return {
  brokenImages: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
  imagesWithoutAlt: imgs.filter(i => !i.hasAttribute('alt')).map(i => i.getAttribute('src')),
  mathCount: math.length,
  untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60)),
  mathErrors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent.slice(0, 60)),
  rawDollars: (document.querySelector('article') || document.body).innerText.match(/\\$\\$[^$]+\\$\\$/g) || [],
};
"""


def test_every_page_renders_in_chromium(built_site: Path, served: str, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    site, problems, pages_with_math = built_site, [], 0
    browser.set_script_timeout(60)
    for page in _pages(site):
        rel = page.relative_to(site).as_posix()
        browser.get_log("browser")  # drop anything left from the previous page
        browser.get(f"{served}/{rel}")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        status = browser.execute_async_script(WAIT_FOR_MATH)
        report = browser.execute_script(PAGE_REPORT)
        if report["mathCount"]:
            pages_with_math += 1
            if status != "ok":
                problems.append(f"{rel}: MathJax did not finish ({status})")
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        for key in ("brokenImages", "imagesWithoutAlt", "untypeset", "mathErrors", "rawDollars"):
            if report[key]:
                problems.append(f"{rel}: {key}: {report[key][:5]}")
        if errors:
            problems.append(f"{rel}: console errors: {errors[:5]}")
        name = rel.replace("/", "__").removesuffix(".html")
        height = browser.execute_script("return Math.min(document.documentElement.scrollHeight, 20000)")
        browser.set_window_size(1280, max(height, 800))  # whole page in one picture
        browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        browser.execute_script("document.documentElement.dataset.theme = 'dark'")
        browser.save_screenshot(str(SCREENSHOTS / f"{name}.dark.png"))
        browser.set_window_size(1280, 1600)
    assert pages_with_math >= 2, "MathJax was never exercised: no page with math?"
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ explorers: parity and offline
EXPLORER_SETTINGS = 20   # random settings per explorer

SET_AND_READ = """
const [id, values] = arguments;
const root = document.querySelector(`.tc-explorer[data-explorer="${id}"]`);
for (const [name, v] of Object.entries(values)) {
  const input = root.querySelector(`[data-control="${name}"]`);
  if (input.type === 'checkbox') input.checked = Number(v) === 1; else input.value = String(v);
}
root.tcUpdate();
const spec = JSON.parse(root.querySelector('script.tc-explorer-spec').textContent);
const shown = {};
root.querySelectorAll('dd[data-output]').forEach(dd => { shown[dd.dataset.output] = dd.textContent; });
return {shown, formats: Object.fromEntries(spec.outputs.map(o => [o.name, [o.fmt, o.digits]]))};
"""


def _explorer_pages(site: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for page in _pages(site):
        for explorer_id in re.findall(r'data-explorer="([\w-]+)"', page.read_text(encoding="utf-8")):
            found.setdefault(page.relative_to(site).as_posix(), []).append(explorer_id)
    return found


def test_explorers_show_the_librarys_values_offline(built_site: Path, served: str, browser):
    """Every explorer on the site, at EXPLORER_SETTINGS random settings, displays what the library
    computes for the same inputs (tests/explorer_reference.py); no request leaves the site and no
    console error is logged."""
    import random

    from selenium.webdriver.support.ui import WebDriverWait

    from explorer_reference import REFERENCES, agrees

    pages = _explorer_pages(built_site)
    ids = [i for ids in pages.values() for i in ids]
    assert ids, "no explorer on the site"
    missing = sorted(set(ids) - set(REFERENCES))
    assert not missing, f"explorers without a parity reference in tests/explorer_reference.py: {missing}"
    problems, rng = [], random.Random(0)
    for rel, explorer_ids in pages.items():
        browser.get_log("browser"), browser.get_log("performance")
        browser.get(f"{served}/{rel}")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.tc-explorer')].every(e => e.dataset.ready === '1')"))
        for explorer_id in explorer_ids:
            ref = REFERENCES[explorer_id]
            for _ in range(EXPLORER_SETTINGS):
                values = ref.draw(rng)
                page = browser.execute_script(SET_AND_READ, explorer_id, values)
                for name, expected in ref.values(values).items():
                    fmt, digits = page["formats"][name]
                    shown = page["shown"][name]
                    if not agrees(shown, fmt, digits, float(expected)):
                        problems.append(f"{explorer_id}.{name} at {values}: page {shown!r}, library {expected!r}")
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        if errors:
            problems.append(f"{rel}: console errors: {errors[:5]}")
        leaving = outside_requests(browser, served)
        if leaving:
            problems.append(f"{rel}: requests leave the site: {leaving[:5]}")
    assert not problems, "\n".join(problems[:20])


def test_parity_check_catches_a_wrong_display():
    from explorer_reference import agrees

    assert agrees("1.50 GB", "bytes", 2, 1.504e9) and not agrees("1.50 GB", "bytes", 2, 1.506e9)
    assert agrees("3.140e23", "sci", 3, 3.1404e23) and not agrees("3.140e23", "sci", 3, 3.1406e23)
    assert agrees("1,234", "count", 0, 1234.4) and not agrees("1,234", "count", 0, 1235)


MEASURE_CODE = """
const pres = [...document.querySelectorAll('div.cell div.highlight pre')];
const probe = document.createElement('span');
probe.textContent = 'x'.repeat(100);
pres[0].appendChild(probe);
const need = probe.getBoundingClientRect().width;
probe.remove();
return {need, have: pres[0].clientWidth - parseFloat(getComputedStyle(pres[0]).paddingLeft)
                    - parseFloat(getComputedStyle(pres[0]).paddingRight)};
"""


def test_a_100_character_code_line_fits_at_1280_px(built_site: Path, served: str, browser):
    browser.set_window_size(1280, 1200)
    browser.get(f"{served}/chapters/02-compute/compute-and-memory.html")
    size = browser.execute_script(MEASURE_CODE)
    browser.set_window_size(1280, 1600)
    assert size["need"] <= size["have"], f"100 characters need {size['need']:.0f} px, a code cell has {size['have']:.0f}"
