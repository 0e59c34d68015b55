"""CITATION.cff cites this project and the paper, and says what the book's front page says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
FRONT_PAGE = ROOT / "book" / "01_introduction.ipynb"  # the root of _toc.yml


def _cff() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def _plain(markdown: str) -> str:
    """Markdown as one line of words: quote marks, emphasis and line breaks removed."""
    text = re.sub(r"^\s*>\s?", "", markdown, flags=re.M).replace("*", "")
    return " ".join(text.split())


def _how_to_cite() -> str:
    nb = nbformat.read(FRONT_PAGE, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## How to cite")]
    assert len(cells) == 1, "the front page needs one 'How to cite' section"
    return _plain(cells[0])


def test_citation_file_has_the_keys_cff_1_2_requires():
    cff = _cff()
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"].strip() and cff["title"].strip()
    assert cff["authors"] and all(a.get("name") or a.get("family-names") for a in cff["authors"])
    assert cff["type"] == "software"
    assert cff["license"] == "MIT"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_paper_reference_is_the_paper_the_book_reproduces():
    papers = [r for r in _cff()["references"] if r["type"] == "article"]
    assert len(papers) == 1
    paper = papers[0]
    # The title the README quotes, and the authors the introduction and Decisions name.
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"*{paper['title']}*" in readme
    families = [a["family-names"] for a in paper["authors"]]
    assert families == ["He", "Chan", "Wang"]
    intro = nbformat.read(FRONT_PAGE, as_version=4).cells[0].source
    assert f"{families[0]}, {families[1]} and {families[2]} propose **DLGA-CNN**" in " ".join(intro.split())
    assert f"The paper ({families[0]}, {families[1]} and {families[2]})" in (ROOT / "book" / "decisions.md").read_text()
    assert re.fullmatch(r"10\.\d{4,9}/\S+", paper["doi"])


def test_front_page_says_how_to_cite_the_paper_and_the_project():
    cff = _cff()
    paper = cff["references"][0]
    text = _how_to_cite()
    assert paper["title"] in text
    assert f"https://doi.org/{paper['doi']}" in text
    assert f"{paper['journal']}, {paper['volume']}, {paper['start']}-{paper['end']}" in text
    assert f"({paper['year']})" in text
    assert cff["title"] in text
    assert f"version {cff['version']}" in text
    assert cff["authors"][0]["name"] in text
    assert "CITATION.cff" in text
