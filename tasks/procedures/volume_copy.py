"""Copying the stack's named volumes to archives and back, through a Runner.

The order of every operation is chosen so that a failure or an interruption (Ctrl-C
included) at any point leaves the data as it was: services that write to a volume are
stopped during its copy and started again on the way out; archives are written under a
temporary name and published with their manifest last; a restore keeps a safety copy of
the volume and puts it back if anything after that fails.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import TaskError, reason
from ..execution.interrupts import again
from ..execution.runner import Runner
from ..plans import archives, compose
from .backup_files import backup_dir, fresh_name, publish, sha256, temporary_name
from .locks import volume_lock
from .starting import start_stack


STATIC_VOLUME = "static_volume"


@dataclass(frozen=True)
class VolumeInfo:
    short: str                  # as in the compose file: database1_volume
    name: str                   # as the engine knows it: hello_database1_volume
    writers: tuple[str, ...]    # services mounting it read-write: stopped during a copy
    readers: tuple[str, ...]    # services mounting it read-only
    image: str                  # an image on the host that can run tar and sh on it
    postgres: bool


def volume_users(stack, site=None) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str]]:
    """For each volume of the stack: (writers, readers, the service whose image to use).
    Mirrors the compose template: a database's volume is its own; the app writes static
    and media files, which Nginx (and the backup service, the media) reads; on an HTTPS site, certbot writes the certificate
    the front reads, and its own account and renewal settings (tls = "acme")."""
    users = {db.volume: ((db.name,), (), db.name) for db in stack.databases}
    backup = ("backup",) if stack.backups else ()  # reads the media and certs it sends away
    users[STATIC_VOLUME] = ((compose.APP,), ("nginx",), compose.APP)
    # The processes (workers) mount the media as the app does: they may write it too.
    users["media_volume"] = ((compose.APP, *(p.name for p in stack.all_processes)), ("nginx", *backup), compose.APP)
    if site is not None and site.https:
        users["certs"] = (("certbot",), ("front", *backup), "front")
    if site is not None and site.tls == "acme":
        users["letsencrypt"] = (("certbot",), (), "front")
    return users


def stack_volumes(r: Runner) -> dict[str, VolumeInfo]:
    """The stack's named volumes with the services that mount them; image names are what
    `compose config` resolves (variables and defaults included)."""
    result = r.compose_probe(compose.config_json())
    if result.failed:
        raise TaskError(f"could not read the compose configuration: {result.stderr.strip()}")
    services = json.loads(result.stdout or "{}").get("services", {})
    images = {name: svc.get("image") for name, svc in services.items()}
    database_volumes = {db.volume for db in r.stack.databases}
    return {
        short: VolumeInfo(short, f"{r.project}_{short}", writers, readers,
                          images.get(owner) or f"{owner.upper()}_IMAGE", short in database_volumes)
        for short, (writers, readers, owner) in volume_users(r.stack, r.target.site).items()
    }


def existing_volumes(r: Runner) -> list[VolumeInfo]:
    """The stack's volumes that the engine has."""
    existing = set(r.probe(["docker", "volume", "ls", "--quiet", "--filter", f"name=^{r.project}_"]).stdout.split())
    return [info for info in stack_volumes(r).values() if info.name in existing] if existing else []


def image_here(r: Runner, volumes: list[VolumeInfo]) -> str | None:
    """An image of VOLUMES' services that is on the engine: a helper can run from it."""
    return next((info.image for info in volumes if r.probe(["docker", "image", "inspect", info.image]).ok), None)


def resolve_volume(volumes: dict[str, VolumeInfo], name: str) -> VolumeInfo:
    for info in volumes.values():
        if name in (info.short, info.name):
            return info
    raise TaskError(f"no volume named {name!r} in this stack (known: {', '.join(volumes)})")


def volume_exists(r: Runner, name: str) -> bool:
    return r.probe(["docker", "volume", "inspect", name]).ok


def compressor(r: Runner) -> archives.Compressor:
    return archives.ZSTD if r.probe(["zstd", "--version"]).ok else archives.GZIP


class stopped_services:
    """Stop SERVICES that are running, and start them again on every way out: an error or
    a Ctrl-C in the block, a Ctrl-C while they stop (some may be stopped already: all that
    were to be are started), a Ctrl-C while they start again (held back until they run)."""

    def __init__(self, r: Runner, services):
        self.r = r
        running = r.running_services()
        self.services = [s for s in services if s in running]

    def __enter__(self):
        try:
            if self.services:
                self.r.compose(compose.stop(self.services), what=f"stopping {', '.join(self.services)}")
        except BaseException:
            # The engine goes on stopping what the interrupted command asked it to: a start
            # now could come first, and the stop after it. Its stop is waited for, then all start.
            again(self.r, compose.stop(self.services), f"finishing the stop of {', '.join(self.services)}")
            self._start_again()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._start_again() and exc_type is None:
            raise KeyboardInterrupt  # the Ctrl-C held back while they started
        return False

    def _start_again(self) -> bool:
        """Start the services again; True when a Ctrl-C came meanwhile."""
        if not self.services:
            return False
        names = ", ".join(self.services)
        result, interrupted = again(self.r, compose.start(self.services), f"starting {names} again")
        if result.failed:
            self.r.say(f"{names} did not start again (exit status {result.exited}): `inv up` starts them")
        return interrupted


class helper_container:
    """A created, never started, container with VOLUME mounted read-only at /data, for
    `docker cp` to read from; removed on the way out."""

    def __init__(self, r: Runner, info: VolumeInfo):
        self.r, self.info = r, info
        self.id = None

    def __enter__(self) -> str:
        self.r.probe(archives.remove_container(archives.helper_name(self.info.name)))  # left by a killed run
        argv = archives.create_helper(self.info.image, self.info.name, self.r.project)
        result = self.r.run(argv, hide=True, check=False, prints="helper container")
        if result.failed:
            raise TaskError(f"could not create a helper container from {self.info.image} "
                            f"(it must be on the host; run `inv build`): {result.stderr.strip()}")
        self.id = result.stdout.strip()
        return self.id

    def __exit__(self, *exc):
        self.r.probe(archives.remove_container(self.id))
        return False


def remove_leftover_helpers(r: Runner) -> None:
    """Helpers left by a killed backup hold their volume; `inv down` clears them."""
    found = r.probe(archives.leftover_helpers(r.project)).stdout.split()
    if found:
        r.probe(archives.remove_container(*found))


class settled_helpers:
    """On the way out of a task on INFO's volume (its lock held: no other task's helper is
    there), the helpers a stopped `docker run` left there never started are removed: a
    Ctrl-C in a step can leave one (archives.helper), and so can an earlier, killed task."""

    def __init__(self, r: Runner, info: VolumeInfo):
        self.r, self.info = r, info

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        found = self.r.probe(archives.unstarted_helpers(self.r.project, self.info.name)).stdout.split()
        if found:
            self.r.probe(archives.remove_container(*found))
        return False


def backup_volume(r: Runner, info: VolumeInfo, comp: archives.Compressor) -> Path:
    if not volume_exists(r, info.name):
        raise TaskError(f"volume {info.name} does not exist: nothing to back up (start the stack with `inv up`)")
    directory = backup_dir(r)
    with volume_lock(r, info.name), settled_helpers(r, info):
        final = fresh_name(r, directory, info.short, comp.extension)
        return _backup_volume(r, info, comp, final)


def _backup_volume(r: Runner, info: VolumeInfo, comp: archives.Compressor, final) -> Path:
    tmp = temporary_name(final)
    r.say(f"backing up {info.name} -> {final}")
    started = time.monotonic()
    try:
        with stopped_services(r, info.writers):
            stats = r.probe(archives.volume_stats(info.name, info.image, r.project))
            left = (stats.stdout.splitlines() + [""] * 5)[4].split()
            if left:  # by a killed restore: never archived
                settle_restore(r, info, left)
                stats = r.probe(archives.volume_stats(info.name, info.image, r.project))
            with helper_container(r, info) as container:
                r.run(archives.archive_volume(container, comp, str(tmp)), what=f"archiving {info.name}")
        size, files, pg, owners = (stats.stdout.splitlines() + ["", "", "", ""])[:4]
        digest = sha256(r, tmp)
        publish(r, tmp, final,
                kind="volume", project=r.project, subject=info.short, volume=info.short, docker_volume=info.name,
                services=sorted(info.writers + info.readers), archive=final.name, compression=comp.name,
                sha256=digest, size_bytes=int(size or 0), files=int(files or 0), image=info.image,
                postgres_major=pg.strip() or None, owners=owners.split(),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    except BaseException:
        r.remove(tmp)
        raise
    r.report(f"  {int(size or 0) / 1e6:.1f} MB in {int(files or 0)} entries -> "
             f"{r.size(final) / 1e6:.1f} MB in {time.monotonic() - started:.1f}s, sha256 {digest[:12]}")
    return final


def settle_restore(r: Runner, info: VolumeInfo, left) -> None:
    """Finish or undo the restore a killed task left in INFO's volume (archives.SETTLE says
    which, and why), with every service using it stopped; LEFT: the names it left."""
    r.say(f"{info.name} holds {', '.join(left)}, left by an interrupted restore")
    with stopped_services(r, info.writers + info.readers):
        r.run(archives.settle_restore(info.name, info.image, r.project),
              what=f"settling the interrupted restore of {info.name}")


def settle_interrupted_restores(r: Runner) -> None:
    """What killed restores left in the stack's volumes (archives.SETTLE), finished or
    undone before the stack starts on it: looked for in one helper, then settled under each
    volume's lock, after a second look there (a restore that was running has ended by then)."""
    volumes = existing_volumes(r)
    image = image_here(r, volumes) if volumes else None
    if image is None:
        return
    found = r.probe(archives.restore_leftovers({info.short: info.name for info in volumes}, image, r.project))
    left_in = archives.leftovers_by_volume(found.stdout) if found.ok else {}
    for info in [info for info in volumes if info.short in left_in]:
        with volume_lock(r, info.name), settled_helpers(r, info):
            stats = r.probe(archives.volume_stats(info.name, info.image, r.project))
            left = (stats.stdout.splitlines() + [""] * 5)[4].split()
            if left:
                settle_restore(r, info, left)


def _postgres_major(r: Runner, image: str) -> str | None:
    # The image's own PG_MAJOR when it has one: read in 0.02 s, where starting it takes 0.3 s.
    major = archives.pg_major_of(r.probe(archives.image_environment(image)).stdout)
    if major:
        return major
    result = r.probe(archives.postgres_version(image))
    if result.failed:
        raise TaskError(f"could not run postgres --version in {image}: {result.stderr.strip()}")
    return archives.major_version(result.stdout)


def stream_path(r: Runner, archive_file) -> str | None:
    """Where a restore's helper reads the unpacked archive from (archives.extract_volume): a
    FIFO beside the archive, when the engine runs on the machine that holds it; else None.
    Named as a temporary file is: one a killed restore leaves is deleted like one (backup_dir)."""
    path = str(temporary_name(archive_file))
    if archives.FIFO_PATH.fullmatch(path) and archives.fifo_usable(r.probe(archives.engine_facts()).stdout):
        return path
    return None


def restore_volume(r: Runner, info: VolumeInfo, archive_file, data: dict, timeout: int) -> None:
    if data["kind"] != "volume":
        raise TaskError(f"{archive_file.name} is a {data['kind']} backup; use `inv db.load` for database dumps")
    comp = archives.COMPRESSORS.get(data.get("compression", ""))
    if comp is None:
        raise TaskError(f"{archive_file.name} uses an unknown compression {data.get('compression')!r}")
    wanted = data.get("postgres_major")
    if info.postgres or wanted:
        have = _postgres_major(r, info.image)
        if wanted and have and wanted != have:
            raise TaskError(
                f"{archive_file.name} holds PostgreSQL {wanted} data but {info.short} runs {info.image} "
                f"(PostgreSQL {have}); a file-level copy only works within one major version: restore a "
                f"logical dump instead (inv db.dump on the old version, then inv db.load)")
    with volume_lock(r, info.name), settled_helpers(r, info):
        _restore_volume(r, info, archive_file, comp, timeout)


def _restore_volume(r: Runner, info: VolumeInfo, archive_file, comp: archives.Compressor, timeout: int) -> None:
    # Static files are collected again into a restored static volume, or a new, empty one;
    # migrations run on a restored database (from older code, perhaps) or a new, empty one.
    collect_static = info.short == STATIC_VOLUME or not volume_exists(r, f"{r.project}_{STATIC_VOLUME}")
    migrate = info.postgres or not all(volume_exists(r, f"{r.project}_{db.volume}") for db in r.stack.databases)
    if not volume_exists(r, info.name):
        # Let compose create the volume, with its labels, as `inv up` would.
        r.compose(compose.up(build=False, wait=False) + ["--no-start"], what="creating the stack's volumes")
    users = sorted(set(info.writers + info.readers))
    fifo = stream_path(r, archive_file)
    unpacked = False
    try:
        with stopped_services(r, users):
            _unpack(r, info, archive_file, comp, fifo)
            unpacked = True
        # Every service up and healthy again, or the old content goes back (a Ctrl-C while
        # they started included).
        start_stack(r, build=False, timeout=timeout, what="starting the stack after the restore",
                    migrate=migrate, static=collect_static)
    except BaseException as exc:
        if not unpacked:
            raise
        r.say(f"the stack did not become healthy with the restored {info.short}; putting the safety copy back")
        with stopped_services(r, users):
            r.run(archives.put_safety_back(info.name, info.image, r.project), what="putting the safety copy back")
        again(r, compose.up(build=False, timeout=timeout), "starting the stack again")
        raise TaskError(f"restore of {archive_file.name} rolled back: the stack was not healthy with it "
                        f"({reason(exc)}); {info.name} has its previous content again") from None
    _drop_safety_copy(r, info, archive_file)


def _unpack(r: Runner, info: VolumeInfo, archive_file, comp: archives.Compressor, fifo: str | None) -> None:
    """The content moved aside (the safety copy), then the archive unpacked; on any failure,
    the safety copy back."""
    try:
        # A restore a killed task left here is settled first (archives.SETTLE).
        r.run(archives.move_aside(info.name, info.image, r.project), what=f"moving the content of {info.name} aside")
        r.run(archives.extract_volume(str(archive_file), comp, info.name, info.image, r.project, fifo=fifo),
              what=f"restoring {info.name}")
    except BaseException:
        r.say(f"restoring {info.name} failed; putting the safety copy back")
        r.run(archives.put_safety_back(info.name, info.image, r.project), what="putting the safety copy back")
        r.say(f"{info.name} holds its previous content again")
        raise


def _drop_safety_copy(r: Runner, info: VolumeInfo, archive_file) -> None:
    # Verified: a Ctrl-C now lets the safety copy's removal finish (the next task on the
    # volume would finish it otherwise), then stops the task.
    dropped, interrupted = again(r, archives.drop_safety(info.name, info.image, r.project),
                                 f"removing the safety copy {info.name}:/{archives.SAFETY}", compose=False)
    if dropped.failed:
        r.say(f"the safety copy of {info.name} is left; the next restore or backup of it deletes it")
    r.report(f"restored {info.name} from {archive_file.name}; the stack is healthy")
    if interrupted:
        raise KeyboardInterrupt
