"""The whole book offline: one PDF, and a zip of every chapter notebook (``make pdf``).

Usage: python scripts/pdf.py [--out DIR] [--work DIR]
       (defaults: _build/html/downloads for the files, _build/pdf for the single-page build)

1. Sphinx's single-page HTML build of the same sources (``jupyter-book build --builder
   singlehtml``, warnings are errors).
2. That page, served on 127.0.0.1, is opened in Debian's headless Chromium (the browser the site
   test uses) with every host but 127.0.0.1 unresolvable; any request to another host is an
   error. After MathJax has typeset the page and every image has loaded, a script rearranges it
   for print: a title page and a contents page made from ``_toc.yml``, one heading level per
   part / page / section (so the PDF outline follows the book), folded inputs and solutions
   opened, navigation and buttons dropped, output too wide for the page shrunk.
3. Chromium prints it (DevTools ``Page.printToPDF``: A4, page numbers in the footer, tagged PDF
   with a document outline). The first print's outline tells on which page each part and page
   starts; those numbers go into the contents page and the page is printed again (same layout,
   checked). pikepdf rewrites the result compactly and repairs the outline's titles.
4. The PDF is checked on its text (``pdf_problems``: every page title in order, no blank page, no
   raw TeX; the contents' numbers are where the titles stand) and the chapter notebooks, with
   their stored outputs, are zipped in their folders (``zip_problems`` checks the zip).

The PDF and the zip land in ``_build/html/downloads/``, which the preface links to (so run it
after ``make book``). tests/test_pdf.py runs it in the slow tier.
"""
from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOWNLOADS = ROOT / "_build" / "html" / "downloads"
PDF_NAME = "transformer-review-and-challenges.pdf"
ZIP_NAME = "transformer-review-and-challenges-notebooks.zip"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# A4 in inches, margins in inches; content is laid out at 1/SCALE of the printed size.
PAPER = (8.27, 11.69)
MARGIN = {"top": 0.55, "bottom": 0.6, "left": 0.6, "right": 0.6}
SCALE = 0.75
FOOTER = ('<div style="width:100%;font-size:9px;color:#444;text-align:center;'
          'font-family:sans-serif"><span class="pageNumber"></span></div>')


# --- What the book contains, from _toc.yml -----------------------------------------------------

@dataclass
class Entry:
    """One page of the book: its Sphinx docname, its title (first heading) and its depth."""
    docname: str
    title: str
    level: int = 0  # 0: a chapter (or the preface), 1: a section of a chapter in _toc.yml


@dataclass
class Part:
    caption: str
    entries: list[Entry] = field(default_factory=list)


def page_title(root: Path, docname: str) -> str:
    """The first ``# `` heading of a page: the .ipynb when there is one (chapters), else the .md."""
    ipynb, md = root / f"{docname}.ipynb", root / f"{docname}.md"
    if ipynb.exists():
        cells = json.loads(ipynb.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    elif md.exists():
        text = md.read_text(encoding="utf-8")
    else:
        raise ValueError(f"_toc.yml lists {docname!r}, but neither {ipynb} nor {md} exists")
    match = re.search(r"^# +(.+?)\s*$", text, re.M)
    if not match:
        raise ValueError(f"{docname}: no '# title' heading; give the page a level-1 title")
    return match.group(1)


def book_outline(root: Path = ROOT) -> list[Part]:
    """The book as _toc.yml orders it: the root page as "Preface", then each part's pages."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    if toc.get("format") != "jb-book" or "parts" not in toc:
        raise ValueError("_toc.yml: expected format jb-book with parts")
    parts = [Part("Preface", [Entry(toc["root"], page_title(root, toc["root"]))])]

    def walk(entries, level, part):
        for entry in entries or []:
            if "file" in entry:
                part.entries.append(Entry(entry["file"], page_title(root, entry["file"]), level))
            walk(entry.get("sections"), level + 1, part)

    for spec in toc["parts"]:
        part = Part(spec.get("caption") or "")
        walk(spec.get("chapters"), 0, part)
        parts.append(part)
    return parts


def chapter_titles(root: Path = ROOT) -> list[str]:
    """Every page title after the preface, in book order."""
    return [e.title for p in book_outline(root)[1:] for e in p.entries]


# --- Checks on a PDF (tests/test_pdf.py runs them; main() too) -----------------------------------

@dataclass
class PageText:
    """What one PDF page shows: text in the body (the footer's page number left out), images."""
    text: str
    images: int = 0


RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\(?:frac|sqrt|mathrm|mathbf|left|right|begin|end|sum|cdot|tfrac)\b")


def _squash(text: str) -> str:
    """Text for searching: ligatures split (NFKC), typographic quotes plain, no whitespace, lower case."""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", "", text).lower()  # no spaces at all: extraction adds and drops some


def pdf_pages(path: Path) -> list[PageText]:
    """Read a PDF with pypdf: per page, the text above the bottom margin (so not the footer's page
    number), in reading order (top to bottom, then left to right), and the images drawn."""
    from pypdf import PdfReader

    pages = []
    for page in PdfReader(str(path)).pages:
        floor = float(page.mediabox.bottom) + MARGIN["bottom"] * 72  # below it: the footer
        pieces: list[tuple[float, float, str]] = []

        def keep(text, cm, tm, font, size, _pieces=pieces, _floor=floor):
            if not text:
                return
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]  # the text's origin in user space
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            if y >= _floor:
                _pieces.append((-round(y), x, text))

        page.extract_text(visitor_text=keep)
        lines: dict[int, list[tuple[float, str]]] = {}
        for y, x, text in pieces:
            lines.setdefault(y, []).append((x, text))
        ordered = ("".join(t for _, t in sorted(lines[y], key=lambda p: p[0])) for y in sorted(lines))
        text = "\n".join(line for line in ordered if line.strip())
        pages.append(PageText(text, _images_drawn(page)))
    return pages


def _images_drawn(page) -> int:
    """How many image XObjects a page's resources hold, looking one level into form XObjects
    (Chromium wraps some drawings in forms). Not decoded: only their presence counts."""
    def count(resources, depth=0):
        xobjects = (resources or {}).get("/XObject") or {}
        n = 0
        for ref in xobjects.values():
            obj = ref.get_object()
            if obj.get("/Subtype") == "/Image":
                n += 1
            elif obj.get("/Subtype") == "/Form" and depth < 2:
                n += count(obj.get("/Resources"), depth + 1)
        return n

    return count(page.get("/Resources"))


def pdf_problems(pages: list[PageText], titles: list[str], contents_pages: int = 0) -> list[str]:
    """What is wrong with a book PDF: blank pages, chapter titles missing or out of order in the
    body (pages after the first ``contents_pages``, which hold the title and contents pages), and
    TeX that MathJax did not typeset. An empty list means the PDF passes."""
    if contents_pages < 0:
        raise ValueError(f"contents_pages={contents_pages}: give the number of front pages (0 or more)")
    if not pages:
        return ["the PDF has no pages"]
    if contents_pages >= len(pages):
        return ["the PDF has only its front pages"]
    problems = [f"page {i}: blank (no text, no image)" for i, p in enumerate(pages, 1)
                if not p.text.strip() and not p.images]
    body = [_squash(p.text) for p in pages[contents_pages:]]
    start = 0  # titles must appear in book order: search each one from the previous one's page
    for title in titles:
        want = _squash(title)
        hit = next((i for i in range(start, len(body)) if want in body[i]), None)
        if hit is None:
            where = "at all" if not any(want in b for b in body) else "after the previous chapter"
            problems.append(f"chapter title not found {where}: {title!r}")
        else:
            start = hit
    for i, page in enumerate(pages, 1):
        raw = RAW_TEX.findall(page.text)
        if raw:
            problems.append(f"page {i}: raw TeX left in the text: {sorted(set(raw))[:5]}")
    return problems


def zip_problems(zip_path: Path, root: Path = ROOT) -> list[str]:
    """Chapter notebooks missing from the zip, or stored there without their outputs."""
    expected = {p.relative_to(root).as_posix() for p in chapter_notebooks(root)}
    if not expected:
        return ["no chapter notebooks under chapters/"]
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        problems = [f"missing from the zip: {n}" for n in sorted(expected - names)]
        for name in sorted(expected & names):
            cells = json.loads(zf.read(name))["cells"]
            if not any(c.get("outputs") for c in cells if c["cell_type"] == "code"):
                problems.append(f"{name}: no stored outputs in the zip")
    return problems


# --- The notebook zip ----------------------------------------------------------------------------

def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


ZIP_README = """\
Transformer: review and challenges -- the chapter notebooks, with their stored outputs.

Each notebook keeps the folder it has in the book's repository (chapters/<part>/<page>.ipynb).
Its first code cell installs the book's Python package (transformer_challenges) when it is
missing, so a notebook runs on its own in Jupyter or Colab. On a CPU the chapters run in "fast"
mode, the mode of the stored outputs; on a GPU in "full" mode (TC_SCALE=fast|full overrides).
"""


def zip_notebooks(zip_path: Path, root: Path = ROOT) -> list[str]:
    """Write every chapter notebook (stored outputs included, folders kept) into ``zip_path``."""
    notebooks = chapter_notebooks(root)
    if not notebooks:
        raise ValueError(f"no notebooks under {root / 'chapters'}: run from the book's repository")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(".zip.part")
    names = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("README.txt", ZIP_README)
        for nb in notebooks:
            name = nb.relative_to(root).as_posix()
            zf.write(nb, name)
            names.append(name)
    tmp.replace(zip_path)
    return names


# --- Single-page HTML build ----------------------------------------------------------------------

def build_singlehtml(root: Path = ROOT, work: Path | None = None) -> Path:
    """Build the book as one HTML page (warnings are errors); return its folder."""
    work = work or root / "_build" / "pdf"
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jupyter_book), "build", str(root), "--builder", "singlehtml",
                           "--path-output", str(work), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=1200)
    lines = (proc.stdout + proc.stderr).splitlines()
    warnings = [line for line in lines if "WARNING" in line or "ERROR" in line]
    if proc.returncode or warnings:
        raise RuntimeError("single-page build failed:\n" + "\n".join(warnings or lines[-40:]))
    out = work / "_build" / "singlehtml"
    if not (out / f"{_root_doc(root)}.html").exists():
        raise RuntimeError(f"single-page build wrote no {out}/{_root_doc(root)}.html")
    return out


def _root_doc(root: Path) -> str:
    import yaml

    return yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))["root"]


# --- Printing ------------------------------------------------------------------------------------

PRINT_CSS = r"""
@media print {
  html, body { background: #fff !important; }
  /* the theme hides each container's first h1 in print and shows its own title block instead */
  .bd-article h1:first-of-type { display: block !important; }
  .onlyprint, #jb-print-docs-body, #jb-print-toc { display: none !important; }
  .bd-article h1, .bd-article h2, .bd-article h3, .bd-article h4, .bd-article h5, .bd-article h6 { color: #000 !important; }
  /* a folded input, opened: no summary line and no frame (a frame left alone at a page's foot
     when the code moves to the next page) */
  details.hide > summary { display: none !important; }
  details.hide.admonition { border: 0 !important; box-shadow: none !important; padding: 0 !important;
                            margin: 0 !important; background: none !important; }
  .bd-header, .bd-header-article, .header-article, .bd-sidebar-primary, .bd-sidebar-secondary,
  .bd-footer, .bd-footer-article, .bd-footer-content, .prev-next-area, .footer-article,
  .headerlink, .copybtn, .toggle-button, .sd-summary-up, .sd-summary-down, #pst-back-to-top,
  .search-button-field, .skip-link, .sidebar-toggle, .theme-switch-button, .pst-scrollable-table-container::-webkit-scrollbar,
  details > summary .summary-chevron-up, details > summary .summary-chevron-down { display: none !important; }
  .bd-container, .bd-container__inner, .bd-main, .bd-content, .bd-article-container, .bd-article,
  .bd-page-width { max-width: none !important; width: auto !important; margin: 0 !important;
                   padding: 0 !important; display: block !important; }
  body { font-size: 15px; }
  /* code wraps at the page edge; printed output keeps its lines (tables) and is shrunk to fit
     instead (FIT_JS), wrapping only what would need less than half size */
  pre { white-space: pre-wrap !important; overflow-wrap: anywhere; overflow: visible !important;
        max-height: none !important; }
  .cell_output pre { white-space: pre !important; overflow-wrap: normal; }
  .cell_output, .output, .highlight { overflow: visible !important; max-height: none !important; }
  /* a cell's input or output moves to the next page whole when it fits on one; the boxes inside
     must not also avoid breaking, or an empty frame is left at the foot of a page */
  div.cell_input, div.cell_output { break-inside: avoid-page; }
  pre, .highlight, div.cell_input details, div.cell_output .output { break-inside: auto !important; }
  img { max-width: 100% !important; height: auto !important; break-inside: avoid; }
  figure, .cell_output img { break-inside: avoid; }
  h1, h2, h3, h4, h5, h6 { break-after: avoid; }
  table { font-size: 0.85em; }
  .pst-scrollable-table-container { overflow: visible !important; }
  a { color: inherit; }
  details { break-inside: auto; }
  .tc-newpage { break-before: page; }
  .tc-titlepage { height: 9in; display: flex; flex-direction: column; justify-content: center;
                  text-align: center; }
  .tc-titlepage p.tc-booktitle { font-size: 2.6em; font-weight: 600; margin-bottom: 0.8em; }
  .tc-titlepage p { font-size: 1.2em; margin: 0.3em; }
  .tc-contents h1 { margin-bottom: 0.8em; }
  .tc-contents ol { list-style: none; padding: 0; margin: 0; }
  .tc-contents li { display: flex; align-items: baseline; margin: 0.25em 0; break-inside: avoid; }
  .tc-contents li.tc-part { font-weight: 700; margin-top: 0.9em; }
  .tc-contents li.tc-level-1 { padding-left: 1.6em; }
  .tc-contents li a { text-decoration: none; }
  .tc-contents .tc-dots { flex: 1; border-bottom: 1px dotted #888; margin: 0 0.4em; min-width: 2em; }
  .tc-contents .tc-page { min-width: 2.5em; text-align: right; font-variant-numeric: tabular-nums; }
  h1.tc-part-title { font-size: 2.2em; margin: 1.2em 0 1em; padding-bottom: 0.3em;
                     border-bottom: 2px solid #888; }
}
"""

# Runs in the page after MathJax and the images are done. arguments[0]: the book outline and
# the page numbers to show ("" before the first print), arguments[1]: the CSS above.
ARRANGE_JS = r"""
const [book, css] = arguments;
const style = document.createElement('style'); style.textContent = css; document.head.append(style);
// Open everything a reader would have to click: folded inputs, dropdowns, solutions.
document.querySelectorAll('details').forEach(d => d.open = true);
document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
document.querySelectorAll('.toggle-button').forEach(e => e.remove());
document.querySelectorAll('[hidden]').forEach(e => { if (e.closest('article')) e.hidden = false; });

// A link to another file of the served folder (a download, an image file) would point into
// the local server from the PDF: keep its text, drop the link. Links within the page stay.
for (const a of Array.from(document.querySelectorAll('a[href]'))) {
  const u = new URL(a.href, location.href);
  if (u.origin === location.origin && u.pathname !== location.pathname) a.replaceWith(...a.childNodes);
}

const article = document.querySelector('article.bd-article') || document.querySelector('[role=main]');
if (!article) return 'no article element';
const intro = article.querySelector(':scope > section') || article.firstElementChild;
const book_div = document.createElement('div'); book_div.id = 'tc-book';
intro.after(book_div);

function rename(el, tag) {   // a heading with another level, same attributes and content
  if (el.tagName.toLowerCase() === tag) return;
  const n = document.createElement(tag);
  for (const a of el.attributes) n.setAttribute(a.name, a.value);
  while (el.firstChild) n.append(el.firstChild);
  el.replaceWith(n);
}
function relevel(root, base) {  // a heading's level: base + its section depth inside root
  for (const h of Array.from(root.querySelectorAll('h1,h2,h3,h4,h5,h6'))) {
    let depth = 0;
    for (let s = h.parentElement; s && s !== root.parentElement; s = s.parentElement)
      if (s.tagName === 'SECTION') depth += 1;
    rename(h, 'h' + Math.min(6, base + Math.max(depth, 1) - 1));
  }
}

const missing = [];
const esc = s => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
let contents = '<ol>';
book.parts.forEach((part, pi) => {
  if (pi === 0) {  // the preface: the root page, already at the top of the article
    const e = part.entries[0];
    intro.id = intro.id || 'tc-preface';
    intro.classList.add('tc-newpage');
    relevel(intro, 1);
    contents += `<li class="tc-level-0"><a href="#${intro.id}">${esc(part.caption)}</a>` +
                `<span class="tc-dots"></span><span class="tc-page">${e.page}</span></li>`;
    return;
  }
  const head = document.createElement('h1');
  head.className = 'tc-part-title tc-newpage'; head.id = 'tc-part-' + pi; head.textContent = part.caption;
  book_div.append(head);
  contents += `<li class="tc-part"><a href="#tc-part-${pi}">${esc(part.caption)}</a>` +
              `<span class="tc-dots"></span><span class="tc-page">${part.page}</span></li>`;
  part.entries.forEach((e, ei) => {
    const marker = document.getElementById('document-' + e.docname);
    const section = marker && marker.nextElementSibling;
    if (!section) { missing.push(e.docname); return; }
    book_div.append(marker, section);   // flat: a page's sub-pages come out of its toctree
    if (ei > 0) section.classList.add('tc-newpage');
    contents += `<li class="tc-level-${e.level}"><a href="#${section.id}">${esc(e.title)}</a>` +
                `<span class="tc-dots"></span><span class="tc-page">${e.page}</span></li>`;
  });
});
// Heading levels: part h1 > page h2 > its sections h3...; the preface h1 > h2.
for (const s of book_div.querySelectorAll(':scope > section')) relevel(s, 2);
article.querySelectorAll('.toctree-wrapper').forEach(w => { if (!w.textContent.trim()) w.remove(); });

// Chromium's PDF outline takes each heading's laid-out text, which drops formulas and the space
// at a line break; the plain text of each heading (a formula as MathJax's assistive MathML
// reads it) goes back to Python, which puts it into the outline.
const headings = [];
for (const h of article.querySelectorAll('h1,h2,h3,h4,h5,h6')) {
  const copy = h.cloneNode(true);
  copy.querySelectorAll('.headerlink').forEach(e => e.remove());
  copy.querySelectorAll('mjx-container').forEach(m => {
    const mml = m.querySelector('mjx-assistive-mml');
    m.replaceWith(mml ? mml.textContent : '');
  });
  headings.push(copy.textContent.replace(/\s+/g, ' ').trim());
}

const front = document.createElement('div');
front.innerHTML =
  `<div class="tc-titlepage"><p class="tc-booktitle">${esc(book.title)}</p>` +
  `<p>${esc(book.author)}</p><p>Version ${esc(book.version)}</p></div>` +
  `<div class="tc-contents tc-newpage"><h1 id="tc-contents">Contents</h1>${contents}</ol></div>`;
article.prepend(front);
return {missing: missing, headings: ['Contents'].concat(headings)};
"""

WAIT_JS = r"""
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => i.loading = 'eager');
const images = Promise.all(imgs.map(i => i.complete ? null :
  new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
const math = (window.MathJax && MathJax.startup) ? MathJax.startup.promise : Promise.reject('no MathJax');
Promise.all([images, math, document.fonts.ready]).then(() => {
  const els = Array.from(document.querySelectorAll('.math'));
  done({ok: true,
        math: els.length,
        untypeset: els.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60)),
        errors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent.slice(0, 60)),
        broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))});
}).catch(e => done({ok: false, error: String(e)}));
"""

# After the arrangement, at the printed width: shrink what is still wider than the page.
FIT_JS = r"""
let n = 0;
const sel = 'mjx-container[display="true"], .cell_output pre, .cell_output table, table.table';
for (const el of document.querySelectorAll(sel)) {
  const w = el.scrollWidth, c = el.clientWidth || el.parentElement.clientWidth;
  if (c > 0 && w > c + 1) {
    n += 1;
    if (el.tagName === 'PRE' && c / w < 0.5) { el.style.setProperty('white-space', 'pre-wrap', 'important'); continue; }
    el.style.zoom = Math.max(0.5, c / w).toFixed(3);
  }
}
return n;
"""


@functools.lru_cache(maxsize=None)
def _version(root: Path) -> str:
    init = (root / "code/transformer_challenges/__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', init, re.M)[1]


def _serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _browser(width_px: int):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        raise RuntimeError("Chromium/chromedriver not found: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width_px},1600",
                 # offline: any host but 127.0.0.1 fails to resolve (and is reported below)
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.command_executor.client_config.timeout = 900  # printing a few hundred pages takes a while
    driver.set_page_load_timeout(300)
    driver.set_script_timeout(600)
    return driver


def outside_requests(driver, origin: str) -> list[str]:
    """URLs the page requested from anywhere but the local server (data: and blob: excepted)."""
    urls = set()
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            if not url.startswith((origin, "data:", "blob:", "about:")):
                urls.add(url)
    return sorted(urls)


def _print(driver, path: Path) -> None:
    params = {"paperWidth": PAPER[0], "paperHeight": PAPER[1], "scale": SCALE,
              "marginTop": MARGIN["top"], "marginBottom": MARGIN["bottom"],
              "marginLeft": MARGIN["left"], "marginRight": MARGIN["right"],
              "printBackground": True, "displayHeaderFooter": True,
              "headerTemplate": "<span></span>", "footerTemplate": FOOTER,
              "generateTaggedPDF": True, "generateDocumentOutline": True}
    data = driver.execute_cdp_cmd("Page.printToPDF", params)["data"]
    path.write_bytes(base64.b64decode(data))


def _keys(book: list[Part]):
    """(key, title, starts a page) for the preface, every part and every page, in book order."""
    for pi, part in enumerate(book):
        if pi:
            yield f"part-{pi}", part.caption, True
        for ei, e in enumerate(part.entries):
            yield e.docname, e.title, pi == 0 or ei > 0  # a part's first page follows its title


def start_pages(pages: list[PageText], book: list[Part], first: int) -> dict[str, int]:
    """1-based page on which the preface, each part and each page of the book starts, searched in
    order from index ``first`` (the preface's page): every title begins its page, except that a
    part's first page shares the page of the part's title."""
    found, start = {}, first
    for key, title, at_top in _keys(book):
        want = _squash(title)
        hit = next((i for i in range(start, len(pages))
                    if (_squash(pages[i].text).startswith(want) if at_top else want in _squash(pages[i].text))),
                   None)
        if hit is None:
            raise RuntimeError(f"{title!r} not found in the printed PDF after page {start + 1}")
        found[key], start = hit + 1, hit
    return found


def outline_pages(path: Path, book: list[Part]) -> dict[str, int]:
    """The same pages as ``start_pages``, read from the PDF outline (Chromium makes it from the
    headings): each key is the next outline item, in order, whose title is the expected one."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    items: list[tuple[str, int]] = []

    def walk(nodes):
        for node in nodes:
            if isinstance(node, list):
                walk(node)
            else:
                items.append((_squash(str(node.title)), reader.get_destination_page_number(node) + 1))

    walk(reader.outline)
    found, at = {}, 0
    for key, title, _ in _keys(book):
        want = _squash(title)
        hit = next((j for j in range(at, len(items)) if items[j][0] in (want, want + want)), None)
        if hit is None:
            raise RuntimeError(f"{title!r} is not in the PDF outline (after item {at})")
        found[key], at = items[hit][1], hit + 1
    return found


def outline_titles(titles: list[str], headings: list[str]) -> list[str]:
    """Chromium's outline titles (in outline order) replaced by the headings' plain text: each
    title is matched to the next heading, in document order, whose text it is, or begins (the
    formula left out), or is twice over ("AbcAbc"). A title without a match stays as it is."""
    keys = [_squash(h) for h in headings]
    fixed, at = [], 0
    for title in titles:
        t = _squash(title)
        hit = next((j for j in range(at, len(keys))
                    if t and (keys[j] == t or keys[j] + keys[j] == t or keys[j].startswith(t))), None)
        if hit is None:
            fixed.append(title)
        else:
            fixed.append(headings[hit])
            at = hit + 1
    return fixed


def _finish(src: Path, dst: Path, headings: list[str]) -> int:
    """Rewrite Chromium's PDF compactly (object streams: its tagged structure is most of the
    bytes) with the outline's titles repaired (``outline_titles``); return the outline's size."""
    import pikepdf

    with pikepdf.open(src) as pdf:
        with pdf.open_outline() as outline:
            items = []
            stack = list(reversed(outline.root))
            while stack:  # depth first, in document order
                item = stack.pop()
                items.append(item)
                stack.extend(reversed(item.children))
            for item, title in zip(items, outline_titles([str(i.title) for i in items], headings)):
                item.title = title
        pdf.save(dst, object_stream_mode=pikepdf.ObjectStreamMode.generate, compress_streams=True)
    return len(items)


def print_book(site: Path, pdf_path: Path, root: Path = ROOT) -> dict:
    """Print the single-page build in ``site`` to ``pdf_path``; return facts about the run."""
    import yaml

    cfg = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    book = book_outline(root)
    width_px = round((PAPER[0] - MARGIN["left"] - MARGIN["right"]) * 96 / SCALE)
    httpd = _serve(site)
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    url = f"{origin}/{_root_doc(root)}.html"
    raw = pdf_path.with_name(pdf_path.name + ".chromium")
    driver = _browser(width_px)
    facts: dict = {}

    def load() -> dict:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        driver.get(url)
        state = driver.execute_async_script(WAIT_JS)
        if not state.get("ok"):
            raise RuntimeError(f"the page did not finish loading: {state.get('error')}")
        bad = {k: state[k] for k in ("untypeset", "errors", "broken") if state[k]}
        if bad:
            raise RuntimeError(f"math or images did not render: {bad}")
        outside = outside_requests(driver, origin)
        if outside:
            raise RuntimeError("the single page loads from outside 127.0.0.1 (not offline):\n" + "\n".join(outside))
        return state

    def arrange(numbers: dict[str, int]) -> None:
        data = {"title": cfg.get("title", ""), "author": cfg.get("author", ""), "version": _version(root),
                "parts": [{"caption": p.caption, "page": numbers.get(f"part-{i}", "00"),
                           "entries": [{"docname": e.docname, "title": e.title, "level": e.level,
                                        "page": numbers.get(e.docname, "00")} for e in p.entries]}
                          for i, p in enumerate(book)]}
        result = driver.execute_script(ARRANGE_JS, data, PRINT_CSS)
        if not isinstance(result, dict) or result["missing"]:
            raise RuntimeError(f"arranging the page for print failed: {result}")
        facts["headings"] = result["headings"]
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        facts["shrunk"] = driver.execute_script(FIT_JS)

    try:
        tick = time.perf_counter()
        facts["math_elements"] = load()["math"]
        facts["load_s"] = time.perf_counter() - tick
        # First print: where does each part and page start? (The contents shows "00" for now.)
        tick = time.perf_counter()
        arrange({})
        _print(driver, raw)
        numbers = outline_pages(raw, book)
        facts["first_print_s"] = time.perf_counter() - tick
        # Second print, of a freshly loaded page, with those numbers in the contents.
        tick = time.perf_counter()
        load()
        arrange(numbers)
        _print(driver, raw)
        again = outline_pages(raw, book)
        if again != numbers:
            moved = {k: (numbers[k], again.get(k)) for k in numbers if again.get(k) != numbers[k]}
            raise RuntimeError(f"the page numbers moved between the two prints: {moved}")
        facts["second_print_s"] = time.perf_counter() - tick
        facts["outline_items"] = _finish(raw, pdf_path, facts["headings"])
        facts["numbers"] = numbers
    finally:
        driver.quit()
        httpd.shutdown()
        httpd.server_close()
        raw.unlink(missing_ok=True)
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=DOWNLOADS, help="folder for the PDF and the zip")
    parser.add_argument("--work", type=Path, default=ROOT / "_build" / "pdf", help="single-page build folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pdf_path, zip_path = args.out / PDF_NAME, args.out / ZIP_NAME
    book = book_outline(ROOT)
    t0 = time.perf_counter()
    site = build_singlehtml(ROOT, args.work)
    t1 = time.perf_counter()
    print(f"single-page HTML build: {t1 - t0:.0f} s ({site})", flush=True)

    part = pdf_path.with_name(pdf_path.name + ".part")
    facts = print_book(site, part)
    t2 = time.perf_counter()
    pages = pdf_pages(part)
    front = facts["numbers"][book[0].entries[0].docname] - 1  # title page and contents
    problems = pdf_problems(pages, chapter_titles(ROOT), front)
    shown = start_pages(pages, book, front)  # the contents' page numbers, checked on the text
    problems += [f"contents says {k} starts on page {facts['numbers'][k]}, the text finds page {v}"
                 for k, v in shown.items() if v != facts["numbers"][k]]
    if problems:
        raise SystemExit(f"the PDF ({part}) fails its checks:\n" + "\n".join(problems))
    part.replace(pdf_path)
    t3 = time.perf_counter()
    print(f"PDF: {pdf_path}: {len(pages)} pages, {pdf_path.stat().st_size / 2**20:.1f} MiB, "
          f"{facts['outline_items']} outline entries, {facts['math_elements']} formulas, "
          f"{facts['shrunk']} wide blocks shrunk to fit", flush=True)
    print(f"  load and typeset {facts['load_s']:.0f} s, two prints {facts['first_print_s']:.0f} + "
          f"{facts['second_print_s']:.0f} s, checks {t3 - t2:.0f} s", flush=True)
    names = zip_notebooks(zip_path, ROOT)
    problems = zip_problems(zip_path, ROOT)
    if problems:
        raise SystemExit("the notebook zip fails its checks:\n" + "\n".join(problems))
    print(f"zip: {zip_path}: {len(names)} notebooks, {zip_path.stat().st_size / 2**20:.1f} MiB")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
