"""Bytes through a command on this machine (execution/pipes.py), as the runner runs them:
real processes (sh, gzip), no engine."""
import hashlib
import io
import tarfile

import pytest

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import LocalTarget
from tasks.procedures import backup_files
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED

STACK = loads(COMMITTED)


def here(dry=False):
    return Runner(LocalTarget(Recorder(), STACK), dry)


class TestFeed:
    def test_the_command_reads_what_is_written(self, tmp_path):
        out = tmp_path / "out"
        here().feed(["sh", "-c", f"cat > {out}"], lambda stdin: stdin.write(b"\x00\xffbytes"), what="copying")
        assert out.read_bytes() == b"\x00\xffbytes"

    def test_a_command_that_stops_reading_fails_with_its_own_last_word(self):
        def write(stdin):
            for _ in range(1000):
                stdin.write(b"x" * 65536)

        with pytest.raises(TaskError) as failed:
            here().feed(["sh", "-c", "echo 'docker: no space left' >&2; exit 3"], write, what="sending the image to prod")
        assert str(failed.value.message) == "error: sending the image to prod failed: docker: no space left"

    def test_a_dry_run_prints_the_command_and_writes_nothing(self, capsys):
        here(dry=True).feed(["ssh", "prod", "docker", "load"], lambda stdin: pytest.fail("written"), what="x")
        assert capsys.readouterr().out == "[dry] ssh prod docker load\n"


def volume_archive(tmp_path, *members) -> tuple:
    archive = tmp_path / "hello_media_volume_20261121T000000Z.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"") if member.isfile() else None)
    archive.write_bytes(buffer.getvalue())
    data = {"kind": "volume", "compression": "gzip", "owners": ["0:0"],
            "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    return archive, data


def entry(name, mode=0o644, kind=tarfile.REGTYPE):
    member = tarfile.TarInfo(name)
    member.mode, member.type = mode, kind
    return member


class TestVerifyVolumeArchive:
    def test_a_sound_archive_is_read_to_the_end(self, tmp_path):
        archive, data = volume_archive(tmp_path, entry("./", 0o755, tarfile.DIRTYPE), entry("./a"))
        backup_files.verify_volume_archive(here(), archive, data)

    def test_a_setuid_entry_is_refused_by_name(self, tmp_path):
        archive, data = volume_archive(tmp_path, entry("./", 0o755, tarfile.DIRTYPE), entry("./a", 0o4755))
        with pytest.raises(TaskError, match=r"refusing hello_media_volume_\S+: entry './a' is setuid or setgid \(mode 4755\); nothing was changed"):
            backup_files.verify_volume_archive(here(), archive, data)

    def test_a_wrong_checksum_wins_over_any_complaint_about_the_content(self, tmp_path):
        archive, data = volume_archive(tmp_path, entry("./a", 0o4755))
        data["sha256"] = "0" * 64
        with pytest.raises(TaskError, match="is corrupt or truncated"):
            backup_files.verify_volume_archive(here(), archive, data)

    def test_not_a_tar_stream_is_refused(self, tmp_path):
        archive = tmp_path / "x.tar.gz"
        archive.write_bytes(b"not gzip at all")
        data = {"compression": "gzip", "owners": [], "sha256": hashlib.sha256(b"not gzip at all").hexdigest()}
        with pytest.raises(TaskError, match="refusing x.tar.gz: it is not a readable tar archive"):
            backup_files.verify_volume_archive(here(), archive, data)

    def test_an_unreadable_file_is_named(self, tmp_path):
        archive = tmp_path / "x.tar.gz"
        archive.mkdir()  # opens, then reading fails
        with pytest.raises(TaskError, match=f"could not read {archive}: .*nothing was changed"):
            backup_files.verify_volume_archive(here(), archive, {"compression": "gzip", "owners": [], "sha256": ""})
