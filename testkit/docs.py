"""The table of tasks/ modules in docs/architecture.md, generated from the modules' docstrings.

Each module's first docstring sentence is its row, grouped by layer (the entry points in
tasks/, then each subpackage, top-down). `python -m testkit.docs` rewrites the table
between the markers; tests/test_docs.py fails when a module is missing or the table is stale.
Plain Python (ast), nothing imported from tasks/: a module that does not import still shows.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("docs/architecture.md")
PACKAGE = Path("tasks")
REGENERATE = "pipenv run python -m testkit.docs"
BEGIN = f"<!-- modules: generated from the module docstrings by `{REGENERATE}`; do not edit -->"
END = "<!-- modules: end -->"
# The layers top-down: each imports only from the ones after it. A subpackage not named here
# (a new layer) comes after them, by name, until it is placed.
ORDER = ("procedures", "execution", "plans", "source")
# Up to the first full stop that ends a sentence (followed by a space or the paragraph's end).
SENTENCE = re.compile(r"(.+?\.)(?=\s|$)")


def first_sentence(docstring: str | None) -> str:
    if not docstring:
        return "*(no module docstring)*"
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    found = SENTENCE.match(paragraph)
    return (found.group(1) if found else paragraph).replace("|", "\\|")


def docstring(path: Path) -> str | None:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))


def modules(root: Path = ROOT) -> list[Path]:
    """Every module of the tasks package, relative to ROOT."""
    return sorted(p.relative_to(root) for p in (root / PACKAGE).rglob("*.py"))


def layers(root: Path = ROOT) -> list[tuple[str, list[Path]]]:
    """(layer, its modules) top-down; the layer of tasks/NAME.py is "tasks"."""
    found: dict[str, list[Path]] = {}
    for path in modules(root):
        inner = path.relative_to(PACKAGE).parts
        found.setdefault(inner[0] if len(inner) > 1 else "tasks", []).append(path)
    known = ("tasks", *ORDER)
    ordered = [name for name in known if name in found]
    return [(name, found[name]) for name in ordered + sorted(set(found) - set(known))]


def table(root: Path = ROOT) -> str:
    """The generated text between the markers (markers excluded)."""
    out = []
    for layer, paths in layers(root):
        init = next((p for p in paths if p.name == "__init__.py"), None)
        title = "tasks/" if layer == "tasks" else f"tasks/{layer}/"
        heading = f"[`{title}`](../{init.as_posix()})" if init else f"`{title}`"
        out += [f"### {heading}", ""]
        if init:
            out += [first_sentence(docstring(root / init)), ""]
        rows = [path for path in paths if path != init]
        if rows:
            out += ["| Module | What it holds |", "|---|---|"]
            for path in rows:
                shown = path.relative_to(PACKAGE / layer if layer != "tasks" else PACKAGE).as_posix()
                out.append(f"| [`{shown}`](../{path.as_posix()}) | {first_sentence(docstring(root / path))} |")
            out.append("")
    return "\n".join(out)


def generated(page: str, root: Path = ROOT) -> str:
    """PAGE's text with the table between the markers made again from ROOT's modules."""
    if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
        raise SystemExit(f"{PAGE} needs the markers {BEGIN!r} and {END!r}, once each, in that order")
    before, rest = page.split(BEGIN)
    after = rest.split(END)[1]
    return f"{before}{BEGIN}\n\n{table(root)}\n{END}{after}"


def main(root: Path = ROOT) -> int:
    path = root / PAGE
    old = path.read_text(encoding="utf-8")
    new = generated(old, root)
    if new == old:
        print(f"{PAGE} is up to date")
        return 0
    path.write_text(new, encoding="utf-8")
    print(f"{PAGE}: module table regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
