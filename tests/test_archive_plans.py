"""Backup plans are data: the exact commands, names, manifests and retention choices."""
from datetime import datetime, timezone

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
    argv = archive.move_aside("hello_database1_volume", "postgres:15")
    assert argv[:-1] == ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--user", "0",
                         "--volume", "hello_database1_volume:/data", "--entrypoint", "sh", "postgres:15", "-c"]
    assert "if [ -e .restore-safety ]; then" in argv[-1]  # never over an interrupted restore's copy
    assert argv[-1].endswith("mkdir .restore-safety; "
                             "find . -mindepth 1 -maxdepth 1 ! -name .restore-safety -exec mv -t .restore-safety -- {} +")
    # As root from standard input: `docker cp` would give every entry to the helper's user.
    assert archive.extract_volume("/b/a.tar.gz", archive.GZIP, "hello_media_volume", "hello-djangoapp:latest") == [
        "bash", "-o", "pipefail", "-c",
        "gzip -dc /b/a.tar.gz | docker run --rm --interactive --pull never --network none --user 0 "
        "--volume hello_media_volume:/data --entrypoint tar hello-djangoapp:latest "
        "--extract --file - --directory /data --numeric-owner --same-owner --same-permissions",
    ]


def test_putting_the_safety_copy_back():
    argv = archive.put_safety_back("v", "img")
    assert argv[:-1] == ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--user", "0",
                         "--volume", "v:/data", "--entrypoint", "sh", "img", "-c"]
    assert argv[-1] == ("set -e; cd /data; test -d .restore-safety; "
                        "find . -mindepth 1 -maxdepth 1 ! -name .restore-safety -exec rm -rf -- {} +; "
                        "find .restore-safety -mindepth 1 -maxdepth 1 -exec mv -t . -- {} +; rmdir .restore-safety")


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
        text = archive.manifest(kind="volume", archive="a.tar.zst", sha256="0" * 64, created="2026-11-20T10:15:00+00:00")
        assert archive.read_manifest(text, "m")["format"] == archive.FORMAT

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
