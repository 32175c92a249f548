"""`inv db.upgrade database1 --to 17` and `--rollback`, here and on a test host, with rows in
the database and a writer inserting throughout: every row it was told went in is on the new
major, reads are served while writes are held, and the write outage is measured.

PostgreSQL 17 is POSTGRES17_IMAGE (in CI, trixie's postgresql-17: .ci/standins/postgres built with SUITE=trixie PG_MAJOR=17).
"""
import http.client
import os
import threading
import time

import pytest

from .conftest import BASE_IMAGES, Stack, free_port
from .test_deploy import PORT, Remote

pytestmark = pytest.mark.e2e
POSTGRES17 = os.environ.get("POSTGRES17_IMAGE", "postgres:17")
ROWS = 200
INSERT = "INSERT INTO notes_note (text, created) VALUES ('written during the upgrade', now())"


class Place:
    """The stack here (Stack) or on a host (Remote): how the test reaches its database."""

    def __init__(self, s, host_flag=(), docker=None):
        self.s, self.flag, self.docker = s, list(host_flag), docker or s.docker

    def inv(self, *args, check=True):
        return self.s.inv(args[0], *self.flag, *args[1:], check=check, env={"POSTGRES17_IMAGE": POSTGRES17})

    def sql(self, sql, role="database1", check=True):
        container = f"{self.s.project}-database1-1"
        return self.docker("exec", container, "psql", "-U", role, "-d", "database1", "-v", "ON_ERROR_STOP=1",
                           "-Atc", sql, check=check)

    def upgrade_watched(self, *args):
        """`inv db.upgrade ARGS` while a writer inserts a row as the app every 0.2 s and a
        reader asks /notes/: what each saw, by the time it saw it."""
        done, seen = threading.Event(), {"writes": [], "reads": []}

        def writer():
            while not done.is_set():
                ok = self.sql(INSERT, role="app", check=False).returncode == 0
                seen["writes"].append((time.monotonic(), ok))
                time.sleep(0.2)

        def reader():
            while not done.is_set():
                try:
                    status = self.s.get("/notes/")[0]
                except (OSError, http.client.HTTPException):  # a read that failed is seen, not the end of reading
                    status = 0
                seen["reads"].append((time.monotonic(), status))
                time.sleep(0.2)

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for thread in threads:
            thread.start()
        try:
            result = self.inv("db.upgrade", "database1", *args)
        finally:
            done.set()
            for thread in threads:
                thread.join()
        return result, seen


def refused_for(writes):
    """The longest run of refused writes, in seconds (from the last write that went in before
    it to the first one after)."""
    longest, last_ok, refusing = 0.0, None, False
    for when, ok in writes:
        if ok:
            if refusing and last_ok is not None:
                longest = max(longest, when - last_ok)
            last_ok, refusing = when, False
        else:
            refusing = True
    return longest


def check_upgrade(place):
    before = int(place.sql("SELECT count(*) FROM notes_note").stdout)
    refused = place.inv("db.upgrade", "database1", "--to", "14", check=False)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
        "error: --to 14 is not a major the stack runs: one of 15, 16, 17, 18"]

    result, seen = place.upgrade_watched("--to", "17")
    print(result.stdout.splitlines()[-1])
    assert "database1 upgraded to PostgreSQL 17" in result.stdout
    assert place.sql("SHOW server_version_num").stdout.startswith("17")
    went_in = sum(ok for _, ok in seen["writes"])
    refused_writes = [when for when, ok in seen["writes"] if not ok]
    # Every write that went in, before the hold or after the switch, is there; some were refused.
    assert int(place.sql("SELECT count(*) FROM notes_note").stdout) == before + went_in
    assert refused_writes and went_in
    # Reads were answered while the writes were held (the copy), not only before and after.
    held = [status for when, status in seen["reads"] if refused_writes[0] <= when <= refused_writes[-1]]
    assert 200 in held, seen["reads"]
    print(f"writes refused for {refused_for(seen['writes']):.1f}s as the writer saw it; "
          f"reads during the hold: {held.count(200)} of {len(held)} answered 200")
    # The app role restored it: it owns every table.
    assert place.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").stdout.strip() == "app"
    # Going down is refused in one line; the old volume is kept for the rollback.
    down = place.inv("db.upgrade", "database1", "--to", "15", check=False)
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert "a downgrade to 15 is refused" in down.stderr
    return before


def check_rollback(place, before):
    back = place.inv("db.upgrade", "database1", "--rollback", "--yes")
    assert "database1 is back on PostgreSQL 15" in back.stdout
    assert place.sql("SHOW server_version_num").stdout.startswith("15")
    # The old volume as it was at the hold: the rows before the upgrade and what went in before it.
    assert int(place.sql("SELECT count(*) FROM notes_note").stdout) >= before
    place.sql(INSERT, role="app")  # writable again


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from testkit.projectcopy import copy_project

    s = Stack("hello-e2e-pgup", free_port(0), root=copy_project(tmp_path_factory.mktemp("project")))
    s.purge()
    s.inv("up")
    Place(s).inv("manage", "--", "shell", "-c",
                            f"from notes.models import Note; Note.objects.bulk_create(Note(text=f'n{{i}}') for i in range({ROWS}))")
    yield Place(s)
    s.purge()


def test_upgrade_to_17_here_and_back(local):
    before = check_upgrade(local)
    assert 'postgres = 17' in (local.s.root / "config/stack.toml").read_text()
    assert "POSTGRES17_IMAGE:-postgres:17" in (local.s.root / "docker-compose.yml").read_text()
    assert {"database1_volume", "database1_pg17_volume"} <= local.s.volumes()
    # A stack file without the upgrade does not serve the old volume again.
    stack_toml = local.s.root / "config/stack.toml"
    upgraded = stack_toml.read_text()
    stack_toml.write_text(upgraded.replace("postgres = 17\n", ""))
    local.inv("render")
    stale = local.inv("up", check=False)
    assert stale.returncode == 1 and stale.stderr.strip().splitlines()[-1:] == [
        "error: database1's data moved to PostgreSQL 17 (hello-e2e-pgup_database1_pg17_volume) but config/stack.toml "
        "says postgres = 15: set postgres = 17 for it (or go back with `inv db.upgrade database1 --rollback`); "
        "nothing was started"]
    stack_toml.write_text(upgraded)
    local.inv("render")
    check_rollback(local, before)
    assert 'postgres = 17' not in (local.s.root / "config/stack.toml").read_text()


def test_upgrade_on_a_host_and_back(servers, tmp_path_factory):
    from testkit.projectcopy import copy_project

    server = servers("pgup", images=(*BASE_IMAGES, POSTGRES17))
    root = copy_project(tmp_path_factory.mktemp("project"))
    remote = Remote(root, server, "pg", "hello-e2e-pgup")
    with open(root / "config/stack.toml", "a") as handle:
        handle.write("\n" + server.hosts_entry("pg", str(remote.remote_dir), http_port=PORT, project=remote.project))
    remote.deploy("--ship-image")
    place = Place(remote, ("--host", "pg"), docker=server.docker)
    place.inv("manage", "--", "shell", "-c",
              f"from notes.models import Note; Note.objects.bulk_create(Note(text=f'n{{i}}') for i in range({ROWS}))")
    before = check_upgrade(place)
    assert 'postgres = 17' in (remote.remote_dir / "current/config/stack.toml").read_text()
    check_rollback(place, before)
