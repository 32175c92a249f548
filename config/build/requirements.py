"""Pipfile.lock's [packages] as pip requirements, each pinned with its hashes: what the
Dockerfile's builder installs with `pip install --require-hashes --no-deps`, so the image
holds exactly what the lock pins, every file checked, without installing pipenv.

Like `pipenv install --deploy`, it refuses a lock that is out of date: the sha256 of the
Pipfile, computed as pipenv computes it, must be the one the lock recorded.

    python requirements.py Pipfile Pipfile.lock > requirements.txt

Standard library only (it runs in the bare Python image).
"""
import hashlib
import json
import re
import sys
import tomllib

# What pipenv leaves out of the Pipfile's hash besides its own sections (plette's PIPFILE_SECTIONS).
NOT_HASHED = {"source", "packages", "dev-packages", "requires", "scripts", "pipfile", "pipenv", "default", "develop"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
EXTRA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
VERSION = re.compile(r"==[A-Za-z0-9.+!*-]+")
HASH = re.compile(r"sha256:[0-9a-f]{64}")
# A PEP 508 marker, as the lock writes them: names, quoted strings, comparisons, and/or.
MARKER = re.compile(r"[A-Za-z0-9_.'\" <>=!~()-]+")


class Refused(Exception):
    pass


def pipfile_hash(pipfile: dict) -> str:
    data = {
        "_meta": {"sources": pipfile["source"], "requires": pipfile.get("requires", {})},
        "default": pipfile.get("packages", {}),
        "develop": pipfile.get("dev-packages", {}),
    }
    data.update({key: value for key, value in pipfile.items() if key not in NOT_HASHED})
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def requirements(pipfile: dict, lock: dict) -> str:
    expected = lock.get("_meta", {}).get("hash", {}).get("sha256")
    if expected != pipfile_hash(pipfile):
        raise Refused("Pipfile.lock is out of date with the Pipfile: run `pipenv lock`")
    lines = []
    for name, entry in sorted(lock.get("default", {}).items()):
        version, hashes = entry.get("version", ""), entry.get("hashes", [])
        extras, markers = entry.get("extras", []), entry.get("markers", "")
        if NAME.fullmatch(name) is None or VERSION.fullmatch(version) is None:
            raise Refused(f"Pipfile.lock: {name!r} is not pinned to one version (==): only a locked package is installed")
        if not hashes or any(HASH.fullmatch(h) is None for h in hashes):
            raise Refused(f"Pipfile.lock: {name} has no sha256 hashes to check its files against")
        if any(EXTRA.fullmatch(e) is None for e in extras) or (markers and MARKER.fullmatch(markers) is None):
            raise Refused(f"Pipfile.lock: {name} has extras or markers that are not valid")
        line = name + (f"[{','.join(extras)}]" if extras else "") + version + (f"; {markers}" if markers else "")
        lines.append(" \\\n    ".join([line, *(f"--hash={h}" for h in hashes)]))
    return "\n".join(lines) + "\n"


def main(argv) -> int:
    pipfile_path, lock_path = argv
    with open(pipfile_path, "rb") as f:
        pipfile = tomllib.load(f)
    with open(lock_path) as f:
        lock = json.load(f)
    try:
        sys.stdout.write(requirements(pipfile, lock))
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
