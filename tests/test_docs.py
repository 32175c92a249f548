"""The README and docs/ as a newcomer reads them: a short front door, links that lead
somewhere, and a module table that says what the code holds now."""
import re
from pathlib import Path

import pytest

from testkit import docs

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 200
# [text](target): the target up to a space or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of PATH's headings: lowercase, punctuation dropped, spaces to dashes."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


class TestReadme:
    def test_it_stays_at_most_200_lines(self):
        lines = len(README.read_text(encoding="utf-8").splitlines())
        assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most {README_MAX_LINES}): "
                                           "move the detail to a page in docs/ and link it")

    def test_it_gives_the_test_command_that_ci_runs(self):
        command = "pipenv install --dev --deploy && pipenv run pytest"
        assert command in README.read_text(encoding="utf-8")
        assert command in (ROOT / ".ci/run").read_text(encoding="utf-8")

    def test_it_links_every_page_of_docs(self):
        linked = {(README.parent / t.split("#")[0]).resolve() for t in relative_links(README)}
        assert [p.name for p in PAGES if p.resolve() not in linked] == []


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(path):
    broken = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{path.relative_to(ROOT)}: broken links"


class TestModuleTable:
    def test_it_names_every_module_of_tasks(self):
        page = (ROOT / docs.PAGE).read_text(encoding="utf-8")
        missing = [m.as_posix() for m in docs.modules() if f"](../{m.as_posix()})" not in page]
        assert missing == [], (f"{docs.PAGE} does not name {', '.join(missing)}: run `{docs.REGENERATE}`")

    def test_it_is_what_the_docstrings_say_now(self):
        page = (ROOT / docs.PAGE).read_text(encoding="utf-8")
        assert docs.generated(page) == page, (f"{docs.PAGE}'s module table is stale (a module or its first "
                                              f"docstring sentence changed): run `{docs.REGENERATE}`")

    def test_a_row_is_the_first_sentence_of_the_first_paragraph(self):
        assert docs.first_sentence("Copy volumes. Then more.\n\nOther.") == "Copy volumes."
        assert docs.first_sentence("Is it serving? Waiting for\n/healthz, the port.") == \
            "Is it serving? Waiting for /healthz, the port."
        assert docs.first_sentence("Plans in tasks/plans/site.py and a | b") == \
            "Plans in tasks/plans/site.py and a \\| b"
        assert docs.first_sentence(None) == "*(no module docstring)*"

    def test_a_new_module_and_a_new_layer_get_rows(self, tmp_path):
        (tmp_path / "tasks/plans").mkdir(parents=True)
        (tmp_path / "tasks/strategies").mkdir()
        (tmp_path / "tasks/__init__.py").write_text('"""The tasks."""\n')
        (tmp_path / "tasks/plans/__init__.py").write_text('"""Plans as data."""\n')
        (tmp_path / "tasks/plans/compose.py").write_text('"""Compose argv. More."""\n')
        (tmp_path / "tasks/strategies/host.py").write_text("x = 1\n")
        assert docs.table(tmp_path).splitlines() == [
            "### [`tasks/`](../tasks/__init__.py)", "", "The tasks.", "",
            "### [`tasks/plans/`](../tasks/plans/__init__.py)", "", "Plans as data.", "",
            "| Module | What it holds |", "|---|---|",
            "| [`compose.py`](../tasks/plans/compose.py) | Compose argv. |", "",
            "### `tasks/strategies/`", "",
            "| Module | What it holds |", "|---|---|",
            "| [`host.py`](../tasks/strategies/host.py) | *(no module docstring)* |",
        ]

    def test_a_page_without_its_markers_is_refused_with_what_they_are(self):
        with pytest.raises(SystemExit, match="needs the markers"):
            docs.generated("# Architecture\n")
