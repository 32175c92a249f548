"""The app's requirements as one pip requirements file, from whichever form the project
keeps them in: what the Dockerfile's builder installs, `--require-hashes --no-deps` when
the list has hashes, so the image holds exactly what the lock pins, every file checked.

    python requirements.py hello/requirements.txt > requirements.txt

SOURCE is the `[app] requirements` file of config/stack.toml:
- a Pipfile.lock: its [default] packages, each pinned with its hashes. Like `pipenv
  install --deploy`, a lock out of date is refused: the sha256 of the Pipfile beside it,
  computed as pipenv computes it, must be the one the lock recorded;
- a uv.lock: the packages the project's default dependencies need (not its dev groups nor
  its extras), each with the sha256 of its sdist and wheels; the project's own entry
  (`source = { editable = "." }` or `{ virtual = "." }`) is not a package to install. A
  pyproject.toml beside it must not name a dependency the lock lacks (`uv lock` was not run);
- a requirements .txt: its requirements, checked and written back in one form, its `-r`
  includes (relative to the file that names them) read in place. When one line has
  --hash, pip checks every file, so every requirement must be pinned (==) and hashed.
  Without hashes a range (`Django>=5.2,<5.3`) is taken, with a note that the build picks
  the version. Local paths and editable installs are refused: the builder has the
  requirements alone, not the folders they point to. A URL is taken only with its --hash:
  unlike a version, nothing else says which file it was; VCS URLs (git+...) cannot be
  hashed and are refused.

A refusal is one line on standard error and exit status 1; notes go to standard error too.
Standard library only (it runs in the bare Python image); a Pipfile.lock or a uv.lock
needs Python 3.11 or later (tomllib), a requirements file any.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

# What pipenv leaves out of the Pipfile's hash besides its own sections (plette's PIPFILE_SECTIONS).
NOT_HASHED = {"source", "packages", "dev-packages", "requires", "scripts", "pipfile", "pipenv", "default", "develop"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
EXTRA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
VERSION = re.compile(r"==[A-Za-z0-9.+!*-]+")
HASH = re.compile(r"sha256:[0-9a-f]{64}")
# pip takes these three; a requirements file may use any of them.
PIP_HASH = re.compile(r"sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128}")
# A PEP 508 marker, as the lock writes them: names, quoted strings, comparisons, and/or.
MARKER = re.compile(r"[A-Za-z0-9_.'\" <>=!~()-]+")
# One version clause, and a list of them (PEP 440), optionally in parentheses.
CLAUSE = r"(?:~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!-]+"
SPECIFIERS = re.compile(rf"\(?\s*{CLAUSE}(?:\s*,\s*{CLAUSE})*\s*\)?")
# A requirement line's requirement: name, [extras], then specifiers or `@ URL`, then ; marker.
REQUIREMENT = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*"
                         r"(?P<rest>[^;]*?)\s*(?:;\s*(?P<marker>.*))?")
URL = re.compile(r"https?://[^\s;]+")
VCS = re.compile(r"(?:git|hg|svn|bzr)\+", re.I)
# Options a requirements file may give for the whole install, passed on as they are.
GLOBAL_OPTIONS = {"-i": "--index-url", "--index-url": "--index-url", "--extra-index-url": "--extra-index-url",
                  "--only-binary": "--only-binary", "--no-binary": "--no-binary"}
GLOBAL_FLAGS = {"--pre", "--prefer-binary"}
# The lock formats this script reads; any other SOURCE named *.txt is a requirements file.
FORMATS = "a requirements .txt, a Pipfile.lock (its Pipfile beside it) or a uv.lock"


class Refused(Exception):
    pass


@dataclass(frozen=True)
class Requirement:
    """One package to install: NAME plus SPEC (`==1.0`, `>=1,<2`, nothing, or ` @ URL`), checked;
    WHERE the line that named it, for messages."""
    name: str
    spec: str
    extras: tuple = ()
    marker: str = ""
    hashes: tuple = ()
    where: str = field(default="", compare=False)

    @property
    def pinned(self) -> bool:
        return self.spec.startswith(" @ ") or re.fullmatch(r"===?[A-Za-z0-9.+!-]+", self.spec) is not None

    def line(self) -> str:
        line = self.name + (f"[{','.join(self.extras)}]" if self.extras else "") + self.spec
        line += f"; {self.marker}" if self.marker else ""
        return " \\\n    ".join([line, *(f"--hash={h}" for h in self.hashes)])


@dataclass
class Requirements:
    """What to install (PACKAGES), pip options for the whole list (OPTIONS), what a -c file
    pins (CONSTRAINTS) and what the user should know (NOTES)."""
    packages: list = field(default_factory=list)
    options: list = field(default_factory=list)
    constraints: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def text(self) -> str:
        lines = [*self.options]
        for package in self.packages:
            if package.line() not in lines:  # an include may repeat what the file says
                lines.append(package.line())
        return "\n".join(lines) + "\n"


def canonical(name: str) -> str:
    """A package name as indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pipfile_hash(pipfile: dict) -> str:
    data = {
        "_meta": {"sources": pipfile["source"], "requires": pipfile.get("requires", {})},
        "default": pipfile.get("packages", {}),
        "develop": pipfile.get("dev-packages", {}),
    }
    data.update({key: value for key, value in pipfile.items() if key not in NOT_HASHED})
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def pipfile_lock_packages(pipfile: dict, lock: dict) -> list:
    expected = lock.get("_meta", {}).get("hash", {}).get("sha256")
    if expected != pipfile_hash(pipfile):
        raise Refused("Pipfile.lock is out of date with the Pipfile: run `pipenv lock`")
    packages = []
    for name, entry in sorted(lock.get("default", {}).items()):
        version, hashes = entry.get("version", ""), entry.get("hashes", [])
        extras, markers = entry.get("extras", []), entry.get("markers", "")
        if NAME.fullmatch(name) is None or VERSION.fullmatch(version) is None:
            raise Refused(f"Pipfile.lock: {name!r} is not pinned to one version (==): only a locked package is installed")
        if not hashes or any(HASH.fullmatch(h) is None for h in hashes):
            raise Refused(f"Pipfile.lock: {name} has no sha256 hashes to check its files against")
        if any(EXTRA.fullmatch(e) is None for e in extras) or (markers and MARKER.fullmatch(markers) is None):
            raise Refused(f"Pipfile.lock: {name} has extras or markers that are not valid")
        packages.append(Requirement(name, version, tuple(extras), markers, tuple(hashes)))
    return packages


def requirements(pipfile: dict, lock: dict) -> str:
    """Pipfile.lock's [default] packages as pip requirements, each with its hashes."""
    return Requirements(pipfile_lock_packages(pipfile, lock)).text()


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise Refused(f"{path.name} is TOML, which this Python cannot read (tomllib came in 3.11): "
                      "use Python 3.11 or later, or a requirements .txt") from None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"{path} is not valid TOML: {exc}") from None


def from_pipfile_lock(path: Path) -> Requirements:
    pipfile = _toml(path.with_name("Pipfile"))
    try:
        lock = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise Refused(f"{path} is not valid JSON: {exc}") from None
    return Requirements(pipfile_lock_packages(pipfile, lock))




# A requirements .txt ----------------------------------------------------------------

def _logical_lines(path: Path):
    """(line number, text) of PATH's logical lines: continuations joined, comments gone."""
    try:
        physical = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise Refused(f"{path}: no such file") from None
    start, joined = None, ""
    for number, line in enumerate(physical, 1):
        start = number if start is None else start
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        text = re.sub(r"(^|\s)#.*$", "", joined + line).strip()
        first, start, joined = start, None, ""
        if text:
            yield first, text
    if joined.strip():
        yield start, re.sub(r"(^|\s)#.*$", "", joined).strip()


def _requirement(text: str, where: str) -> Requirement:
    """The requirement part of a line (no options): refused unless pip can fetch it with
    the requirements file alone."""
    first = text.split()[0]
    if VCS.match(text) or re.search(r"@\s*(?:git|hg|svn|bzr)\+", text, re.I):
        raise Refused(f"{where}: {first} comes from a version control URL, which no hash can check and the "
                      "builder cannot fetch (no git): install it from an index, or by URL with --hash")
    if text.startswith((".", "/", "~", "file:")) or (URL.match(text) is None and "/" in first):
        raise Refused(f"{where}: {first} is a local path: the image builds from the requirements alone; "
                      "publish the package to an index, or name it by URL with --hash")
    if URL.match(text):
        raise Refused(f"{where}: {first} has no package name: write it as `NAME @ {first}` with --hash")
    found = REQUIREMENT.fullmatch(text)
    if found is None:
        raise Refused(f"{where}: {text!r} is not a requirement pip can read")
    name, rest, marker = found["name"], found["rest"], (found["marker"] or "").strip()
    extras = tuple(e.strip() for e in (found["extras"] or "").split(",") if e.strip())
    if any(EXTRA.fullmatch(e) is None for e in extras) or (marker and MARKER.fullmatch(marker) is None):
        raise Refused(f"{where}: {name} has extras or markers that are not valid")
    if rest.startswith("@"):
        url = rest[1:].strip()
        if URL.fullmatch(url) is None:
            raise Refused(f"{where}: {name} @ {url} is not an http(s) URL: the image builds from the "
                          "requirements alone; publish the package to an index, or name it by URL with --hash")
        return Requirement(name, f" @ {url}", extras, marker, where=where)
    if rest and SPECIFIERS.fullmatch(rest) is None:
        raise Refused(f"{where}: {name} has a version {rest!r} pip cannot read (e.g. ==1.2.3)")
    return Requirement(name, re.sub(r"[\s()]", "", rest), extras, marker, where=where)


def _hashes(words: list, where: str) -> tuple:
    """The --hash options after a requirement, and nothing else."""
    hashes, index = [], 0
    while index < len(words):
        word = words[index]
        if word == "--hash" and index + 1 < len(words):
            index += 1
            word = f"--hash={words[index]}"
        if not word.startswith("--hash="):
            raise Refused(f"{where}: {word} after a requirement is not taken here (only --hash=...)")
        if PIP_HASH.fullmatch(word.removeprefix("--hash=")) is None:
            raise Refused(f"{where}: {word} is not a sha256, sha384 or sha512 hash pip can check")
        hashes.append(word.removeprefix("--hash="))
        index += 1
    return tuple(hashes)


def _option(words: list, where: str) -> tuple:
    """(--option, value) of an option line: `-r f`, `-rf`, `--requirement f`, `--requirement=f`;
    a flag has the value ""."""
    first = words[0]
    if first in GLOBAL_FLAGS:
        option, value, rest = first, "", words[1:]
    elif first.startswith("--"):
        option, _, value = first.partition("=")
        rest = words[1:]
    else:
        option, value, rest = first[:2], first[2:], words[1:]
    if not value and option not in GLOBAL_FLAGS:
        if not rest:
            raise Refused(f"{where}: {option} needs a value")
        value, rest = rest[0], rest[1:]
    if rest:
        raise Refused(f"{where}: one option per line ({' '.join(rest)} is left over)")
    return option, value


def _read_txt(path: Path, seen: tuple) -> Requirements:
    """PATH's requirements, options and constraints, its includes read in place; no policy."""
    found = Requirements()
    for number, text in _logical_lines(path):
        where = f"{path}:{number}"
        if text.startswith("-"):
            head, tail = "", text
        else:  # pip's own split: the requirement runs up to the first word that is an option
            words = text.split(" ")
            cut = next((i for i, w in enumerate(words) if w.startswith("-")), len(words))
            head, tail = " ".join(words[:cut]), " ".join(words[cut:])
        try:
            words = shlex.split(tail)
        except ValueError as exc:
            raise Refused(f"{where}: cannot read its options ({exc})") from None
        if head:
            requirement = _requirement(head.strip(), where)
            found.packages.append(Requirement(requirement.name, requirement.spec, requirement.extras,
                                              requirement.marker, _hashes(words, where), where))
            continue
        option, value = _option(words, where)
        if option in ("-r", "--requirement", "-c", "--constraint"):
            if re.match(r"[a-z][a-z0-9+.-]*:", value) or value.startswith(("/", "~")):
                raise Refused(f"{where}: {option} {value}: only a file beside the requirements is read (a relative path)")
            included = path.parent / value
            if included.resolve() in seen:
                raise Refused(f"{where}: {option} {value} includes a file that includes it")
            inner = _read_txt(included, (*seen, included.resolve()))
            if option in ("-c", "--constraint"):
                found.constraints += inner.packages + inner.constraints
            else:
                found.packages += inner.packages
                found.constraints += inner.constraints
            found.options += [o for o in inner.options if o not in found.options]
        elif option in ("-e", "--editable"):
            raise Refused(f"{where}: {option} {value} is an editable install of a local folder: the image builds "
                          "from the requirements alone (the project itself is served from its folder, not installed)")
        elif option in GLOBAL_OPTIONS or option in GLOBAL_FLAGS:
            line = f"{GLOBAL_OPTIONS[option]} {value}" if value else option
            found.options += [line] if line not in found.options else []
        else:
            raise Refused(f"{where}: the option {option} is not one this build takes (-r, -c, --hash, --index-url, "
                          "--extra-index-url, --only-binary, --no-binary, --pre, --prefer-binary)")
    return found


def from_requirements_txt(path: Path) -> Requirements:
    found = _read_txt(path, (path.resolve(),))
    if any(p.hashes for p in found.packages + found.constraints):
        for package in found.packages:
            if not package.pinned:
                raise Refused(f"{package.where}: {package.name}{package.spec} is not pinned with ==: with --hash on "
                              "any line pip checks every requirement (pip-compile --generate-hashes pins them all)")
            if not package.hashes:
                raise Refused(f"{package.where}: {package.name}{package.spec} has no --hash: with --hash on any line "
                              "pip checks every requirement (pip-compile --generate-hashes hashes them all)")
        for pin in found.constraints:
            if not pin.pinned:
                raise Refused(f"{pin.where}: the constraint {pin.name}{pin.spec} is not pinned with ==")
        # Every package is listed, pinned and hashed, and installed without its dependencies:
        # the constraints, checked, have nothing left to decide.
        found.constraints = []
        return found
    if found.constraints:
        raise Refused(f"{found.constraints[0].where}: constraints (-c) are taken only in a list pinned with --hash "
                      "(the image installs one list): pin the versions in the requirements file instead")
    for package in found.packages:
        if package.spec.startswith(" @ "):
            raise Refused(f"{package.where}: {package.name}{package.spec} has no --hash: a URL alone does not say "
                          "which file it was (add --hash=sha256:...)")
        if not package.pinned:
            found.notes.append(f"{package.where}: {package.name}{package.spec or ''} is not pinned (==): "
                               "the build takes the newest version it allows")
    return found


# A uv.lock ---------------------------------------------------------------------------

def _marker(paths: set) -> str:
    """The marker of a package reached along PATHS (each a frozenset of edge markers, all
    of which must hold): "" when one path has none."""
    if frozenset() in paths:
        return ""
    clauses = sorted(" and ".join(f"({m})" for m in sorted(path)) if len(path) > 1 else next(iter(path))
                     for path in paths)
    return " or ".join(f"({c})" for c in clauses) if len(clauses) > 1 else clauses[0]


def from_uv_lock(path: Path) -> Requirements:
    lock = _toml(path)
    if lock.get("version") != 1:
        raise Refused(f"{path}: lock format version {lock.get('version')!r} is not one this build reads (1)")
    entries = [p for p in lock.get("package", []) if isinstance(p, dict)]
    roots = [p for p in entries if p.get("source", {}).get("editable") == "." or p.get("source", {}).get("virtual") == "."]
    if len(roots) != 1:
        raise Refused(f"{path}: no project entry (source = {{ editable = \".\" }} or {{ virtual = \".\" }}): "
                      "run `uv lock` in the project's folder")
    root = roots[0]
    pyproject = path.with_name("pyproject.toml")
    if pyproject.exists():
        wanted = {canonical(re.match(r"\s*([A-Za-z0-9._-]+)", d).group(1))
                  for d in _toml(pyproject).get("project", {}).get("dependencies", []) if re.match(r"\s*[A-Za-z0-9]", d)}
        locked = {canonical(d.get("name", "")) for d in root.get("metadata", {}).get("requires-dist", [])}
        if wanted - locked:
            raise Refused(f"{path} is out of date with pyproject.toml ({', '.join(sorted(wanted - locked))} not "
                          "locked): run `uv lock`")
    by_name = {}
    for entry in entries:
        by_name.setdefault(canonical(entry.get("name", "")), []).append(entry)

    def resolve(edge: dict) -> dict:
        candidates = [e for e in by_name.get(canonical(edge.get("name", "")), [])
                      if "version" not in edge or e.get("version") == edge["version"]]
        if len(candidates) != 1:
            raise Refused(f"{path}: the dependency {edge.get('name')!r} names {len(candidates)} locked packages: "
                          "run `uv lock`")
        return candidates[0]

    # Walk the default dependencies from the project, carrying each edge's marker along.
    reached, queue = {}, [(root, frozenset(), ())]
    while queue:
        entry, markers, extras = queue.pop()
        edges = list(entry.get("dependencies", []))
        for extra in extras:
            edges += entry.get("optional-dependencies", {}).get(extra, [])
        for edge in edges:
            target = resolve(edge)
            if target is root:
                continue
            marker = edge.get("marker", "")
            if marker and MARKER.fullmatch(marker) is None:
                raise Refused(f"{path}: {edge.get('name')} has a marker that is not valid")
            along = markers | {marker} if marker else markers
            key = (canonical(target["name"]), target.get("version"))
            paths, wanted_extras = reached.setdefault(key, (set(), set()))
            new_extras = set(edge.get("extra", [])) - wanted_extras
            if along in paths and not new_extras or len(paths) > 32:
                continue
            paths.add(along)
            wanted_extras |= new_extras
            queue.append((target, along, tuple(sorted(wanted_extras))))
    packages = []
    for (name, version), (paths, _) in sorted(reached.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        entry = next(e for e in by_name[name] if e.get("version") == version)
        source = entry.get("source", {})
        files = [entry.get("sdist", {}), *entry.get("wheels", [])]
        hashes = tuple(f["hash"] for f in files if isinstance(f, dict) and "hash" in f)
        if "registry" in source:
            spec = f"=={version}"
        elif "url" in source:
            spec = f" @ {source['url']}"
        else:
            kind = next(iter(source), "no source")
            raise Refused(f"{path}: {entry['name']} comes from {kind} ({source.get(kind)}), which the builder cannot "
                          "fetch and check by hash: depend on a published version")
        if NAME.fullmatch(entry["name"]) is None or VERSION.fullmatch(f"=={version}") is None:
            raise Refused(f"{path}: {entry['name']!r} is not pinned to one version")
        if not hashes or any(HASH.fullmatch(h) is None for h in hashes):
            raise Refused(f"{path}: {entry['name']} has no sha256 hashes to check its files against")
        packages.append(Requirement(entry["name"], spec, (), _marker(paths), hashes))
    return Requirements(packages)


def read(path: Path) -> Requirements:
    """The requirements SOURCE holds, by its file name."""
    if path.name == "Pipfile.lock":
        return from_pipfile_lock(path)
    if path.name == "uv.lock":
        return from_uv_lock(path)
    if path.suffix == ".txt":
        return from_requirements_txt(path)
    raise Refused(f"{path} is not a requirements file this build reads: {FORMATS}")


PYTHON_CLAUSE = re.compile(r"(python_version|python_full_version)\s*(==|!=|<=|>=|<|>)\s*['\"]([0-9.]+)['\"]")
COMPARE = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<=": lambda a, b: a <= b,
           ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}


def for_python(marker: str, version: tuple) -> bool | None:
    """Whether MARKER holds on Python VERSION (major, minor, micro), when it speaks of the
    Python version alone (clauses joined by and/or); None when it says more than that."""
    def clause(match):
        which, op, wanted = match.groups()
        have = version[:2] if which == "python_version" else version
        return str(COMPARE[op](have, tuple(int(part) for part in wanted.split("."))))
    expression = PYTHON_CLAUSE.sub(clause, marker)
    if re.fullmatch(r"(\s|True|False|and|or|\(|\))*", expression) is None:
        return None
    return eval(expression, {"__builtins__": {}})  # only True, False, and, or, parentheses remain


def check_framework(found: Requirements, version: tuple) -> None:
    """Django excluded by its marker on this Python is refused: pip would install the rest
    without it, and the image would have no Django (a lock made for another Python)."""
    for package in found.packages:
        if canonical(package.name) == "django" and package.marker and for_python(package.marker, version) is False:
            raise Refused(f"Django{package.spec} is for {package.marker}, and this image has Python "
                          f"{version[0]}.{version[1]}: set [app] python to a Python that Django version supports")


def main(argv) -> int:
    if len(argv) != 1:
        print(f"usage: python requirements.py SOURCE ({FORMATS}) > requirements.txt", file=sys.stderr)
        return 2
    try:
        found = read(Path(argv[0]))
        check_framework(found, tuple(sys.version_info[:3]))
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.write(found.text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
