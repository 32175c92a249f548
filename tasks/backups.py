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
from pathlib import Path, PurePosixPath

from . import archive, compose
from .runner import Runner, TaskError
from .stack import ROOT


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
                          images.get(owner) or f"{owner.upper()}_IMAGE", short in database_volumes)
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


def backup_dir(r: Runner):
    r.mkdir(r.backups)
    return r.backups


def _sha256(r: Runner, path: Path) -> str:
    result = r.probe(archive.sha256(str(path)))
    if result is None:
        return "<sha256>"
    if result.failed:
        raise TaskError(f"could not checksum {path}: {result.stderr.strip()}")
    return result.stdout.split()[0]


def _publish(r: Runner, tmp, final, manifest_text: str) -> None:
    """Rename the finished archive into place, then its manifest (the 'complete' mark),
    and a sha256sum-compatible checksum file for people and scripts."""
    if r.dry:
        r.say(f"[dry] would rename {tmp.name} to {final.name} and write {final.name}.json")
        return
    r.rename(tmp, final)
    data = json.loads(manifest_text)
    r.write(final.with_name(final.name + ".sha256"), f"{data['sha256']}  {final.name}\n")
    r.write(final.with_name(archive.manifest_path(final.name)), manifest_text)


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


class helper_container:
    """A created, never started, container with VOLUME mounted at /data, for `docker cp`;
    removed on the way out."""

    def __init__(self, r: Runner, info: VolumeInfo, read_only: bool):
        self.r, self.info, self.read_only = r, info, read_only
        self.id = None

    def __enter__(self) -> str:
        argv = archive.create_helper(self.info.image, self.info.name, self.read_only, self.r.project)
        self.r.probe(archive.remove_container(archive.helper_name(self.info.name)))  # left by a killed run
        if self.r.dry:
            self.r.say(f"[dry] {' '.join(argv)}")
            self.id = "HELPER_CONTAINER"
            return self.id
        result = self.r.probe(argv)
        if result.failed:
            raise TaskError(f"could not create a helper container from {self.info.image} "
                            f"(it must be on the host; run `inv build`): {result.stderr.strip()}")
        self.id = result.stdout.strip()
        return self.id

    def __exit__(self, *exc):
        if self.id and not self.r.dry:
            self.r.probe(archive.remove_container(self.id))
        return False


def remove_leftover_helpers(r: Runner) -> None:
    """Helpers left by a killed backup or restore hold their volume; `inv down` clears them."""
    found = r.probe(archive.leftover_helpers(r.project))
    if found is not None and found.stdout.split():
        r.probe(["docker", "rm", "--force", *found.stdout.split()])


def backup_volume(r: Runner, info: VolumeInfo, comp: archive.Compressor) -> Path:
    if not volume_exists(r, info.name):
        raise TaskError(f"volume {info.name} does not exist: nothing to back up (start the stack with `inv up`)")
    directory = backup_dir(r)
    when = archive.stamp()
    final = directory / archive.archive_name(r.project, info.short, when, comp.extension)
    tmp = final.with_name(f".{final.name}.tmp")
    if r.exists(final):
        raise TaskError(f"{final} exists already; wait a second and try again")
    r.say(f"backing up {info.name} -> {final}")
    started = time.monotonic()
    try:
        with stopped_services(r, info.writers):
            stats = r.probe(archive.volume_stats(info.name, info.image))
            with helper_container(r, info, read_only=True) as container:
                r.run(archive.archive_volume(container, comp, str(tmp)), what=f"archiving {info.name}")
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
        r.remove(tmp)
        raise
    if not r.dry:
        seconds = time.monotonic() - started
        r.say(f"  {int(size or 0) / 1e6:.1f} MB in {int(files or 0)} entries -> "
              f"{r.size(final) / 1e6:.1f} MB in {seconds:.1f}s, sha256 {digest[:12]}")
    return final


def load_backup(r: Runner, path) -> tuple[Path, dict]:
    """Find the archive and its manifest from either path (here, or on the host for a remote
    runner); verify the checksum before anything else happens."""
    given = PurePosixPath(path) if r.remote else Path(path).absolute()
    archive_file = given.with_name(given.name[:-5]) if given.name.endswith(".json") else given
    manifest_file = archive_file.with_name(archive.manifest_path(archive_file.name))
    if not r.exists(archive_file):
        raise TaskError(f"{archive_file} does not exist")
    if not r.exists(manifest_file):
        raise TaskError(f"{manifest_file.name} is missing: {archive_file.name} is an unfinished or foreign backup; refusing it")
    try:
        data = archive.read_manifest(r.read(manifest_file), manifest_file.name)
    except ValueError as exc:
        raise TaskError(str(exc)) from None
    if data["archive"] != archive_file.name:
        raise TaskError(f"{manifest_file.name} describes {data['archive']}, not {archive_file.name}")
    if not r.dry:
        digest = _sha256(r, archive_file)
        if digest != data["sha256"]:
            raise TaskError(f"{archive_file.name} is corrupt or truncated: its SHA-256 is {digest[:16]}..., "
                            f"the manifest says {data['sha256'][:16]}...; nothing was changed")
        r.say(f"verified {archive_file.name} (sha256 {digest[:12]}){' on ' + r.host if r.remote else ''}")
    return archive_file, data


def verified_on_target(r: Runner, path):
    """load_backup for the runner's side: for a host, the local backup is verified here,
    uploaded, then verified again there."""
    if r.remote:
        from invoke import Context

        local_archive, _ = load_backup(Runner(Context(), stack=r.stack, dry=r.dry), path)
        path = upload(r, local_archive)
    return load_backup(r, path)


def companions(archive_file) -> list:
    """The archive, its checksum file and its manifest, in the order to copy them (the
    manifest last: it marks the backup complete)."""
    return [archive_file, archive_file.with_name(archive_file.name + ".sha256"),
            archive_file.with_name(archive.manifest_path(archive_file.name))]


def fetch(r: Runner, remote_archive) -> Path:
    """Copy a backup made on a host into the local backups/ (a backup with --host)."""
    local_dir = Path(ROOT) / archive.BACKUP_DIR
    if r.dry:
        r.say(f"[dry] would copy {remote_archive.name} from {r.host} into {local_dir}")
        return local_dir / remote_archive.name
    local_dir.mkdir(mode=0o700, exist_ok=True)
    for remote_path in companions(remote_archive):
        tmp = local_dir / f".{remote_path.name}.tmp"
        r.c.get(str(remote_path), local=str(tmp))
        tmp.chmod(0o600)
        tmp.rename(local_dir / remote_path.name)
    r.say(f"copied {remote_archive.name} from {r.host} into {local_dir}")
    return local_dir / remote_archive.name


def upload(r: Runner, local_archive: Path):
    """Copy a local backup to the host's backups folder (a restore with --host)."""
    r.mkdir(r.backups)
    target = r.backups / local_archive.name
    for local_path in companions(local_archive):
        if r.dry:
            r.say(f"[dry] would upload {local_path.name} to {r.host}:{r.backups}")
            continue
        tmp = r.backups / f".{local_path.name}.tmp"
        r.c.put(str(local_path), remote=str(tmp))
        r.rename(tmp, r.backups / local_path.name)
    return target


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
    if not volume_exists(r, info.name):
        # Let compose create the volume, with its labels, as `inv up` would.
        r.compose(compose.up(build=False, wait=False) + ["--no-start"], what="creating the stack's volumes")
    users = sorted(set(info.writers + info.readers))
    safety = f"{info.name}:/{archive.SAFETY}"
    with stopped_services(r, users):
        r.run(archive.move_aside(info.name, info.image), what=f"moving the content of {info.name} aside")
        try:
            with helper_container(r, info, read_only=False) as container:
                r.run(archive.extract_volume(str(archive_file), comp, container), what=f"restoring {info.name}")
        except BaseException:
            r.say(f"restoring {info.name} failed; putting the safety copy back")
            r.run(archive.put_safety_back(info.name, info.image), what="putting the safety copy back")
            r.say(f"{info.name} holds its previous content again")
            raise
    # Every service up and healthy again, or the old content goes back.
    try:
        r.compose(compose.up(build=False, timeout=timeout), what="starting the stack after the restore")
    except TaskError:
        r.say(f"the stack did not become healthy with the restored {info.short}; putting the safety copy back")
        with stopped_services(r, users):
            r.run(archive.put_safety_back(info.name, info.image), what="putting the safety copy back")
        r.compose(compose.up(build=False, timeout=timeout), check=False)
        raise TaskError(f"restore of {archive_file.name} rolled back: the stack was not healthy with it; "
                        f"{info.name} has its previous content again") from None
    r.run(archive.drop_safety(info.name, info.image), what=f"removing the safety copy {safety}")
    r.say(f"restored {info.name} from {archive_file.name}; the stack is healthy")


# Logical dumps -------------------------------------------------------------------------------

def dump_database(r: Runner, db) -> Path:
    r.require_running(db.name)
    directory = backup_dir(r)
    final = directory / archive.archive_name(r.project, db.name, archive.stamp(), ".dump")
    tmp = final.with_name(f".{final.name}.tmp")
    r.say(f"dumping {db.name} -> {final}")
    compose_argv = r.compose_argv([])
    try:
        version = r.probe(r.compose_argv(["exec", "-T", db.name, "postgres", "--version"]))
        r.run(archive.pipeline(archive.pg_dump(compose_argv, db.name), output=str(tmp)), what=f"pg_dump of {db.name}")
        digest = _sha256(r, tmp)
        manifest = archive.manifest(
            kind="dump", project=r.project, subject=db.name, database=db.name, archive=final.name,
            dump_format="pg_dump custom", sha256=digest, size_bytes=r.size(tmp),
            postgres_major=archive.major_version(version.stdout) if version else None,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        _publish(r, tmp, final, manifest)
    except BaseException:
        r.remove(tmp)
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
    for path in sorted(Path(r.backups).glob("*.json")):
        try:
            data = archive.read_manifest(path.read_text(encoding="utf-8"), path.name)
        except ValueError:
            continue
        data["_path"] = path
        found.append(data)
    return found
