"""A backup's files: published so that only a complete backup looks complete, verified
before anything trusts them, listed, and carried between here and a host.

A backup is an archive, a `.sha256` file and a manifest (ARCHIVE.json), renamed into place
in that order: an archive without its manifest is an unfinished backup, never a complete one.

The manifest carries an HMAC made with the project's backup key (config/secrets/backup_key,
made on first use, kept on this machine): a restore refuses a backup the key did not sign,
whose two checksum records disagree, or whose archive holds an entry it will not write.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

from ..errors import TaskError
from ..execution.files import create_secret, unfinished, writer_mark
from ..execution.runner import Runner
from ..plans import archives
from ..source.stack import BACKUP_KEY, ROOT, SECRETS_DIR

KEY_FILE = ROOT / SECRETS_DIR / BACKUP_KEY


def signing_key(r: Runner) -> bytes:
    """The backup key, made (0600) the first time a backup needs one."""
    if r.do(f"create {KEY_FILE} (mode 0600, generated key) unless it exists",
            create_secret, KEY_FILE, secrets.token_hex(32) + "\n"):
        r.say(f"created {KEY_FILE.relative_to(ROOT)} (mode 0600): keep a copy with your backups, "
              "they cannot be restored without it")
    return verifying_key()


def verifying_key() -> bytes:
    try:
        key = KEY_FILE.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    if not key:
        raise TaskError(f"{KEY_FILE.relative_to(ROOT)} is missing: backups are signed with it and cannot be "
                        "restored without it; put back the copy you keep with your backups")
    return key.encode()


def backup_dir(r: Runner):
    """The backups folder, made if need be, without the files a killed task was writing."""
    r.mkdir(r.backups)
    listed = r.probe(["find", str(r.backups), "-maxdepth", "1", "-name", ".*.tmp"], anywhere=True).stdout.split()
    left = unfinished(name.rsplit("/", 1)[-1] for name in listed)
    if left:
        r.remove(*(r.backups / name for name in left))
        r.say(f"deleted {', '.join(left)}: left in {r.backups} by a task that was killed")
    return r.backups


def fresh_name(r: Runner, directory, subject: str, extension: str):
    """The archive name for SUBJECT now; a backup made in the same second already has that
    name, so wait for the next second rather than overwrite or fail."""
    for _ in range(3):
        final = directory / archives.archive_name(r.project, subject, archives.stamp(), extension)
        if not r.exists(final):
            return final
        time.sleep(1)
    raise TaskError(f"{final} exists already; try again")


def temporary_name(final):
    """Where an archive is written before it is complete: unique to this run, so that two
    runs never write, or clean up, each other's file; named after its writer, so that the
    file of a killed one is found (backup_dir)."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{writer_mark()}")


def sha256(r: Runner, path) -> str:
    result = r.probe(archives.sha256(str(path)), prints="sha256")
    if result.failed or not result.stdout.split():
        raise TaskError(f"could not checksum {path}: {result.stderr.strip()}")
    return result.stdout.split()[0]


def publish(r: Runner, tmp, final, **fields) -> None:
    """Sign the manifest (before anything moves: a missing key changes nothing), rename the
    finished archive into place, then write a sha256sum-compatible checksum file for people
    and scripts, then the manifest (the 'complete' mark)."""
    here = r.here()
    manifest_text = here.do(f"sign the manifest of {final.name}", _signed_manifest, here, fields)
    r.rename(tmp, final)
    r.write(final.with_name(final.name + ".sha256"), f"{fields['sha256']}  {final.name}\n")
    r.write(final.with_name(archives.manifest_path(final.name)), manifest_text)


def _signed_manifest(here: Runner, fields: dict) -> str:
    return archives.manifest(signing_key(here), **fields)


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
    if not archives.authentic(data, verifying_key()):
        raise TaskError(f"{manifest_file.name} is not signed with this project's backup key "
                        f"({KEY_FILE.relative_to(ROOT)}): refusing {archive_file.name}; nothing was changed")
    checksum_file = archive_file.with_name(archive_file.name + ".sha256")
    try:
        recorded = archives.checksum_line(checksum_file.read_text(encoding="utf-8"), archive_file.name)
    except FileNotFoundError:
        raise TaskError(f"{checksum_file.name} is missing: refusing {archive_file.name}; nothing was changed") from None
    if recorded != data["sha256"]:
        raise TaskError(f"{checksum_file.name} and {manifest_file.name} disagree on the SHA-256 of "
                        f"{archive_file.name}: refusing it; nothing was changed")
    return archive_file, data


def verify(r: Runner, archive_file, data: dict) -> None:
    """Check ARCHIVE_FILE's SHA-256 against its manifest where R runs, before anything else."""
    argv, stdin = archives.sha256_check(str(archive_file), data["sha256"])
    if r.probe(argv, stdin_text=stdin).failed:
        corrupt(archive_file, sha256(r, archive_file), data)
    r.report(f"verified {archive_file.name} (sha256 {data['sha256'][:12]}){r.target.on}")


def corrupt(archive_file, digest: str, data: dict):
    raise TaskError(f"{archive_file.name} is corrupt or truncated: its SHA-256 is {digest[:16]}..., "
                    f"the manifest says {data['sha256'][:16]}...; nothing was changed")


class _EntryCheck:
    """Every entry of an archive as the decompressor's output goes by (called with it);
    whether it was read to the end, and what was wrong with it in `problem`."""

    def __init__(self, name: str, owners: list, root_owner: str | None):
        self.name, self.owners, self.root_owner, self.problem = name, owners, root_owner, None

    def __call__(self, output) -> bool:
        try:
            archives.check_entries(archives.read_entries(output), self.owners, self.root_owner)
            while output.read(1 << 20):  # what follows the end-of-archive blocks
                pass
            return True
        except archives.Refused as exc:
            self.problem = f"refusing {self.name}: {exc}; nothing was changed"
        except Exception as exc:  # tarfile's own errors: not a tar stream, truncated
            self.problem = f"refusing {self.name}: it is not a readable tar archive ({exc}); nothing was changed"
        return False


def verify_volume_archive(r: Runner, archive_file: Path, data: dict, root_owner: str | None = None) -> None:
    """Read a volume archive here once, for both checks, before anything is written anywhere:
    its SHA-256 against the manifest's, and every entry (archives.check_entries, the
    volume's root owned by ROOT_OWNER when given) as the decompressor's output goes by. A
    refusal names the first offending entry; a wrong checksum wins over any complaint about
    the content (a flipped bit makes both)."""
    comp = archives.COMPRESSORS.get(data.get("compression", ""))
    if comp is None:
        raise TaskError(f"{archive_file.name} uses an unknown compression {data.get('compression')!r}")
    owners = data.get("owners")
    if not isinstance(owners, list):
        raise TaskError(f"the manifest of {archive_file.name} lists no owners: refusing it; nothing was changed")
    digest = hashlib.sha256()
    check = _EntryCheck(archive_file.name, owners, root_owner)
    status, unreadable = r.read_input(comp.decompress, archive_file, digest.update, check)
    if unreadable:
        raise TaskError(f"could not read {archive_file}: {unreadable}; nothing was changed")
    if digest.hexdigest() != data["sha256"]:
        corrupt(archive_file, digest.hexdigest(), data)
    if check.problem is None and status != 0:
        check.problem = (f"refusing {archive_file.name}: {comp.name} could not decompress it "
                         f"(exit status {status}); nothing was changed")
    if check.problem:
        raise TaskError(check.problem)
    r.report(f"verified {archive_file.name} (sha256 {data['sha256'][:12]}; every entry read)")


def verified_on_target(r: Runner, path):
    """The backup at PATH on this machine, its signature, checksums and (for a volume) every
    entry checked here, then put where R runs (a host verifies its copy again): (the archive
    on the target, its manifest)."""
    archive_file, data = read_local(path)
    if data["kind"] == "volume":
        verify_volume_archive(r.here(), archive_file, data)
    else:
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
