"""The notes walkthrough (docs/notes/) cannot rot: every ```python block on its pages runs here, each in a fresh
namespace, from the repository root, as a reader would paste it; and every relative link between the pages leads to
a file and a heading that exist."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs" / "notes").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _snippets() -> list:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # the first line of code
            found.append(pytest.param(page, line, match.group(1), id=f"{page.name}:{line}"))
    return found


SNIPPETS = _snippets()


def test_the_walkthrough_has_a_page_per_note_and_snippets_on_each():
    assert [page.name for page in PAGES] == ["000.md", "001.md", "002.md", "003.md", "004.md", "README.md"]
    pages_with_code = {param.values[0].name for param in SNIPPETS}
    assert pages_with_code == {"000.md", "001.md", "002.md", "003.md", "004.md"}


@pytest.mark.parametrize("page,line,code", SNIPPETS)
def test_snippet_runs(page, line, code, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), {"__name__": "__main__"})


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped (letters of any script, digits, spaces,
    hyphens and underscores kept), spaces turned into hyphens."""
    kept = "".join(ch for ch in heading.strip().lower()
                   if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def _prose(page: Path) -> str:
    """The page without its code blocks."""
    return re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)


def _anchors(page: Path) -> set[str]:
    return {_github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", _prose(page), re.M)}


def test_relative_links_lead_to_existing_pages_and_headings():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: link to missing {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked), f"{page.name}: no heading #{anchor} in {linked.name}"
