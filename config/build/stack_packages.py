"""The stack's own packages the app's virtualenv lacks, as pip requirements on stdout.

The stack serves every project with Gunicorn and connects it to PostgreSQL; a project made
for SQLite and `runserver` (what `django-admin startproject` gives) brings neither. From the
hash-pinned list of config/app/requirements.txt, a group goes in only when the virtualenv
cannot import what the group provides (the project's own server or driver wins), and each of
a group's dependencies only when the virtualenv does not have it already.

    python stack_packages.py VENV_PYTHON config/app/requirements.txt > missing.txt

Standard library only (it runs in the bare Python image).
"""
import re
import subprocess
import sys

# A group: the modules any one of which means the project has it, and its packages with the
# module each provides (the first is the group's own package; the others its dependencies).
GROUPS = [
    (("gunicorn",), [("gunicorn", "gunicorn"), ("packaging", "packaging")]),
    (("psycopg", "psycopg2"), [("psycopg[binary]", "psycopg"), ("psycopg-binary", "psycopg_binary"),
                               ("typing-extensions", "typing_extensions")]),
]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?")


def entries(text: str) -> dict[str, str]:
    """The requirements file's entries by package name, each with its continuation lines."""
    found = {}
    for entry in text.replace("\\\n", "\0").splitlines():
        if entry.strip() and not entry.startswith("#"):
            found[NAME.match(entry).group(0)] = entry.replace("\0", "\\\n")
    return found


def missing(pinned: dict[str, str], importable) -> list[str]:
    chosen = []
    for provides, packages in GROUPS:
        if any(importable(module) for module in provides):
            continue
        own, *dependencies = packages
        chosen.append(pinned[own[0]])
        chosen += [pinned[name] for name, module in dependencies if not importable(module)]
    return chosen


def main(argv) -> int:
    python, path = argv

    def importable(module: str) -> bool:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0

    with open(path) as f:
        lines = missing(entries(f.read()), importable)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
