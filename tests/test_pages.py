"""dlga.book.pages: the page check that measures tables and code against the text column."""

from __future__ import annotations

import shutil

import pytest

from dlga.book import pages

COLUMN_PAGE = """<html><head><style>article {{ width: 600px; padding: 0 20px; }}</style></head><body>
<article class="bd-article">
<table><caption>narrow</caption><tr><td>1</td></tr></table>
<table style="width: 900px"><caption>wide one</caption><tr><td>2</td></tr></table>
<pre style="white-space: pre">{code}</pre>
</article></body></html>"""


def test_the_script_goes_before_the_body_ends_and_its_measurement_is_read_back():
    page = pages.with_measure_script("<html><body><p>x</p></body></html>")
    assert page.index(pages.MARK) < page.index("</body>") and page.count("<script>") == 1
    dom = f'<pre id="{pages.MARK}" style="display: none;">{{"column": 772, "tables": [], "code": []}}</pre>'
    assert pages.read_measure(dom) == {"column": 772, "tables": [], "code": []}
    with pytest.raises(ValueError, match="left no measurement"):
        pages.read_measure("<html></html>")


def test_overflows_are_the_tables_wider_than_the_column_and_every_clipped_code_block():
    measure = {"column": 772, "tables": [{"width": 772, "caption": "fits"}, {"width": 876, "caption": "Table 4"}],
               "code": [{"width": 900, "visible": 700, "text": "print(...)"}]}
    found = pages.overflows("05_ablations", 1400, measure)
    assert [(o.kind, o.width, o.column, o.what) for o in found] == [("table", 876, 772, "Table 4"),
                                                                    ("code", 900, 700, "print(...)")]


def test_without_a_browser_the_error_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(pages.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        pages.find_browser()
    with pytest.raises(FileNotFoundError, match="build the book first"):
        pages.check_pages(tmp_path)


def test_chromium_finds_the_wide_table_and_the_clipped_code(tmp_path):
    if not any(shutil.which(b) for b in pages.BROWSERS):
        pytest.skip("no Chromium on this machine (apt-get install chromium); the pure parts are tested above")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "page.html").write_text(COLUMN_PAGE.format(code="x" * 400))
    table, found = pages.check_pages(tmp_path, widths=(1400,), screenshots=tmp_path / "shots")
    assert table.loc[0, "column px"] == 600 and table.loc[0, "tables"] == 2 and table.loc[0, "widest table px"] == 900
    assert [(o.kind, o.what) for o in found] == [("table", "wide one"), ("code", "x" * 60)]
    assert (tmp_path / "shots" / "page-1400.png").stat().st_size > 1000
