"""Building the app image, and a failed build said in one line the user can act on.

A build that fails prints hundreds of lines (BuildKit's steps, pip's, a compiler's) and
Compose ends them with "failed to solve". What the user must change is in there: the image's
Python is not [app] python, a requirement needs a compiler or headers, the base image is
not to be had, the requirements were refused. `why` finds it and names the key to change.
"""
from __future__ import annotations

import re

from ..errors import TaskError
from ..plans import compose

# BuildKit's prefix of a step's output line: "#12 3.456 ".
STEP = re.compile(r"^#\d+ \d+(?:\.\d+)? ", re.M)
PYTHON = re.compile(r"\[app\] python = \"[^\"]+\" but \S+ has Python \S+: .*")
REFUSED = re.compile(r"^error: (.+)$", re.M)
FAILED_PACKAGE = re.compile(r"Failed (?:to build|building wheel for) (?:installable wheels for some pyproject\.toml "
                            r"based projects \()?([A-Za-z0-9][A-Za-z0-9._-]*)")
NO_COMPILER = re.compile(r"(?:\b(?:gcc|cc|c\+\+|g\+\+|x86_64-linux-gnu-gcc)\b[^\n]*(?:not found|No such file)"
                         r"|unable to execute '[^']*gcc'|you need a C compiler|command '[^']*gcc' failed"
                         r"|C compiler cannot create executables)")
NO_HEADER = re.compile(r"fatal error: ([\w./+-]+\.h): No such file")
BASE_IMAGE = re.compile(r"(?:failed to resolve source metadata for|pull access denied for|manifest for"
                        r"|load metadata for) (?:docker\.io/(?:library/)?)?([^\s:,]+:[^\s:,]+)")
MISSING_BASE = re.compile(r"not found|no such host|pull access denied|does not exist|failed to resolve|"
                          r"failed to do request")


def why(output: str, app) -> str | None:
    """What the user must change, from a failed build's OUTPUT; None when it is not known."""
    text = STEP.sub("", output)
    found = PYTHON.search(text)
    if found:
        return found.group(0).strip()
    header, compiler = NO_HEADER.search(text), NO_COMPILER.search(text)
    if header or compiler:
        package = FAILED_PACKAGE.search(text)
        what = f"{package.group(1)} failed to build from source" if package else "a requirement failed to build from source"
        need = f"the package that has {header.group(1)}" if header else "a compiler"
        example = '"build-essential"' + (f" and the -dev package with {header.group(1)}" if header else "")
        return (f"{what}: the builder lacks {need}; add the Debian packages it needs to [app] build_packages "
                f"in config/stack.toml (e.g. {example}), then build again")
    image = BASE_IMAGE.search(text)
    if image and MISSING_BASE.search(text[image.start():]):
        name = image.group(1)
        source = (f"[app] python_image = \"{app.python_image}\"" if name == app.python_image else
                  f"[app] python = \"{app.python}\"" if name == app.image else "the PYTHON_IMAGE variable")
        return f"the base image {name} could not be had (no registry answers, or no such tag): it comes from {source}"
    refused = REFUSED.findall(text)
    for line in refused:
        if "compose build failed" not in line and "failed to solve" not in line:
            return f"{app.requirements}: {line.strip()}" if app.requirements not in line else line.strip()
    return None


def build_app(r, what: str, services=(compose.APP,), **flags) -> None:
    """`docker compose build` of SERVICES; a failure raises one line: why, when it is known."""
    result = r.compose(compose.build(list(services), **flags), check=False, what=what)
    if result.failed:
        reason = why(f"{result.stdout}\n{result.stderr}", r.stack.app)
        raise TaskError(f"{what} failed: {reason}" if reason else f"{what} failed (exit status {result.exited})")
