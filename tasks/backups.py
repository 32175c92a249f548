"""Backing up and restoring the stack's volumes and databases through a Runner.

The order of every operation is chosen so that a failure or an interruption at any point
leaves the data as it was: services that write to a volume are stopped during its copy
and started again in a `finally`; archives are written under a temporary name and a
manifest is renamed into place last; a restore keeps a safety copy of the volume and puts
it back if anything after that fails.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import archive, compose
from .files import write_atomic
from .runner import Runner, TaskError


@dataclass(frozen=True)
class VolumeInfo:
    short: str                  # as in the compose file: database1_volume
    name: str                   # as the engine knows it: hello_database1_volume
    writers: tuple[str, ...]    # services mounting it read-write: stopped during a copy
    readers: tuple[str, ...]    # services mounting it read-only
    image: str                  # an image on the host that can run tar and sh on it
    postgres: bool


def volume_users(stack) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str]]:
    """For each volume of the stack: (writers, readers, the service whose image to use).
    Mirrors the compose template: a database's volume is its own; the app writes static
    and media files, which Nginx reads."""
    users = {db.volume: ((db.name,), (), db.name) for db in stack.databases}
    for short in ("static_volume", "media_volume"):
        users[short] = ((compose.APP,), ("nginx",), compose.APP)
    return users


def stack_volumes(r: Runner) -> dict[str, VolumeInfo]:
    """The stack's named volumes with the services that mount them; image names are what
    `compose config` resolves (variables and defaults included)."""
    images = {}
    if not r.dry:
        result = r.compose_probe(["config", "--format", "json"])
        if result.failed:
            raise TaskError(f"could not read the compose configuration: {result.stderr.strip()}")
        images = {name: svc.get("image") for name, svc in json.loads(result.stdout)["services"].items()}
    database_volumes = {db.volume for db in r.stack.databases}
    return {
        short: VolumeInfo(short, f"{r.project}_{short}", writers, readers,
                          images.get(owner) or f"<{owner} image>", short in database_volumes)
        for short, (writers, readers, owner) in volume_users(r.stack).items()
    }


def resolve_volume(r: Runner, volumes: dict[str, VolumeInfo], name: str) -> VolumeInfo:
    for info in volumes.values():
        if name in (info.short, info.name):
            return info
    raise TaskError(f"no volume named {name!r} in this stack (known: {', '.join(volumes)})")


def volume_exists(r: Runner, name: str) -> bool:
    if r.dry:
        return True
    return r.probe(["docker", "volume", "inspect", name]).ok


def compressor(r: Runner) -> archive.Compressor:
    if r.dry or r.probe(["zstd", "--version"]).ok:
        return archive.ZSTD
    return archive.GZIP


def backup_dir(r: Runner) -> Path:
    path = r.root / archive.BACKUP_DIR
    if not r.dry:
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def _sha256(r: Runner, path: Path) -> str:
    result = r.probe(archive.sha256(str(path)))
    if result is None:
        return "<sha256>"
    if result.failed:
        raise TaskError(f"could not checksum {path}: {result.stderr.strip()}")
    return result.stdout.split()[0]


def _publish(r: Runner, tmp: Path, final: Path, manifest_text: str) -> None:
    """Rename the finished archive into place, then its manifest (the 'complete' mark),
    and a sha256sum-compatible checksum file for people and scripts."""
    if r.dry:
        r.say(f"[dry] would rename {tmp.name} to {final.name} and write {final.name}.json")
        return
    tmp.rename(final)
    data = json.loads(manifest_text)
    write_atomic(final.with_name(final.name + ".sha256"), f"{data['sha256']}  {final.name}\n", mode=0o600)
    write_atomic(Path(archive.manifest_path(str(final))), manifest_text, mode=0o600)


class stopped_services:
    """Stop SERVICES that are running, and start them again on the way out, whatever
    happens in between (an error, Ctrl-C)."""

    def __init__(self, r: Runner, services):
        self.r = r
        self.services = [s for s in services if r.dry or s in r.running_services()]

    def __enter__(self):
        if self.services:
            self.r.compose(compose.stop(self.services), what=f"stopping {', '.join(self.services)}")
        return self

    def __exit__(self, *exc):
        if self.services:
            self.r.compose(["start", *self.services], what=f"starting {', '.join(self.services)} again", check=False)
        return False


def backup_volume(r: Runner, info: VolumeInfo, comp: archive.Compressor) -> Path:
    if not volume_exists(r, info.name):
        raise TaskError(f"volume {info.name} does not exist: nothing to back up (start the stack with `inv up`)")
    directory = backup_dir(r)
    when = archive.stamp()
    final = directory / archive.archive_name(r.project, info.short, when, comp.extension)
    tmp = final.with_name(f".{final.name}.tmp")
    if final.exists():
        raise TaskError(f"{final} exists already; wait a second and try again")
    r.say(f"backing up {info.name} -> {final.relative_to(r.root)}")
    started = time.monotonic()
    try:
        with stopped_services(r, info.writers):
            stats = r.probe(archive.volume_stats(info.name, info.image))
            r.run(archive.archive_volume(info.name, info.image, comp, str(tmp)), what=f"archiving {info.name}")
        size, files, pg = (stats.stdout.splitlines() + ["", "", ""])[:3] if stats else ("0", "0", "")
        digest = _sha256(r, tmp)
        manifest = archive.manifest(
            kind="volume", project=r.project, subject=info.short, volume=info.short, docker_volume=info.name,
            services=sorted(info.writers + info.readers), archive=final.name, compression=comp.name,
            sha256=digest, size_bytes=int(size or 0), files=int(files or 0), image=info.image,
            postgres_major=pg.strip() or None, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        _publish(r, tmp, final, manifest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not r.dry:
        seconds = time.monotonic() - started
        r.say(f"  {int(size or 0) / 1e6:.1f} MB in {int(files or 0)} entries -> "
              f"{final.stat().st_size / 1e6:.1f} MB in {seconds:.1f}s, sha256 {digest[:12]}")
    return final


def load_backup(r: Runner, path: str) -> tuple[Path, dict]:
    """Find the archive and its manifest from either path; verify the checksum."""
    given = Path(path)
    if not given.is_absolute():
        given = Path.cwd() / given
    archive_file = given.with_name(given.name[:-5]) if given.name.endswith(".json") else given
    manifest_file = Path(archive.manifest_path(str(archive_file)))
    if not archive_file.is_file():
        raise TaskError(f"{archive_file} does not exist")
    if not manifest_file.is_file():
        raise TaskError(f"{manifest_file.name} is missing: {archive_file.name} is an unfinished or foreign backup; refusing it")
    try:
        data = archive.read_manifest(manifest_file.read_text(encoding="utf-8"), manifest_file.name)
    except ValueError as exc:
        raise TaskError(str(exc)) from None
    if data["archive"] != archive_file.name:
        raise TaskError(f"{manifest_file.name} describes {data['archive']}, not {archive_file.name}")
    if not r.dry:
        digest = _sha256(r, archive_file)
        if digest != data["sha256"]:
            raise TaskError(f"{archive_file.name} is corrupt or truncated: its SHA-256 is {digest[:16]}..., "
                            f"the manifest says {data['sha256'][:16]}...; nothing was changed")
        r.say(f"verified {archive_file.name} (sha256 {digest[:12]})")
    return archive_file, data


def _running_postgres_major(r: Runner, image: str) -> str | None:
    result = r.probe(archive.postgres_version(image))
    if result is None:
        return None
    if result.failed:
        raise TaskError(f"could not run postgres --version in {image}: {result.stderr.strip()}")
    return archive.major_version(result.stdout)


def restore_volume(r: Runner, info: VolumeInfo, archive_file: Path, data: dict, timeout: int = 180) -> None:
    if data["kind"] != "volume":
        raise TaskError(f"{archive_file.name} is a {data['kind']} backup; use `inv db.load` for database dumps")
    comp = archive.COMPRESSORS.get(data.get("compression", ""))
    if comp is None:
        raise TaskError(f"{archive_file.name} uses an unknown compression {data.get('compression')!r}")
    wanted = data.get("postgres_major")
    if info.postgres or wanted:
        have = _running_postgres_major(r, info.image)
        if wanted and have and wanted != have:
            raise TaskError(
                f"{archive_file.name} holds PostgreSQL {wanted} data but {info.short} runs {info.image} "
                f"(PostgreSQL {have}); a file-level copy only works within one major version: restore a "
                f"logical dump instead (inv db.dump on the old version, then inv db.load)")
    exists = volume_exists(r, info.name)
    if not exists:
        # Let compose create the volume, with its labels, as `inv up` would.
        r.compose(compose.up(build=False, wait=False) + ["--no-start"], what="creating the stack's volumes")
    safety = f"{info.name}_safety_{archive.stamp()}"
    users = sorted(set(info.writers + info.readers))
    with stopped_services(r, users):
        r.run(["docker", "volume", "create", "--label", f"hello.safety-copy-of={info.name}", safety],
              what="creating the safety volume", hide=True)
        try:
            r.run(archive.copy_volume(info.name, safety, info.image), what=f"safety copy of {info.name}")
            r.say(f"safety copy of {info.name} kept in {safety}")
            try:
                r.run(archive.extract_volume(str(archive_file), comp, info.name, info.image),
                      what=f"restoring {info.name}")
            except BaseException:
                r.say(f"restoring {info.name} failed; putting the safety copy back")
                r.run(archive.copy_volume(safety, info.name, info.image), what="putting the safety copy back")
                raise
        except BaseException:
            r.say(f"{info.name} holds its previous content again; the safety copy stays in {safety}")
            raise
    # Every service up and healthy again, or the old content goes back.
    try:
        r.compose(compose.up(build=False, timeout=timeout), what="starting the stack after the restore")
    except TaskError:
        r.say(f"the stack did not become healthy with the restored {info.short}; putting the safety copy back")
        with stopped_services(r, users):
            r.run(archive.copy_volume(safety, info.name, info.image), what="putting the safety copy back")
        r.compose(compose.up(build=False, timeout=timeout), check=False)
        raise TaskError(f"restore of {archive_file.name} rolled back: the stack was not healthy with it; "
                        f"{info.name} has its previous content (also kept in {safety})") from None
    r.run(["docker", "volume", "rm", safety], check=False, hide=True)
    r.say(f"restored {info.name} from {archive_file.name}; the stack is healthy")


# Logical dumps -------------------------------------------------------------------------------

def dump_database(r: Runner, db) -> Path:
    r.require_running(db.name)
    directory = backup_dir(r)
    final = directory / archive.archive_name(r.project, db.name, archive.stamp(), ".dump")
    tmp = final.with_name(f".{final.name}.tmp")
    r.say(f"dumping {db.name} -> {final.relative_to(r.root)}")
    compose_argv = r.compose_argv([])
    try:
        version = r.probe(r.compose_argv(["exec", "-T", db.name, "postgres", "--version"]))
        r.run(archive.pipeline(archive.pg_dump(compose_argv, db.name), output=str(tmp)), what=f"pg_dump of {db.name}")
        digest = _sha256(r, tmp)
        manifest = archive.manifest(
            kind="dump", project=r.project, subject=db.name, database=db.name, archive=final.name,
            dump_format="pg_dump custom", sha256=digest, size_bytes=0 if r.dry else tmp.stat().st_size,
            postgres_major=archive.major_version(version.stdout) if version else None,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        _publish(r, tmp, final, manifest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def load_database(r: Runner, db, dump_file: Path) -> None:
    """Restore a dump into a fresh database, all or nothing, then swap it in for DB."""
    r.require_running(db.name)
    compose_argv = r.compose_argv([])
    when = archive.stamp().lower()
    fresh, retired = f"{db.name}__load_{when}", f"{db.name}__old_{when}"
    r.run(archive.psql(compose_argv, db.name, f"CREATE DATABASE {archive.quote_ident(fresh)} OWNER {archive.quote_ident(db.name)}"),
          what=f"creating {fresh}")
    try:
        r.run(archive.pipeline(archive.pg_restore(compose_argv, db.name, fresh), input=str(dump_file)),
              what=f"pg_restore into {fresh}")
    except BaseException:
        r.run(archive.psql(compose_argv, db.name, f"DROP DATABASE IF EXISTS {archive.quote_ident(fresh)}"), check=False)
        r.say(f"nothing changed in {db.name}: the dump did not load")
        raise
    r.run(archive.psql(compose_argv, db.name, archive.swap_databases_sql(db.name, fresh, retired)),
          what=f"swapping {fresh} in for {db.name}")
    r.run(archive.psql(compose_argv, db.name, f"DROP DATABASE {archive.quote_ident(retired)}"), check=False,
          what=f"dropping the previous {db.name}")
    r.say(f"loaded {dump_file.name} into {db.name}")


# Listing and retention --------------------------------------------------------------------------

def manifests(r: Runner) -> list[dict]:
    found = []
    for path in sorted((r.root / archive.BACKUP_DIR).glob("*.json")):
        try:
            data = archive.read_manifest(path.read_text(encoding="utf-8"), path.name)
        except ValueError:
            continue
        data["_path"] = path
        found.append(data)
    return found
