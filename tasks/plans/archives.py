"""Plans for backups, as data: file names, manifests, and the commands that copy a volume
to an archive and back. Nothing here runs anything.

A backup is an archive plus a manifest next to it (ARCHIVE.json). The manifest is renamed
into place last, so an archive without one is an unfinished backup, never a complete one.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import shlex
import tarfile
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


def companions(archive_file):
    """The archive, its checksum file and its manifest, in the order to copy them (the
    manifest last: it marks the backup complete)."""
    return [archive_file, archive_file.with_name(archive_file.name + ".sha256"),
            archive_file.with_name(manifest_path(archive_file.name))]


def pipeline(*stages, output: str | None = None, input: str | None = None) -> list[str]:
    """One shell command (argv for bash) that pipes STAGES, failing if any stage fails."""
    text = " | ".join(shlex.join(stage) for stage in stages)
    if input:
        text = f"{text} < {shlex.quote(input)}"
    if output:
        # Backups hold every row of the database: readable by their owner only.
        text = f"umask 077; {text} > {shlex.quote(output)}"
    return ["bash", "-o", "pipefail", "-c", text]


def helper(image: str, mounts, command, project: str, stdin: bool = False,
           read_only_file: tuple[str, str] | None = None) -> list[str]:
    """A throwaway container from an image already on the host (never pulled), without
    network, as root so that it can read and restore every file's owner and mode; with
    STDIN, it reads its standard input; READ_ONLY_FILE (path here, path inside) is bind-mounted.
    `--rm` also removes the anonymous volumes the image declares (the postgres image's
    VOLUME /var/lib/postgresql/data). `--rm` removes a container once it ran: one whose
    `docker run` a Ctrl-C or a kill stopped while it made it stays, never started, holding
    its volumes (and, from the app image, labelled as a container of PROJECT's compose
    project); labelled as PROJECT's helper, it is found and removed (unstarted_helpers).
    No log: everything it says goes to the caller."""
    argv = ["docker", "run", "--rm", *(["--interactive"] if stdin else []),
            "--pull", "never", "--network", "none", "--user", "0", "--label", f"{HELPER_LABEL}={project}",
            # Its output is an archive or a report read through the attached stream: a log
            # would hold a second copy of a volume's archive on the engine's disk while it runs.
            "--log-driver", "none"]
    for volume, path, read_only in mounts:
        argv += ["--volume", f"{volume}:{path}{':ro' if read_only else ''}"]
    if read_only_file:
        argv += ["--mount", f"type=bind,source={read_only_file[0]},target={read_only_file[1]},readonly"]
    return argv + ["--entrypoint", command[0], image, *command[1:]]


def volume_stats(volume: str, image: str, project: str) -> list[str]:
    """Prints five lines: bytes, number of entries, PostgreSQL major version (or empty), the
    owners (uid:gid) of its entries, space-separated (a restore accepts these alone), and
    the names an interrupted restore left at its root (settle_restore deals with them)."""
    script = ("du -sb /data | cut -f1; find /data -mindepth 1 | wc -l; cat /data/PG_VERSION 2>/dev/null || echo; "
              "find /data -printf '%U:%G\\n' | sort -u | tr '\\n' ' '; echo; "
              f"for n in {' '.join(RESERVED)}; do if [ -e \"/data/$n\" ]; then printf '%s ' \"$n\"; fi; done; echo")
    return helper(image, [(volume, "/data", True)], ["sh", "-c", script], project)


# A restore moves the volume's current content into this folder of the same volume (a
# rename: instant, and no second copy of the data), and removes it once the stack is healthy.
SAFETY = ".restore-safety"
# The archive is unpacked into this folder of the volume, beside the safety copy and never
# above it, then moved up; the folder stays until the restore is verified: while it is there,
# whatever lies beside the safety copy is the restore's, not the volume's own content.
STAGING = ".restore-new"
# The safety copy of a restore verified healthy is renamed to this before it is deleted.
DISCARD = ".restore-discard"
RESERVED = (SAFETY, STAGING, DISCARD)


HELPER_LABEL = "hello.backup-helper"


def helper_name(volume: str) -> str:
    return f"{volume}-backup-helper"


def create_helper(image: str, volume: str, project: str) -> list[str]:
    """A container that is never started: `docker cp` reads the volume through it, read-only.
    `docker cp` streams a plain tar over the engine's API, several times faster than a
    container's standard output (measured: 1.4 GB in 6 s against 41 s). Named after the
    volume and labelled, so that one left by a killed run is found and removed."""
    return ["docker", "create", "--pull", "never", "--network", "none",
            "--name", helper_name(volume), "--label", f"{HELPER_LABEL}={project}",
            "--volume", f"{volume}:/data:ro", image]


def leftover_helpers(project: str) -> list[str]:
    return ["docker", "ps", "--all", "--quiet", "--filter", f"label={HELPER_LABEL}={project}"]


def unstarted_helpers(project: str, volume: str) -> list[str]:
    """PROJECT's helpers on VOLUME that were made and never started: a `docker run` stopped
    while it made its container left each (helper)."""
    return [*leftover_helpers(project), "--filter", f"volume={volume}", "--filter", "status=created"]


def remove_container(*containers: str) -> list[str]:
    # --volumes: the anonymous volume the image's VOLUME gave each one (the postgres image
    # declares one) goes with it; a named volume is never removed by it.
    return ["docker", "rm", "--force", "--volumes", *containers]


def archive_volume(container: str, compressor: Compressor, output: str) -> list[str]:
    return pipeline(["docker", "cp", f"{container}:/data/.", "-"], list(compressor.compress), output=output)


def _in_volume(volume: str, image: str, project: str, script: str) -> list[str]:
    return helper(image, [(volume, "/data", False)], ["sh", "-c", f"set -e; cd /data; {script}"], project)


# Finish or undo the restore a killed task left in a volume, from what is on disk (run in
# the volume's root, its users stopped; nothing to do when no restore was interrupted):
# - DISCARD: the restore was verified (the stack was healthy with the new content) and its
#   safety copy was being deleted: finish deleting it.
# - SAFETY and STAGING: the content was moved aside; what lies beside the copy is the
#   archive's, in part or whole, never verified: delete it (STAGING last: it marks what
#   is the archive's until then), then move the copy back.
# - SAFETY alone: the content was being moved aside (or back): what lies beside it is
#   the volume's own: move the rest back.
# Undone rather than finished: nothing says the stack works with the archive's content,
# and the task's own rule for an unhealthy stack is the copy back; the archive is still there.
SETTLE = (
    f"if [ -d {DISCARD} ]; then echo 'a restore verified healthy left its safety copy: deleting it'; "
    f"rm -rf -- {STAGING} {DISCARD}; "
    f"elif [ -d {SAFETY} ]; then echo 'a restore not verified healthy left its safety copy: putting back the content from before it'; "
    f"if [ -d {STAGING} ]; then find . -mindepth 1 -maxdepth 1 ! -name {SAFETY} ! -name {STAGING} -exec rm -rf -- {{}} +; "
    f"rm -rf -- {STAGING}; fi; "
    f"find {SAFETY} -mindepth 1 -maxdepth 1 -exec mv -t . -- {{}} +; "
    f"chown --reference={SAFETY} .; chmod --reference={SAFETY} .; rmdir {SAFETY}; fi"
)


def settle_restore(volume: str, image: str, project: str) -> list[str]:
    """SETTLE in VOLUME: what a killed restore left, finished or undone."""
    return _in_volume(volume, image, project, SETTLE)


def move_aside(volume: str, image: str, project: str) -> list[str]:
    """Move VOLUME's content into SAFETY, leaving it empty but for an empty STAGING folder
    to unpack into; the restore a killed task left there is settled first. The root's
    owner and mode are kept on SAFETY, so that putting it back restores them."""
    script = (
        f"{SETTLE}; "
        f"rm -rf -- {STAGING}; mkdir {SAFETY}; chown --reference=. {SAFETY}; chmod --reference=. {SAFETY}; "
        f"find . -mindepth 1 -maxdepth 1 ! -name {SAFETY} -exec mv -t {SAFETY} -- {{}} +; "
        f"mkdir -m 700 {STAGING}"
    )
    return _in_volume(volume, image, project, script)


def extract_volume(archive: str, compressor: Compressor, volume: str, image: str, project: str,
                   fifo: str | None = None) -> list[str]:
    """Unpack ARCHIVE (its entries checked first: check_entries) into STAGING with tar, as
    root, in a helper, then move it up into the volume's root, which takes the owner and
    mode of the archive's root; STAGING, empty, stays until the restore is verified. Every
    entry gets the owner, group and mode of its header; only the headers' numeric ids count: their names are looked up in the image the backup
    was read through, which need not be this one. Not `docker cp`: with --archive it gives
    every entry to the container's user (root, or the app image's `app`), and without, it
    leaves the volume's root as it finds it.

    The helper reads the unpacked stream from a FIFO at the path FIFO, bind-mounted, when the
    engine runs on this machine (engine_facts): 2 GB in 1.9 s where its standard input,
    carried through the engine's attach stream, takes 4.0 s. If the engine cannot mount it
    after all (`docker run` exits 125: no container ran, nothing was written), standard input
    it is. Without FIFO: standard input."""
    def unpack_with(source: str, **how) -> list[str]:
        script = (
            f"set -e; tar --extract --file {source} --directory /data/{STAGING} --numeric-owner --same-owner "
            f"--same-permissions; cd /data; "
            f"find {STAGING} -mindepth 1 -maxdepth 1 -exec mv -t . -- {{}} +; "
            f"chown --reference={STAGING} .; chmod --reference={STAGING} ."
        )
        return helper(image, [(volume, "/data", False)], ["sh", "-c", script], project, **how)

    unpack = [*compressor.decompress, archive]
    piped = pipeline(unpack, unpack_with("-", stdin=True))
    if not fifo:
        return piped
    if not FIFO_PATH.fullmatch(fifo):
        raise ValueError(f"not a path for a FIFO: {fifo!r}")
    return _through_fifo(fifo, unpack, unpack_with("/stream", read_only_file=(fifo, "/stream")), piped)


def _through_fifo(fifo: str, unpack: list[str], run: list[str], piped: list[str]) -> list[str]:
    """UNPACK writes into the FIFO that RUN reads; PIPED, when the engine cannot mount it."""
    # The writer blocks until the helper opens the FIFO: killed on the way out if it never does,
    # with SIGKILL: a SIGTERM that lands while the forked shell has not yet become the writer
    # is only noted (the EXIT trap makes the shell catch it) and the shell blocks in open().
    text = (f"set -eu; fifo={shlex.quote(fifo)}; writer=; "
            """trap 'if [ -n "$writer" ]; then kill -KILL "$writer" 2>/dev/null || true; fi; rm -f -- "$fifo"' EXIT; """
            f"""mkfifo -m 600 -- "$fifo"; {shlex.join(unpack)} > "$fifo" & writer=$!; status=0; """
            f"""{shlex.join(run)} || status=$?; """
            """if [ "$status" = 125 ]; then kill -KILL "$writer" 2>/dev/null || true; wait "$writer" || true; writer=; """
            """echo "the engine could not mount $fifo: reading the archive from standard input" >&2; """
            f"""{shlex.join(piped)}; exit; fi; """
            """[ "$status" = 0 ] || exit "$status"; wait "$writer"; writer=""")
    return ["bash", "-c", text]


# An absolute path without the characters `--mount` splits on (`,` and `=`) or quotes.
FIFO_PATH = re.compile(r"/[A-Za-z0-9_./+@:-]+")


def engine_facts() -> list[str]:
    """Prints the engine's host name and security options on one line, then this machine's
    name. The same names when the engine runs here, so that a bind mount reaches this
    machine's files (a FIFO too); Docker Desktop, Colima and remote engines answer with names
    of their own. With SELinux or a user namespace remap, the helper's root may not read a
    bind-mounted file of ours."""
    return ["sh", "-c", "docker info --format '{{.Name}}{{range .SecurityOptions}} {{.}}{{end}}' && uname -n"]


def fifo_usable(facts: str) -> bool:
    """From ENGINE_FACTS' answer: can a helper read a FIFO made here?"""
    lines = facts.splitlines()
    if len(lines) != 2 or not lines[0].split():
        return False
    engine, *options = lines[0].split()
    return engine == lines[1].strip() and not any("selinux" in o or "userns" in o for o in options)


def put_safety_back(volume: str, image: str, project: str) -> list[str]:
    """Delete whatever a failed restore left and move the safety content back in place,
    with the root's owner and mode as they were: SETTLE, as for a killed restore."""
    return _in_volume(volume, image, project, SETTLE)


# Checking an archive before anything is written ----------------------------------------------

class Refused(ValueError):
    """An archive entry a restore will not write: the message names it, in one line."""


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.split("/") if p not in ("", "."))


def _resolve(link: tuple[str, ...], links: dict, depth: int = 0) -> tuple[str, ...] | None:
    """Where the symlink LINK leads, following the archive's other symlinks; None when it
    leaves the archive's root (absolute, too many `..`, or a loop)."""
    target = links[link]
    if target.startswith("/") or depth > 40:
        return None
    parts = list(link[:-1])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        if tuple(parts) in links:
            resolved = _resolve(tuple(parts), links, depth + 1)
            if resolved is None:
                return None
            parts = list(resolved)
    return tuple(parts)


def check_entries(members, owners, root_owner: str | None = None) -> int:
    """Raise Refused, naming the first offending entry, unless every member of the tar
    stream MEMBERS is a regular file, a directory, or a symlink that leads inside the
    archive; none is setuid or setgid, has an absolute name or `..`, takes a reserved name,
    lies below a symlink (tar would write through it), or belongs to an owner (uid:gid)
    not in OWNERS. With ROOT_OWNER, the archive must hold the volume's root (`./`, whose
    owner and mode the restored volume takes), owned by ROOT_OWNER, which may read, write
    and enter it, and not writable by everyone: a volume its user cannot write to is a
    site down. Returns the number of entries."""
    allowed = set(owners)
    links: dict[tuple[str, ...], str] = {}
    count, root_seen = 0, False
    for member in members:
        count += 1
        if root_owner is not None and not _parts(member.name) and not member.name.startswith("/"):
            root_seen = True
            _check_root(member, root_owner)
        parts = _check_entry(member, allowed)
        for depth in range(1, len(parts)):
            if parts[:depth] in links:
                raise Refused(f"entry {member.name!r} lies below the symlink {'/'.join(parts[:depth])!r}")
        if member.issym():
            links[parts] = member.linkname
    for link, target in links.items():
        if _resolve(link, links) is None:
            raise Refused(f"entry {'/'.join(link)!r} is a symlink to {target!r}, outside the volume")
    if root_owner is not None and not root_seen:
        raise Refused("it holds no entry for the volume's root (./), whose owner and mode the volume would take")
    return count


def _check_root(member, root_owner: str) -> None:
    if not member.isdir() or f"{member.uid}:{member.gid}" != root_owner:
        raise Refused(f"the volume's root belongs to {member.uid}:{member.gid}, not to {root_owner}, "
                      "the user that writes to it")
    if member.mode & 0o700 != 0o700 or member.mode & 0o7002:
        raise Refused(f"the volume's root has mode {member.mode:o}: its user must read, write and "
                      "enter it, and nothing else (setuid, setgid, sticky, writable by everyone)")


def _check_entry(member, allowed: set) -> tuple[str, ...]:
    """MEMBER's path parts, once its name, kind, mode and owner are all allowed."""
    shown = f"{member.name!r}"
    if member.name.startswith("/"):
        raise Refused(f"entry {shown} has an absolute path")
    parts = _parts(member.name)
    if ".." in parts:
        raise Refused(f"entry {shown} climbs out of the volume (..)")
    if parts and parts[0] in RESERVED:
        raise Refused(f"entry {shown} takes the name a restore reserves for itself ({parts[0]})")
    if not (member.isreg() or member.isdir() or member.issym()):
        kind = ("a hard link" if member.islnk() else "a device node" if member.ischr() or member.isblk()
                else "a FIFO" if member.isfifo() else f"of type {member.type!r}")
        raise Refused(f"entry {shown} is {kind}: only files, directories and symlinks are restored")
    if member.mode & 0o6000:
        raise Refused(f"entry {shown} is setuid or setgid (mode {member.mode:o})")
    if f"{member.uid}:{member.gid}" not in allowed:
        raise Refused(f"entry {shown} belongs to {member.uid}:{member.gid}, an owner the manifest does not list")
    return parts


def read_entries(stream):
    """The members of the tar STREAM (a file object read once, front to back)."""
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        yield from archive


def drop_safety(volume: str, image: str, project: str) -> list[str]:
    """The restore verified: its safety copy renamed (the mark of a verified restore, for
    SETTLE), then deleted with the unpacking folder; run again after an interrupt, it goes
    on where that one stopped."""
    return _in_volume(volume, image, project, f"if [ -d {SAFETY} ]; then mv -T -- {SAFETY} {DISCARD}; fi; "
                                              f"rm -rf -- {STAGING} {DISCARD}")


def unfinished_transfers(directory: str) -> list[str]:
    """On a host: its clock, then each `*.tmp` file of DIRECTORY (none if it is missing) as
    "BYTES MTIME NAME", a line each: what an interrupted backup or transfer left there."""
    return ["bash", "-c", "cd \"$1\" 2>/dev/null || exit 0; date +%s; "
            "find . -maxdepth 1 -type f -name '*.tmp' -printf '%s %T@ %f\\n'", "unfinished", directory]


def read_unfinished(output: str) -> list[tuple[str, int, float]]:
    """(name, bytes, seconds since it was last written) of each file unfinished_transfers
    lists; ValueError on anything else."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return []
    now, found = float(lines[0]), []
    for line in lines[1:]:
        size, mtime, name = line.split(" ", 2)
        found.append((name, int(size), max(0.0, now - float(mtime))))
    return sorted(found)


def restore_leftovers(volumes: dict[str, str], image: str, project: str) -> list[str]:
    """Prints a line `SHORT NAME` for each name of RESERVED at the root of a volume of
    VOLUMES (short name: engine's name), all mounted read-only in one helper from IMAGE."""
    mounts = [(name, f"/v/{short}", True) for short, name in volumes.items()]
    script = (f"cd /v; for v in *; do for n in {' '.join(RESERVED)}; do "
              """if [ -e "$v/$n" ]; then echo "$v $n"; fi; done; done""")
    return helper(image, mounts, ["sh", "-c", script], project)


def leftovers_by_volume(output: str) -> dict[str, list[str]]:
    """RESTORE_LEFTOVERS' answer: for each volume's short name, the names found at its root."""
    left: dict[str, list[str]] = {}
    for line in output.splitlines():
        short, name = line.split()
        left.setdefault(short, []).append(name)
    return left


def image_environment(image: str) -> list[str]:
    """The image's environment, a VAR=value per line."""
    return ["docker", "image", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", image]


def pg_major_of(environment: str) -> str | None:
    """PG_MAJOR, which the official postgres images set, from IMAGE_ENVIRONMENT's answer."""
    for line in environment.splitlines():
        if line.startswith("PG_MAJOR=") and line[9:].isdigit():
            return line[9:]
    return None


def postgres_version(image: str) -> list[str]:
    return ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "postgres", image, "--version"]


def major_version(version_output: str) -> str | None:
    match = re.search(r"\(PostgreSQL\) (\d+)", version_output)
    return match.group(1) if match else None


def sha256(path: str) -> list[str]:
    return ["sha256sum", path]


def sha256_check(path: str, digest: str) -> tuple[list[str], str]:
    """(argv, stdin) that succeed only when PATH's SHA-256 is DIGEST."""
    return ["sha256sum", "--check", "--status", "--strict"], f"{digest}  {path}\n"


def _canonical(fields: dict) -> bytes:
    return json.dumps({k: v for k, v in fields.items() if k != "hmac"}, sort_keys=True,
                      separators=(",", ":")).encode()


def manifest(key: bytes, **fields) -> str:
    """The manifest of a backup, authenticated with KEY: an HMAC-SHA256 over every other
    field, the archive's SHA-256 included, so that neither can be changed without the key."""
    data = {"format": FORMAT, **fields}
    data["hmac"] = hmac.new(key, _canonical(data), hashlib.sha256).hexdigest()
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def authentic(data: dict, key: bytes) -> bool:
    given = data.get("hmac")
    return isinstance(given, str) and hmac.compare_digest(
        given, hmac.new(key, _canonical(data), hashlib.sha256).hexdigest())


def checksum_line(text: str, archive: str) -> str | None:
    """The digest a `.sha256` file's TEXT gives for ARCHIVE, or None when it names no digest
    of ARCHIVE in sha256sum's format."""
    match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S+)\n?", text)
    return match.group(1) if match and match.group(2) == archive else None


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

# IN_DB below: the argv that runs a command in database DB's container, its standard input
# passed through: `docker compose ... exec -T DB` on a host, `docker exec -i ID` on the
# node of a cluster that runs it.

def in_compose_service(project_compose: list[str], db: str) -> list[str]:
    return [*project_compose, "exec", "-T", db]


def pg_dump(in_db: list[str], db: str, compressed: bool = True) -> list[str]:
    """Not COMPRESSED: when time counts more than bytes (an upgrade dumps while writes are
    held; pg_dump's gzip takes most of that time)."""
    return [*in_db, "pg_dump", "--format", "custom", *([] if compressed else ["--compress", "0"]),
            "--username", db, "--dbname", db]


def run_sql(in_db: list[str], db: str, sql: str, database="postgres") -> list[str]:
    """SQL as the superuser, whose names resolve in pg_catalog alone: nothing the app's role
    made (a function or an operator in a schema it can write to) is ever called by it. Each
    -c is a statement of its own (CREATE DATABASE refuses a transaction block)."""
    return [*in_db, "psql", "--username", db, "--dbname", database, "-v", "ON_ERROR_STOP=1", "-Atq",
            "-c", SUPERUSER_SEARCH_PATH, "-c", sql]


# What a superuser's session sets first wherever the app's role may have created objects.
SUPERUSER_SEARCH_PATH = "SET search_path = pg_catalog"


def pg_restore(in_db: list[str], target: str, role: str) -> list[str]:
    """pg_restore connected as ROLE itself (the app's role: not a superuser), not a
    superuser that switches role, which the dump's own SQL could switch back: whatever a
    dump holds (`COPY ... TO PROGRAM` in an index's function, say) runs with ROLE's rights.
    The dump's owners and grants are left out: ROLE owns what it loads."""
    return [*in_db, "pg_restore", "--username", role, "--dbname", target,
            "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]


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


def loads_of_sql(live: str) -> str:
    """SQL listing LIVE and the databases a load of it makes (LIVE__load_*, LIVE__old_*)."""
    lit = live.replace("'", "''")
    return (f"SELECT datname FROM pg_database WHERE datname = '{lit}' OR starts_with(datname, '{lit}__load_') "
            f"OR starts_with(datname, '{lit}__old_') ORDER BY datname")


def drop_database_sql(name: str) -> list[str]:
    """Statements (each run on its own: DROP DATABASE refuses a transaction) that drop NAME,
    ending the connections a killed task's commands may still hold to it."""
    q, lit = quote_ident(name), name.replace("'", "''")
    return [f"ALTER DATABASE {q} WITH ALLOW_CONNECTIONS false; "
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{lit}'",
            f"DROP DATABASE IF EXISTS {q}"]


def settle_loads(live: str, found) -> list[tuple[str, str, list[str]]]:
    """What a killed load of LIVE (procedures/dumps.load_into) left, from FOUND (the
    answer to loads_of_sql), settled without losing LIVE's data: [(what, statements)].
    - LIVE missing, a LIVE__old_* there: that is LIVE's data (the load stopped between its
      renames): the newest is renamed back, connections allowed again.
    - a LIVE__old_* beside LIVE: the data LIVE had before a load swapped in: dropped, as the
      load would have done next.
    - a LIVE__load_* beside LIVE: a copy never swapped in: dropped. With LIVE missing and no
      LIVE__old_* to put back, it is kept (the only copy there is).
    Returns [(the database, what is done, statements)]."""
    found = set(found)
    olds = sorted(n for n in found if n.startswith(f"{live}__old_"))
    loads = sorted(n for n in found if n.startswith(f"{live}__load_"))
    steps = []
    if live not in found:
        if not olds:
            return []
        back = olds.pop()
        steps.append((back, f"renaming {back} back to {live}: it holds {live}'s data (a load stopped between its renames)",
                      [f"ALTER DATABASE {quote_ident(back)} RENAME TO {quote_ident(live)}; "
                       f"ALTER DATABASE {quote_ident(live)} WITH ALLOW_CONNECTIONS true"]))
    for name in olds:
        steps.append((name, f"dropping {name}: the data {live} had before a load that was swapped in", drop_database_sql(name)))
    for name in loads:
        steps.append((name, f"dropping {name}: a load that was never swapped in", drop_database_sql(name)))
    return steps


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
