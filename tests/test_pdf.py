"""The book offline: one PDF and a zip of the chapter notebooks (scripts/pdf.py, `make pdf`).

The slow test (`make test-slow`) builds both once, into a temporary folder, and checks them:
every chapter title (the first heading of each page _toc.yml lists) in the PDF's text, in book
order, and in its outline; no blank page; no raw TeX left (MathJax typeset every formula); the
contents page's numbers are the pages the chapters start on; every chapter notebook is in the
zip with its outputs. The fast tests feed each check a broken input, to show that it can fail.
Without Chromium the slow test skips, unless TC_REQUIRE_BROWSER=1 (CI sets it).
"""
from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from bookcheck import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import pdf as book_pdf  # noqa: E402
from pdf import PageText  # noqa: E402

TITLES = ["The first chapter", "The second chapter: sums"]


def good_pages() -> list[PageText]:
    return [PageText("A book"), PageText("Contents The first chapter 3"),
            PageText("The first chapter\nIt adds 1 + 1 = 2."), PageText("", images=1),
            PageText("The second chapter: sums\nΣ i = n(n+1)/2")]


# --- The checks can fail --------------------------------------------------------------------------

def test_a_good_pdf_passes():
    assert book_pdf.pdf_problems(good_pages(), TITLES, contents_pages=2) == []


def test_blank_page_is_found():
    pages = good_pages() + [PageText("  \n ")]
    assert book_pdf.pdf_problems(pages, TITLES, 2) == ["page 6: blank (no text, no image)"]


def test_missing_or_misplaced_title_is_found():
    pages = good_pages()
    pages[4] = PageText("A chapter without its title")
    assert any("not found at all: 'The second chapter: sums'" in p
               for p in book_pdf.pdf_problems(pages, TITLES, 2))
    # the titles only in the contents do not count: the body starts after contents_pages
    assert book_pdf.pdf_problems(good_pages()[:2], TITLES[:1], 2) == ["the PDF has only its front pages"]
    swapped = good_pages()
    swapped[2], swapped[4] = swapped[4], swapped[2]
    assert any("after the previous chapter" in p for p in book_pdf.pdf_problems(swapped, TITLES, 2))


@pytest.mark.parametrize("raw", ["$$x^2$$", r"\frac{a}{b}", r"\(n\)", r"\begin{align}"])
def test_raw_tex_is_found(raw):
    pages = good_pages()
    pages[3] = PageText(f"a formula MathJax missed: {raw}")
    problems = book_pdf.pdf_problems(pages, TITLES, 2)
    assert len(problems) == 1 and problems[0].startswith("page 4: raw TeX")


def test_pdf_problems_validates_contents_pages():
    with pytest.raises(ValueError, match="contents_pages"):
        book_pdf.pdf_problems(good_pages(), TITLES, contents_pages=-1)


def _text_pdf(path: Path, pages: list[list[tuple[float, str]]]) -> Path:
    """A PDF whose pages show the given (y in points, text) lines in Helvetica."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    for lines in pages:
        page = writer.add_blank_page(595, 842)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
            {NameObject("/F1"): writer._add_object(font)})})
        stream = DecodedStreamObject()
        stream.set_data("".join(f"BT /F1 12 Tf 72 {y} Td ({text}) Tj ET\n" for y, text in lines).encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    writer.write(str(path))
    return path


def test_pdf_pages_reads_text_in_order_and_leaves_the_footer_out(tmp_path):
    pdf = _text_pdf(tmp_path / "t.pdf", [[(700, "The first chapter"), (760, "Top line"), (20, "7")],
                                          [(20, "8")]])
    pages = book_pdf.pdf_pages(pdf)
    assert [p.text for p in pages] == ["Top line\nThe first chapter", ""]
    # a page that shows only its page number in the footer is blank
    assert book_pdf.pdf_problems(pages, ["The first chapter"]) == ["page 2: blank (no text, no image)"]


def _notebook(path: Path, outputs: bool) -> None:
    cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "print(1)",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}] if outputs else []}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# A page"}, cell],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_zip_keeps_folders_and_its_check_can_fail(tmp_path):
    root = tmp_path / "book"
    _notebook(root / "chapters/01-a/one.ipynb", outputs=True)
    _notebook(root / "chapters/02-b/two.ipynb", outputs=True)
    zipped = tmp_path / "nb.zip"
    assert book_pdf.zip_notebooks(zipped, root) == ["chapters/01-a/one.ipynb", "chapters/02-b/two.ipynb"]
    assert book_pdf.zip_problems(zipped, root) == []
    _notebook(root / "chapters/03-c/three.ipynb", outputs=True)  # a chapter the zip lacks
    assert book_pdf.zip_problems(zipped, root) == ["missing from the zip: chapters/03-c/three.ipynb"]
    _notebook(root / "chapters/02-b/two.ipynb", outputs=False)   # stored without outputs
    book_pdf.zip_notebooks(zipped, root)
    assert book_pdf.zip_problems(zipped, root) == ["chapters/02-b/two.ipynb: no stored outputs in the zip"]
    with pytest.raises(ValueError, match="no notebooks"):
        book_pdf.zip_notebooks(tmp_path / "empty.zip", tmp_path / "nowhere")


def test_outline_titles_are_repaired_from_the_headings():
    headings = ["Contents", "Training FLOPs: 6ND", "Key takeaways", "Efficient attention: kernel variants"]
    chromium = ["Contents", "Training FLOPs: ", "Key takeawaysKey takeaways", "Efficient attention: kernelvariants",
                "Something else"]
    assert book_pdf.outline_titles(chromium, headings) == headings + ["Something else"]


def test_start_pages_finds_parts_and_pages_in_order():
    book = [book_pdf.Part("Preface", [book_pdf.Entry("intro", "A book")]),
            book_pdf.Part("Part one", [book_pdf.Entry("a", "The first chapter"),
                                       book_pdf.Entry("b", "The second chapter: sums", 1)])]
    pages = [PageText("A book"), PageText("Contents"), PageText("A book\npreface text"),
             PageText("Part one\nThe first chapter\nsee The second chapter: sums"),
             PageText("The second chapter: sums\n...")]
    assert book_pdf.start_pages(pages, book, 2) == {"intro": 3, "part-1": 4, "a": 4, "b": 5}
    with pytest.raises(RuntimeError, match="not found"):  # the chapter's title must begin its page
        book_pdf.start_pages(pages[:4], book, 2)


def test_page_titles_come_from_the_first_heading(tmp_path):
    (tmp_path / "p.md").write_text("intro text\n\n# The title\n\n## Section\n")
    assert book_pdf.page_title(tmp_path, "p") == "The title"
    (tmp_path / "q.md").write_text("no heading\n")
    with pytest.raises(ValueError, match="level-1 title"):
        book_pdf.page_title(tmp_path, "q")
    with pytest.raises(ValueError, match="neither"):
        book_pdf.page_title(tmp_path, "missing")
    outline = book_pdf.book_outline(ROOT)
    assert outline[0].caption == "Preface" and len(book_pdf.chapter_titles(ROOT)) == sum(
        len(p.entries) for p in outline[1:])


def test_the_preface_links_both_downloads():
    """The preface links the files by name with raw HTML (Sphinx does not resolve it: the files are
    made after the HTML build); the names must be the ones scripts/pdf.py writes."""
    intro = (ROOT / "intro.md").read_text(encoding="utf-8")
    for name in (book_pdf.PDF_NAME, book_pdf.ZIP_NAME):
        assert f'<a href="downloads/{name}">' in intro, f"intro.md does not link downloads/{name}"
    assert book_pdf.DOWNLOADS == ROOT / "_build" / "html" / "downloads"


# --- The real PDF (slow) --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    if not (Path(book_pdf.CHROMIUM).exists() and Path(book_pdf.CHROMEDRIVER).exists()):
        if os.environ.get("TC_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium/chromedriver not found; install Debian packages chromium chromium-driver")
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    base = tmp_path_factory.mktemp("pdf")
    assert book_pdf.main(["--out", str(base / "downloads"), "--work", str(base / "work")]) == 0
    return base / "downloads"


@pytest.mark.slow
def test_book_pdf(built: Path):
    from pypdf import PdfReader

    pdf = built / book_pdf.PDF_NAME
    assert pdf.exists() and pdf.stat().st_size > 0
    pages = book_pdf.pdf_pages(pdf)
    book = book_pdf.book_outline(ROOT)
    numbers = book_pdf.outline_pages(pdf, book)  # every part and chapter title is in the outline
    front = numbers[book[0].entries[0].docname] - 1
    titles = book_pdf.chapter_titles(ROOT)
    assert len(titles) >= 20
    problems = book_pdf.pdf_problems(pages, titles, front)
    # the contents page shows, for each part and chapter, the page on which its title stands
    shown = book_pdf.start_pages(pages, book, front)
    problems += [f"{k}: outline page {numbers[k]}, text page {v}" for k, v in shown.items() if v != numbers[k]]
    contents = book_pdf._squash(" ".join(p.text for p in pages[:front]))
    lines = [("Preface", book[0].entries[0].docname)] + [
        (label, key) for i, part in enumerate(book[1:], 1)
        for label, key in [(part.caption, f"part-{i}")] + [(e.title, e.docname) for e in part.entries]]
    problems += [f"the contents lacks the line {label!r} ... {numbers[key]}" for label, key in lines
                 if book_pdf._squash(f"{label}{numbers[key]}") not in contents]
    assert not problems, "\n".join(problems)
    assert len(PdfReader(str(pdf)).pages) == len(pages)


@pytest.mark.slow
def test_notebook_zip(built: Path):
    zipped = built / book_pdf.ZIP_NAME
    assert book_pdf.zip_problems(zipped, ROOT) == []
    with zipfile.ZipFile(zipped) as zf:
        names = set(zf.namelist())
    assert {p.relative_to(ROOT).as_posix() for p in book_pdf.chapter_notebooks(ROOT)} <= names
