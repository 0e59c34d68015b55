"""Do the built pages fit? Every table and code block of each chapter, measured in headless
Chromium at the widths readers use, against the text column.

A table's width depends on fonts, wrapping and the theme's CSS, which only a browser knows, so
this is a developer's check (``make pages``), not part of ``make test``. Each page is copied
with a small script that, once the page has laid out, writes the column's width and every
table's and code block's width into the DOM; ``chromium --dump-dom`` returns it.

    python -m dlga.book pages [--html _build/html] [--widths 1400 800] [--screenshots DIR]
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# As a root process on a machine without network: no sandbox, no GPU, nothing fetched at start.
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars")
MARK = "dlga-measure"
MEASURE_SCRIPT = """<script>
window.addEventListener('load', () => {
  const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const cs = getComputedStyle(col);
  const out = {column: col.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight), tables: [], code: []};
  col.querySelectorAll('table').forEach((t) => {
    const cap = t.querySelector('caption');
    out.tables.push({width: Math.ceil(t.getBoundingClientRect().width), caption: cap ? cap.textContent.trim() : ''});
  });
  col.querySelectorAll('pre').forEach((p) => {
    if (p.id !== '%(mark)s' && p.scrollWidth > p.clientWidth + 1)
      out.code.push({width: p.scrollWidth, visible: p.clientWidth, text: p.textContent.trim().slice(0, 60)});
  });
  const pre = document.createElement('pre'); pre.id = '%(mark)s'; pre.style.display = 'none';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>""" % {"mark": MARK}


@dataclass(frozen=True)
class Overflow:
    """A table or code block wider than the text column of ``page`` at ``window`` px."""

    page: str
    window: int
    kind: str  # "table" or "code"
    width: int  # px the element needs
    column: int  # px of the text column
    what: str  # the table's caption or the code's first characters


def find_browser() -> str:
    """The path of a Chromium-like browser, or a clear error saying how to get one."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(f"none of {', '.join(BROWSERS)} is on PATH: the page check needs headless Chromium "
                            "(Debian/Ubuntu: apt-get install chromium)")


def with_measure_script(html: str) -> str:
    """``html`` with :data:`MEASURE_SCRIPT` before its ``</body>`` (at its end if it has none)."""
    return html.replace("</body>", MEASURE_SCRIPT + "</body>", 1) if "</body>" in html else html + MEASURE_SCRIPT


def read_measure(dom: str) -> dict:
    """The measurement a page's script left in ``dom`` (what ``--dump-dom`` printed)."""
    m = re.search(rf'<pre id="{MARK}"[^>]*>(.*?)</pre>', dom, re.S)
    if m is None:
        raise ValueError("the page left no measurement: did it load (a JavaScript error, or a page without <body>)?")
    return json.loads(unescape(m.group(1)))


def overflows(page: str, window: int, measure: dict, slack_px: int = 1) -> list[Overflow]:
    """The tables and code blocks of one measurement wider than the column (by more than ``slack_px``)."""
    column = int(measure["column"])
    out = [Overflow(page, window, "table", int(t["width"]), column, t["caption"][:80])
           for t in measure["tables"] if t["width"] > column + slack_px]
    out += [Overflow(page, window, "code", int(c["width"]), int(c["visible"]), c["text"])
            for c in measure["code"]]
    return out


def measure_page(browser: str, page: Path, window: int, screenshot: Path | None = None, height: int = 2400) -> dict:
    """Lay ``page`` (a copy carrying the script) out at ``window`` px wide and read its measurement;
    with ``screenshot``, also save a PNG of the first ``height`` px."""
    base = [browser, *BROWSER_FLAGS, f"--window-size={window},{height}", "--virtual-time-budget=5000"]
    with tempfile.TemporaryDirectory(prefix="dlga-chromium-") as profile:
        done = subprocess.run([*base, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([*base, f"--user-data-dir={profile}", f"--screenshot={screenshot}", page.as_uri()],
                           capture_output=True, timeout=120)
    return read_measure(done.stdout)


def check_pages(html_dir: str | Path, widths: Sequence[int] = (1400, 800), pages: Iterable[str] | None = None,
                screenshots: str | Path | None = None, browser: str | None = None) -> tuple[pd.DataFrame, list[Overflow]]:
    """Measure every chapter page of a built book (``html_dir/book/*.html``) at each width.

    Returns:
        One row per page and width (column px, tables, widest table px, code blocks that run
        past the column) and the list of overflows.
    """
    html_dir = Path(html_dir)
    chapters = sorted((html_dir / "book").glob("*.html"))
    if pages is not None:
        wanted = set(pages)
        chapters = [p for p in chapters if p.stem in wanted]
    if not chapters:
        raise FileNotFoundError(f"no chapter pages in {html_dir / 'book'}: build the book first (make book)")
    browser = browser or find_browser()
    rows, found = [], []
    with tempfile.TemporaryDirectory(prefix="dlga-pages-") as tmp:
        copy = Path(tmp) / "html"
        shutil.copytree(html_dir, copy)  # the page's CSS and scripts resolve as in the book
        for chapter in chapters:
            page = copy / "book" / chapter.name
            page.write_text(with_measure_script(page.read_text()))
            for window in widths:
                shot = None if screenshots is None else Path(screenshots) / f"{chapter.stem}-{window}.png"
                measure = measure_page(browser, page, window, shot)
                mine = overflows(chapter.stem, window, measure)
                found += mine
                rows.append({"page": chapter.stem, "window px": window, "column px": int(measure["column"]),
                             "tables": len(measure["tables"]),
                             "widest table px": max((int(t["width"]) for t in measure["tables"]), default=0),
                             "too wide": sum(o.kind == "table" for o in mine),
                             "code past the column": sum(o.kind == "code" for o in mine)})
    return pd.DataFrame(rows), found


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from dlga.settings import BUILD_DIR

    ap = argparse.ArgumentParser(prog="python -m dlga.book pages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=str(BUILD_DIR / "html"), help="the built book (default: %(default)s)")
    ap.add_argument("--widths", type=int, nargs="+", default=[1400, 800], help="browser window widths, px")
    ap.add_argument("--pages", nargs="+", help="only these chapters (e.g. 05_ablations)")
    ap.add_argument("--screenshots", help="also save a PNG of each page and width into this folder")
    args = ap.parse_args(argv)
    table, found = check_pages(args.html, args.widths, args.pages, args.screenshots)
    print(table.to_string(index=False))
    for o in found:
        print(f"{o.page} at {o.window} px: {o.kind} {o.width} px in a {o.column} px column: {o.what}")
    print("every table and code block fits its column" if not found else f"{len(found)} elements run past their column")
    return 0 if not found else 1
