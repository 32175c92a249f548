"""Plans for backups, as data: file names, manifests, and the commands that copy a volume
to an archive and back. Nothing here runs anything.

A backup is an archive plus a manifest next to it (ARCHIVE.json). The manifest is renamed
into place last, so an archive without one is an unfinished backup, never a complete one.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone

FORMAT = 1
BACKUP_DIR = "backups"
STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Compressor:
    name: str
    extension: str
    compress: tuple[str, ...]
    decompress: tuple[str, ...]
    test: tuple[str, ...]


# zstd compresses several times faster than gzip at a similar ratio; gzip is everywhere.
ZSTD = Compressor("zstd", ".tar.zst", ("zstd", "-T0", "-3", "--progress", "-c"), ("zstd", "-dc", "-q"), ("zstd", "-tq"))
GZIP = Compressor("gzip", ".tar.gz", ("gzip", "-1", "-c"), ("gzip", "-dc"), ("gzip", "-t"))
COMPRESSORS = {c.name: c for c in (ZSTD, GZIP)}


def stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime(STAMP)


def archive_name(project: str, subject: str, when: str, extension: str) -> str:
    return f"{project}_{subject}_{when}{extension}"


NAME_PATTERN = re.compile(r"^(?P<project>.+?)_(?P<subject>[a-z][a-z0-9_]*)_(?P<when>\d{8}T\d{6}Z)(?P<ext>\.tar\.zst|\.tar\.gz|\.dump)$")


def manifest_path(archive: str) -> str:
    return f"{archive}.json"


def pipeline(*stages, output: str | None = None, input: str | None = None) -> list[str]:
    """One shell command (argv for bash) that pipes STAGES, failing if any stage fails."""
    text = " | ".join(shlex.join(stage) for stage in stages)
    if input:
        text = f"{text} < {shlex.quote(input)}"
    if output:
        # Backups hold every row of the database: readable by their owner only.
        text = f"umask 077; {text} > {shlex.quote(output)}"
    return ["bash", "-o", "pipefail", "-c", text]


def helper(image: str, mounts, command, interactive=False) -> list[str]:
    """A throwaway container from an image already on the host (never pulled), without
    network, as root so that it can read and restore every file's owner and mode."""
    argv = ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--user", "0"]
    if interactive:
        argv.append("--interactive")
    for volume, path, read_only in mounts:
        argv += ["--volume", f"{volume}:{path}{':ro' if read_only else ''}"]
    return argv + ["--entrypoint", command[0], image, *command[1:]]


def volume_stats(volume: str, image: str) -> list[str]:
    """Prints three lines: bytes, number of entries, PostgreSQL major version (or empty)."""
    script = "du -sb /data | cut -f1; find /data -mindepth 1 | wc -l; cat /data/PG_VERSION 2>/dev/null || echo"
    return helper(image, [(volume, "/data", True)], ["sh", "-c", script])


def archive_volume(volume: str, image: str, compressor: Compressor, output: str) -> list[str]:
    tar = helper(image, [(volume, "/data", True)], ["tar", "-C", "/data", "--numeric-owner", "-cf", "-", "."])
    return pipeline(tar, list(compressor.compress), output=output)


def extract_volume(archive: str, compressor: Compressor, volume: str, image: str) -> list[str]:
    """Empty VOLUME, then unpack ARCHIVE into it with owners and modes."""
    script = "find /data -mindepth 1 -delete && tar -C /data --numeric-owner -xpf -"
    unpack = helper(image, [(volume, "/data", False)], ["sh", "-c", script], interactive=True)
    return pipeline([*compressor.decompress, archive], unpack)


def copy_volume(source: str, target: str, image: str) -> list[str]:
    """Make TARGET an exact copy of SOURCE (the safety copy, and putting it back)."""
    script = "find /to -mindepth 1 -delete && cp -a /from/. /to/"
    return helper(image, [(source, "/from", True), (target, "/to", False)], ["sh", "-c", script])


def postgres_version(image: str) -> list[str]:
    return ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "postgres", image, "--version"]


def major_version(version_output: str) -> str | None:
    match = re.search(r"\(PostgreSQL\) (\d+)", version_output)
    return match.group(1) if match else None


def sha256(path: str) -> list[str]:
    return ["sha256sum", path]


def manifest(**fields) -> str:
    return json.dumps({"format": FORMAT, **fields}, indent=2, sort_keys=True) + "\n"


def read_manifest(text: str, source: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not a valid manifest ({exc.msg})") from None
    required = {"format", "kind", "archive", "sha256", "created"}
    if not isinstance(data, dict) or not required <= data.keys():
        raise ValueError(f"{source} is not a backup manifest (missing {', '.join(sorted(required - set(data or {})))})")
    if data["format"] != FORMAT:
        raise ValueError(f"{source} has manifest format {data['format']}; this version reads format {FORMAT}")
    return data


# Logical dumps -----------------------------------------------------------------------------

def pg_dump(project_compose: list[str], db: str) -> list[str]:
    return [*project_compose, "exec", "-T", db, "pg_dump", "--format", "custom", "--username", db, "--dbname", db]


def psql(project_compose: list[str], db: str, sql: str, database="postgres") -> list[str]:
    return [*project_compose, "exec", "-T", db, "psql", "--username", db, "--dbname", database,
            "-v", "ON_ERROR_STOP=1", "-Atqc", sql]


def pg_restore(project_compose: list[str], db: str, target: str) -> list[str]:
    return [*project_compose, "exec", "-T", db, "pg_restore", "--username", db, "--dbname", target,
            "--no-owner", "--role", db, "--exit-on-error", "--single-transaction"]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def swap_databases_sql(live: str, fresh: str, retired: str) -> str:
    """Put FRESH in LIVE's place in one transaction-free sequence PostgreSQL allows:
    no new connections, end the open ones, rename twice, allow connections again."""
    l, f, r = quote_ident(live), quote_ident(fresh), quote_ident(retired)
    lit = live.replace("'", "''")
    return "; ".join([
        f"ALTER DATABASE {l} WITH ALLOW_CONNECTIONS false",
        f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{lit}' AND pid <> pg_backend_pid()",
        f"ALTER DATABASE {l} RENAME TO {r}",
        f"ALTER DATABASE {f} RENAME TO {l}",
        f"ALTER DATABASE {l} WITH ALLOW_CONNECTIONS true",
    ])


# Retention ---------------------------------------------------------------------------------

def to_prune(manifests: list[dict], keep: int) -> list[dict]:
    """The manifests to delete so that each subject keeps its KEEP newest backups; the
    newest one of a subject is always kept, whatever KEEP says."""
    keep = max(keep, 1)
    groups: dict[tuple, list[dict]] = {}
    for m in manifests:
        groups.setdefault((m["kind"], m.get("project"), m.get("subject")), []).append(m)
    doomed = []
    for items in groups.values():
        items.sort(key=lambda m: m["created"], reverse=True)
        doomed += items[keep:]
    return doomed
