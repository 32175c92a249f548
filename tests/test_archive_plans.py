"""Backup plans are data: the exact commands, names, manifests and retention choices."""
import io
import os
import re
import subprocess
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tasks.plans import archives as archive


def test_archive_name_and_stamp():
    when = archive.stamp(datetime(2026, 11, 20, 10, 15, 0, tzinfo=timezone.utc))
    assert when == "20261120T101500Z"
    name = archive.archive_name("hello", "database1_volume", when, ".tar.zst")
    assert name == "hello_database1_volume_20261120T101500Z.tar.zst"
    assert archive.NAME_PATTERN.match(name).group("subject") == "database1_volume"


def test_backup_streams_the_volume_with_docker_cp_from_a_helper_that_never_starts():
    assert archive.create_helper("hello-djangoapp:latest", "hello_media_volume", "hello") == [
        "docker", "create", "--pull", "never", "--network", "none",
        "--name", "hello_media_volume-backup-helper", "--label", "hello.backup-helper=hello",
        "--volume", "hello_media_volume:/data:ro", "hello-djangoapp:latest",
    ]
    assert archive.archive_volume("c0ffee", archive.ZSTD, "/b/.x.tmp") == [
        "bash", "-o", "pipefail", "-c",
        "umask 077; docker cp c0ffee:/data/. - | zstd -T0 -3 --progress -c > /b/.x.tmp",
    ]


def test_a_helper_goes_with_the_anonymous_volumes_its_image_declares():
    assert archive.remove_container("hello_database1_volume-backup-helper") == [
        "docker", "rm", "--force", "--volumes", "hello_database1_volume-backup-helper"]
    assert archive.remove_container("c0ffee", "decade") == ["docker", "rm", "--force", "--volumes", "c0ffee", "decade"]
    assert archive.postgres_version("postgres:15")[:3] == ["docker", "run", "--rm"]


def test_restore_moves_the_content_aside_then_unpacks_with_owners():
    argv = archive.move_aside("hello_database1_volume", "postgres:15", "hello")
    # Labelled as the project's helper: one a Ctrl-C left never started is found by it.
    assert argv[:-1] == ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--user", "0",
                         "--label", "hello.backup-helper=hello", "--log-driver", "none", "--volume", "hello_database1_volume:/data", "--entrypoint", "sh", "postgres:15", "-c"]
    # What an interrupted restore left is settled first, never moved aside with the content.
    assert argv[-1].startswith(f"set -e; cd /data; {archive.SETTLE}; rm -rf -- .restore-new; mkdir .restore-safety")
    assert argv[-1].endswith("rm -rf -- .restore-new; mkdir .restore-safety; chown --reference=. .restore-safety; chmod --reference=. .restore-safety; "
                             "find . -mindepth 1 -maxdepth 1 ! -name .restore-safety -exec mv -t .restore-safety -- {} +; "
                             "mkdir -m 700 .restore-new")
    # As root from standard input (`docker cp` would give every entry to the helper's user),
    # into a folder beside the safety copy, then moved up; the folder stays until verified.
    assert archive.extract_volume("/b/a.tar.gz", archive.GZIP, "hello_media_volume", "hello-djangoapp:latest",
                                  "hello") == [
        "bash", "-o", "pipefail", "-c",
        "gzip -dc /b/a.tar.gz | docker run --rm --interactive --pull never --network none --user 0 "
        "--label hello.backup-helper=hello --log-driver none --volume hello_media_volume:/data --entrypoint sh hello-djangoapp:latest -c "
        "'set -e; tar --extract --file - --directory /data/.restore-new --numeric-owner --same-owner "
        "--same-permissions; cd /data; find .restore-new -mindepth 1 -maxdepth 1 -exec mv -t . -- {} +; "
        "chown --reference=.restore-new .; chmod --reference=.restore-new .'",
    ]


FAKE_DOCKER = """#!/bin/sh
# Stands in for `docker run`: copies the bind-mounted FIFO, or its standard input, to OUT;
# FAIL=N: exits N without opening anything (125: the engine could not make the container).
src=-
for arg; do case "$arg" in type=bind,source=*) src=${arg#type=bind,source=}; src=${src%%,*};; esac; done
if [ -n "${FAIL:-}" ] && [ "$src" != - ]; then exit "$FAIL"; fi
if [ "$src" = - ]; then cat > "$OUT"; else cat "$src" > "$OUT"; fi
"""


def fifo_restore(tmp_path, monkeypatch, **env):
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "docker"
    fake.write_text(FAKE_DOCKER)
    fake.chmod(0o755)
    (tmp_path / "data").write_bytes(b"x" * 300_000)
    subprocess.run(["gzip", "-k", str(tmp_path / "data")], check=True)
    fifo = str(tmp_path / ".a.tar.gz.1234.stream")
    argv = archive.extract_volume(str(tmp_path / "data.gz"), archive.GZIP, "v", "img", "p", fifo=fifo)
    result = subprocess.run(argv, env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                                       "OUT": str(tmp_path / "out"), **env}, timeout=20)
    return result, fifo


def test_the_unpacked_archive_reaches_the_helper_through_a_fifo_removed_afterwards(tmp_path, monkeypatch):
    result, fifo = fifo_restore(tmp_path, monkeypatch)
    assert result.returncode == 0
    assert (tmp_path / "out").read_bytes() == b"x" * 300_000
    assert not Path(fifo).exists()


def test_a_helper_that_never_opens_the_fifo_fails_the_restore_without_hanging(tmp_path, monkeypatch):
    result, fifo = fifo_restore(tmp_path, monkeypatch, FAIL="7")
    assert result.returncode == 7  # the writer, blocked on the FIFO, was killed: no hang (timeout 20 s)
    assert not (tmp_path / "out").exists()
    assert not Path(fifo).exists()


def test_an_engine_that_cannot_mount_the_fifo_gets_the_stream_on_standard_input(tmp_path, monkeypatch):
    result, fifo = fifo_restore(tmp_path, monkeypatch, FAIL="125")
    assert result.returncode == 0
    assert (tmp_path / "out").read_bytes() == b"x" * 300_000
    assert not Path(fifo).exists()


@pytest.mark.parametrize("facts, usable", [
    ("vm name=seccomp,profile=default\nvm\n", True),
    ("docker-desktop name=seccomp,profile=default\nmy-mac\n", False),   # another machine's files
    ("vm name=seccomp,profile=default name=selinux\nvm\n", False),      # may not read ours
    ("vm name=userns\nvm\n", False),
    ("", False),                                                       # no engine answered
])
def test_a_fifo_is_used_only_when_the_engine_runs_here_and_may_read_it(facts, usable):
    assert archive.fifo_usable(facts) is usable


def test_a_fifo_path_the_mount_option_would_split_is_refused():
    with pytest.raises(ValueError):
        archive.extract_volume("/b/a.tar.gz", archive.GZIP, "v", "img", "p", fifo="/b/x,readonly=false")


def test_the_postgres_major_is_read_from_the_images_environment_when_it_has_one():
    assert archive.pg_major_of("PATH=/usr/bin\nPG_MAJOR=15\nPG_VERSION=15.8-1\n") == "15"
    assert archive.pg_major_of("PATH=/usr/bin\n") is None  # then `postgres --version` is run
    assert archive.pg_major_of("PG_MAJOR=15; rm -rf /\n") is None


def test_putting_the_safety_copy_back():
    argv = archive.put_safety_back("v", "img", "p")
    assert argv[:-1] == ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--user", "0",
                         "--label", "hello.backup-helper=p", "--log-driver", "none", "--volume", "v:/data", "--entrypoint", "sh", "img", "-c"]
    assert argv[-1] == f"set -e; cd /data; {archive.SETTLE}" == archive.settle_restore("v", "img", "p")[-1]
    assert archive.SETTLE.endswith(
        "find .restore-safety -mindepth 1 -maxdepth 1 -exec mv -t . -- {} +; "
        "chown --reference=.restore-safety .; chmod --reference=.restore-safety .; rmdir .restore-safety; fi")
    # Verified: the copy is renamed before it goes, so that a killed deletion is finished;
    # run again after an interrupt, it goes on from where that one stopped.
    assert archive.drop_safety("v", "img", "p")[-1] == (
        "set -e; cd /data; if [ -d .restore-safety ]; then mv -T -- .restore-safety .restore-discard; fi; "
        "rm -rf -- .restore-new .restore-discard")


OLD = {"a": "old a", "d/x": "old x"}
NEW = {"n": "new n", "nd/y": "new y"}


def _volume(root: Path, layout: dict) -> None:
    for path, text in layout.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            (root / path).mkdir(exist_ok=True)
        else:
            (root / path).write_text(text)


def _content(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout, expected", [
    ({"a": "old a", "d/x": "old x"}, OLD),
    ({"a": "old a", ".restore-safety/d/x": "old x"}, OLD),                       # moving aside
    ({".restore-safety/a": "old a", ".restore-safety/d/x": "old x", ".restore-new": None}, OLD),  # moved aside
    ({".restore-safety/a": "old a", ".restore-safety/d/x": "old x", ".restore-new/nd/y": "new y"}, OLD),  # unpacking
    ({".restore-safety/a": "old a", ".restore-safety/d/x": "old x", "n": "new n",
      ".restore-new/nd/y": "new y"}, OLD),                                         # moving the archive up
    ({".restore-safety/a": "old a", ".restore-safety/d/x": "old x", "n": "new n", "nd/y": "new y",
      ".restore-new": None}, OLD),                                                 # unpacked, not verified
    ({".restore-safety/d/x": "old x", "a": "old a"}, OLD),                       # putting back (moving back)
    ({".restore-discard/a": "old a", "n": "new n", "nd/y": "new y", ".restore-new": None}, NEW),  # verified
    ({".restore-discard/d/x": "old x", "n": "new n", "nd/y": "new y"}, NEW),     # verified, being deleted
], ids=["untouched", "moving-aside", "moved-aside", "unpacking", "moving-up", "unpacked", "putting-back",
        "verified", "deleting-the-copy"])
def test_what_a_killed_restore_left_is_settled_to_one_content_or_the_other(tmp_path, layout, expected):
    """Each state a restore killed at some step leaves in its volume, run through the real
    script: the content from before the restore comes back unless the restore had been
    verified, and nothing of the restore's own names is left. Run twice: a settling that
    is killed too is settled by the next one."""
    _volume(tmp_path, layout)
    os.chmod(tmp_path, 0o750)
    if (tmp_path / ".restore-safety").exists():
        os.chmod(tmp_path / ".restore-safety", 0o711)  # the root's mode from before the restore
    script = archive.settle_restore("v", "img", "p")[-1].replace("cd /data;", f"cd {tmp_path};")
    for _ in range(2):
        subprocess.run(["sh", "-c", script], check=True, capture_output=True)
        assert _content(tmp_path) == expected
        assert not [n for n in archive.RESERVED if (tmp_path / n).exists()]
    assert oct(tmp_path.stat().st_mode & 0o777) == ("0o711" if ".restore-safety" in str(layout) else "0o750")


def test_paths_with_spaces_are_quoted():
    argv = archive.pipeline(["cat"], output="/my backups/x.tmp", input="/in put")
    assert argv[-1] == "umask 077; cat < '/in put' > '/my backups/x.tmp'"


@pytest.mark.parametrize("output, major", [("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "15"),
                                           ("postgres (PostgreSQL) 16.4", "16"), ("nonsense", None)])
def test_major_version(output, major):
    assert archive.major_version(output) == major


def test_swap_sql_blocks_new_connections_and_ends_open_ones():
    sql = archive.swap_databases_sql("database1", "database1__load_x", "database1__old_x")
    assert sql.split("; ") == [
        'ALTER DATABASE "database1" WITH ALLOW_CONNECTIONS false',
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'database1' AND pid <> pg_backend_pid()",
        'ALTER DATABASE "database1" RENAME TO "database1__old_x"',
        'ALTER DATABASE "database1__load_x" RENAME TO "database1"',
        'ALTER DATABASE "database1" WITH ALLOW_CONNECTIONS true',
    ]


class TestManifest:
    def test_round_trip(self):
        text = archive.manifest(b"k", kind="volume", archive="a.tar.zst", sha256="0" * 64, created="2026-11-20T10:15:00+00:00")
        data = archive.read_manifest(text, "m")
        assert data["format"] == archive.FORMAT and archive.authentic(data, b"k")

    def test_a_changed_field_or_another_key_is_not_authentic(self):
        data = archive.read_manifest(archive.manifest(b"k", kind="volume", archive="a", sha256="0" * 64, created="t"), "m")
        assert not archive.authentic(data, b"other key")
        assert not archive.authentic({**data, "sha256": "1" * 64}, b"k")
        assert not archive.authentic({**data, "owners": ["0:0"]}, b"k")
        assert not archive.authentic({k: v for k, v in data.items() if k != "hmac"}, b"k")

    def test_the_checksum_file_must_name_the_archive_and_a_digest(self):
        digest = "a" * 64
        assert archive.checksum_line(f"{digest}  x.tar.zst\n", "x.tar.zst") == digest
        assert archive.checksum_line("deadbeef  x.tar.zst\n", "x.tar.zst") is None
        assert archive.checksum_line(f"{digest}  y.tar.zst\n", "x.tar.zst") is None
        assert archive.checksum_line(f"{digest}  x.tar.zst\n{digest}  y\n", "x.tar.zst") is None

    @pytest.mark.parametrize("text, message", [("{", "not a valid manifest"), ("{}", "missing archive"),
                                               ('{"format": 9, "kind": "volume", "archive": "a", "sha256": "x", "created": "t"}', "format 9")])
    def test_bad_manifests(self, text, message):
        with pytest.raises(ValueError, match=message):
            archive.read_manifest(text, "m.json")


class TestPrune:
    def backups(self, subject, *days, kind="volume"):
        return [{"kind": kind, "project": "hello", "subject": subject, "created": f"2026-11-{d:02d}T00:00:00+00:00",
                 "archive": f"{subject}-{d}"} for d in days]

    def test_keeps_the_newest_n_of_each_subject(self):
        doomed = archive.to_prune(self.backups("media_volume", 1, 3, 2) + self.backups("database1", 1, 2, 3, kind="dump"), keep=2)
        assert [m["archive"] for m in doomed] == ["media_volume-1", "database1-1"]

    def test_never_deletes_the_only_backup(self):
        assert archive.to_prune(self.backups("database1_volume", 5), keep=0) == []
        assert [m["archive"] for m in archive.to_prune(self.backups("v", 1, 2), keep=0)] == ["v-1"]


class TestEntries:
    """What a forged archive may hold, each refused with its entry named; and what a real
    volume holds, accepted."""

    @staticmethod
    def member(name, kind=tarfile.REGTYPE, mode=0o644, uid=999, gid=999, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, gid, link
        return info

    def check(self, *members, owners=("999:999", "0:0")):
        return archive.check_entries([self.member(".", tarfile.DIRTYPE, 0o700), *members], owners)

    def test_a_volume_of_files_directories_and_inner_symlinks_passes(self):
        assert self.check(self.member("./base", tarfile.DIRTYPE, 0o700), self.member("./base/1"),
                          self.member("./PG_VERSION", mode=0o600), self.member("./latest", tarfile.SYMTYPE, link="base/1"),
                          self.member("./base/up", tarfile.SYMTYPE, link="../PG_VERSION"),
                          self.member("./root-owned", uid=0, gid=0)) == 7

    @pytest.mark.parametrize("entry, message", [
        (("./bin/sh", tarfile.REGTYPE, 0o4755), "entry './bin/sh' is setuid or setgid (mode 4755)"),
        (("./g", tarfile.REGTYPE, 0o2755), "is setuid or setgid"),
        (("./null", tarfile.CHRTYPE, 0o666), "entry './null' is a device node"),
        (("./disk", tarfile.BLKTYPE, 0o660), "is a device node"),
        (("./fifo", tarfile.FIFOTYPE, 0o644), "entry './fifo' is a FIFO"),
        (("./hard", tarfile.LNKTYPE, 0o644, "PG_VERSION"), "is a hard link"),
        (("/etc/cron.d/x", tarfile.REGTYPE, 0o644), "has an absolute path"),
        (("./../escape", tarfile.REGTYPE, 0o644), "climbs out of the volume"),
        (("./.restore-safety/PG_VERSION", tarfile.REGTYPE, 0o600), "reserves for itself (.restore-safety)"),
        (("./.restore-new", tarfile.DIRTYPE, 0o700), "reserves for itself (.restore-new)"),
        (("./etcpasswd-link", tarfile.SYMTYPE, 0o777, "/etc/passwd"), "is a symlink to '/etc/passwd', outside the volume"),
        (("./up", tarfile.SYMTYPE, 0o777, "../../etc"), "outside the volume"),
    ])
    def test_forged_entries_are_refused_by_name(self, entry, message):
        name, kind, mode, *link = entry
        with pytest.raises(archive.Refused, match=re.escape(message)):
            self.check(self.member("./PG_VERSION"), self.member(name, kind, mode, link=link[0] if link else ""))

    def test_an_owner_the_manifest_does_not_list_is_refused(self):
        with pytest.raises(archive.Refused, match=r"entry './x' belongs to 1000:1000, an owner the manifest does not list"):
            self.check(self.member("./x", uid=1000, gid=1000))

    def test_nothing_is_written_through_a_symlink(self):
        # `a -> .` is harmless itself; `a/.restore-safety/...` written through it is not.
        with pytest.raises(archive.Refused, match=r"lies below the symlink 'a'"):
            self.check(self.member("./a", tarfile.SYMTYPE, link="."), self.member("./a/PG_VERSION"))

    def test_a_chain_of_symlinks_that_climbs_out_is_refused(self):
        # Each link looks inside on its own: x -> . and a -> x/.. (the parent of the root).
        with pytest.raises(archive.Refused, match=r"entry 'a' is a symlink to 'x/..', outside the volume"):
            self.check(self.member("./x", tarfile.SYMTYPE, link="."), self.member("./a", tarfile.SYMTYPE, link="x/.."))
        with pytest.raises(archive.Refused, match="outside the volume"):
            self.check(self.member("./x", tarfile.SYMTYPE, link="y"), self.member("./y", tarfile.SYMTYPE, link="x"))

    def test_a_real_stream_is_read_entry_by_entry(self, tmp_path):
        (tmp_path / "f").write_text("x")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(tmp_path / "f", arcname="./f")
        buffer.seek(0)
        owner = f"{(tmp_path / 'f').stat().st_uid}:{(tmp_path / 'f').stat().st_gid}"
        assert archive.check_entries(archive.read_entries(buffer), [owner]) == 1

    @pytest.mark.parametrize("root, message", [
        (("./", tarfile.DIRTYPE, 0o755, 10001), None),
        (("./", tarfile.DIRTYPE, 0o770, 10001), None),
        (("./", tarfile.DIRTYPE, 0o755, 0), "the volume's root belongs to 0:0, not to 10001:10001"),
        (("./", tarfile.DIRTYPE, 0o500, 10001), "the volume's root has mode 500"),
        (("./", tarfile.DIRTYPE, 0o777, 10001), "the volume's root has mode 777"),
        (("./", tarfile.DIRTYPE, 0o2775, 10001), "the volume's root has mode 2775"),
        (("./", tarfile.REGTYPE, 0o755, 10001), "the volume's root belongs to"),
        (None, "it holds no entry for the volume's root"),
    ], ids=["755", "770", "owned-by-root", "not-writable", "world-writable", "setgid", "a-file", "absent"])
    def test_the_root_of_a_volume_whose_user_is_known_is_that_user_s(self, root, message):
        members = [self.member(*root[:3], uid=root[3], gid=root[3])] if root else []
        members.append(self.member("./uploads/a.png", uid=10001, gid=10001))
        if message is None:
            assert archive.check_entries(members, ["10001:10001"], root_owner="10001:10001") == 2
        else:
            with pytest.raises(archive.Refused, match=re.escape(message)):
                archive.check_entries(members, ["10001:10001", "0:0"], root_owner="10001:10001")

DROP_LOAD = ["ALTER DATABASE \"d__load_2\" WITH ALLOW_CONNECTIONS false; SELECT count(pg_terminate_backend(pid)) "
             "FROM pg_stat_activity WHERE datname = 'd__load_2'", "DROP DATABASE IF EXISTS \"d__load_2\""]


@pytest.mark.parametrize("found, expected", [
    (["d"], []),
    (["d", "d__load_2"], [("d__load_2", "dropping d__load_2: a load that was never swapped in", DROP_LOAD)]),
    (["d", "d__old_1"], [("d__old_1", "dropping d__old_1: the data d had before a load that was swapped in",
                          archive.drop_database_sql("d__old_1"))]),
    # d missing: its newest retired copy is its data, renamed back; never dropped.
    (["d__old_1", "d__old_2", "d__load_2"], [
        ("d__old_2", "renaming d__old_2 back to d: it holds d's data (a load stopped between its renames)",
         ['ALTER DATABASE "d__old_2" RENAME TO "d"; ALTER DATABASE "d" WITH ALLOW_CONNECTIONS true']),
        ("d__old_1", "dropping d__old_1: the data d had before a load that was swapped in",
         archive.drop_database_sql("d__old_1")),
        ("d__load_2", "dropping d__load_2: a load that was never swapped in", DROP_LOAD)]),
    (["d__load_2"], []),  # d missing, nothing to put back: the copy may be all there is
], ids=["nothing", "a-load-never-swapped-in", "a-retired-copy", "the-live-data-retired", "only-a-load"])
def test_what_a_killed_load_left_is_settled_without_dropping_the_live_data(found, expected):
    assert archive.settle_loads("d", found) == expected


def test_the_databases_of_a_load_are_listed_by_prefix_not_by_pattern():
    # LIKE would take `_` for any character: d1__load_x must not match d1x_load_...
    assert archive.loads_of_sql("d1") == ("SELECT datname FROM pg_database WHERE datname = 'd1' OR "
                                          "starts_with(datname, 'd1__load_') OR starts_with(datname, 'd1__old_') "
                                          "ORDER BY datname")
