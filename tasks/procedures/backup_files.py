"""A backup's files: published so that only a complete backup looks complete, verified
before anything trusts them, listed, and carried between here and a host.

A backup is an archive, a `.sha256` file and a manifest (ARCHIVE.json), renamed into place
in that order: an archive without its manifest is an unfinished backup, never a complete one.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import TaskError
from ..execution.runner import Runner
from ..plans import archives


def backup_dir(r: Runner):
    r.mkdir(r.backups)
    return r.backups


def sha256(r: Runner, path) -> str:
    result = r.probe(archives.sha256(str(path)), dry_answer=f"<sha256>  {path}")
    if result.failed or not result.stdout.split():
        raise TaskError(f"could not checksum {path}: {result.stderr.strip()}")
    return result.stdout.split()[0]


def publish(r: Runner, tmp, final, manifest_text: str) -> None:
    """Rename the finished archive into place, then write a sha256sum-compatible checksum
    file for people and scripts, then its manifest (the 'complete' mark)."""
    r.rename(tmp, final)
    data = json.loads(manifest_text)
    r.write(final.with_name(final.name + ".sha256"), f"{data['sha256']}  {final.name}\n")
    r.write(final.with_name(archives.manifest_path(final.name)), manifest_text)


def read_local(path) -> tuple[Path, dict]:
    """The archive and its manifest, from either path, on this machine: the backup a user
    names on the command line (an input, read even in a dry run)."""
    given = Path(path).absolute()
    archive_file = given.with_name(given.name[:-5]) if given.name.endswith(".json") else given
    manifest_file = archive_file.with_name(archives.manifest_path(archive_file.name))
    if not archive_file.exists():
        raise TaskError(f"{archive_file} does not exist")
    if not manifest_file.exists():
        raise TaskError(f"{manifest_file.name} is missing: {archive_file.name} is an unfinished or foreign backup; refusing it")
    try:
        data = archives.read_manifest(manifest_file.read_text(encoding="utf-8"), manifest_file.name)
    except ValueError as exc:
        raise TaskError(str(exc)) from None
    if data["archive"] != archive_file.name:
        raise TaskError(f"{manifest_file.name} describes {data['archive']}, not {archive_file.name}")
    return archive_file, data


def verify(r: Runner, archive_file, data: dict) -> None:
    """Check ARCHIVE_FILE's SHA-256 against its manifest where R runs, before anything else."""
    argv, stdin = archives.sha256_check(str(archive_file), data["sha256"])
    if r.probe(argv, stdin_text=stdin).failed:
        digest = sha256(r, archive_file)
        raise TaskError(f"{archive_file.name} is corrupt or truncated: its SHA-256 is {digest[:16]}..., "
                        f"the manifest says {data['sha256'][:16]}...; nothing was changed")
    r.report(f"verified {archive_file.name} (sha256 {data['sha256'][:12]}){r.target.on}")


def verified_on_target(r: Runner, path):
    """The backup at PATH on this machine, verified here, then put where R runs (a host
    verifies its copy again): (the archive on the target, its manifest)."""
    archive_file, data = read_local(path)
    verify(r.here(), archive_file, data)
    on_target = r.target.receive_backup(r, archive_file, lambda copy: verify(r, copy, data))
    return on_target, data


def manifests(r: Runner) -> list[dict]:
    """The complete backups in this machine's backups/, newest last."""
    found = []
    for path in sorted(Path(r.backups).glob("*.json")):
        try:
            data = archives.read_manifest(path.read_text(encoding="utf-8"), path.name)
        except ValueError:
            continue
        data["_path"] = path
        found.append(data)
    return found
