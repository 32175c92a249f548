"""The PostgreSQL major of each database (config/stack.toml) and the plans of `inv db.upgrade`."""
import pytest

from tasks.errors import StackError
from tasks.plans import pg_upgrade as plans
from tasks.source import render
from tasks.source.stack import Database, loads, with_database_major

BASE = '[project]\nname = "hello"\n\n[[databases]]\nname = "database1"\n'


class TestTheMajorInStackToml:
    def test_a_database_without_it_is_on_15_in_the_volume_it_always_had(self):
        db = loads(BASE).database("database1")
        assert (db.postgres, db.volume, db.data_mount) == (15, "database1_volume", "/var/lib/postgresql/data")

    @pytest.mark.parametrize("value, shown", [
        pytest.param("17", "'17'", id="a-string"),
        pytest.param(14, "14", id="too-old"),
        pytest.param(19, "19", id="unknown"),
        pytest.param(True, "True", id="a-boolean"),
        pytest.param(17.0, "17.0", id="a-float"),
    ])
    def test_anything_but_a_major_it_runs_is_refused_in_one_line(self, value, shown):
        text = BASE + f"postgres = {str(value).lower() if isinstance(value, bool) else repr(value).replace(chr(39), chr(34))}\n"
        with pytest.raises(StackError) as caught:
            loads(text)
        assert str(caught.value) == (f"config/stack.toml: [[databases]] database1 postgres {shown} is not valid: "
                                     f"a PostgreSQL major, one of 15, 16, 17, 18")

    @pytest.mark.parametrize("major, volume, mount", [
        pytest.param(17, "database1_pg17_volume", "/var/lib/postgresql/data", id="17"),
        # 18's image keeps its data in /var/lib/postgresql/18/docker and declares the volume above it.
        pytest.param(18, "database1_pg18_volume", "/var/lib/postgresql", id="18"),
    ])
    def test_the_compose_file_runs_each_major_on_its_own_volume_and_folder(self, major, volume, mount):
        stack = loads(BASE + f"postgres = {major}\n")
        text = render.rendered(stack)[render.COMPOSE_FILE]
        assert f"    image: ${{POSTGRES{major}_IMAGE:-postgres:{major}}}\n" in text
        assert f"      - {volume}:{mount}\n" in text
        assert f"\n  {volume}:\n" in text and "\n  database1_volume:\n" not in text

    def test_the_backup_image_gets_the_newest_majors_pg_dump(self):
        stack = loads(BASE + '\n[[databases]]\nname = "database2"\npostgres = 17\n\n'
                      '[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic"\n')
        text = render.rendered(stack)[render.COMPOSE_FILE]
        assert "\n        POSTGRES_IMAGE: ${POSTGRES17_IMAGE:-postgres:17}\n" in text

    def test_setting_the_major_keeps_comments_and_goes_back_to_no_key_at_15(self):
        text = BASE.replace('name = "database1"', 'name = "database1"  # the default one')
        upgraded = with_database_major(text, "database1", 17)
        assert 'name = "database1"  # the default one\npostgres = 17\n' in upgraded
        assert with_database_major(upgraded, "database1", 15) == text


DB = Database("database1", default=True)


class TestRefusals:
    @pytest.mark.parametrize("running, to, message", [
        pytest.param(15, "15", "database1 is already on PostgreSQL 15: nothing to do", id="same"),
        pytest.param(15, "14", "--to 14 is not a major the stack runs: one of 15, 16, 17, 18", id="unknown"),
        pytest.param(15, "seventeen", "--to 'seventeen' is not a PostgreSQL major: one of 15, 16, 17, 18", id="words"),
        pytest.param(17, "17", "database1 runs PostgreSQL 17 but config/stack.toml says 15: set postgres = 17 "
                               "for it and run `inv render` first", id="stack-behind-the-server"),
    ])
    def test_each_refusal_is_one_line(self, running, to, message):
        assert plans.refusal(DB, running, to) == message

    def test_a_downgrade_is_refused_and_names_the_rollback(self):
        assert plans.refusal(Database("database1", postgres=17), 17, "15") == (
            "database1 is on PostgreSQL 17: a downgrade to 15 is refused "
            "(`inv db.upgrade database1 --rollback` goes back to the volume an upgrade kept)")

    def test_a_newer_major_is_not_refused(self):
        assert plans.refusal(DB, 15, "17") is None


class TestPlans:
    def test_the_new_server_is_made_as_the_stack_makes_its_database_without_a_network(self):
        argv = plans.start_server("hello", DB, 17, "/srv/hello/shared/config")
        assert argv[:4] == ["bash", "-c", argv[2], "start"] and "POSTGRES17_IMAGE" in argv[2]
        assert argv[4:] == [
            "docker", "run", "--detach", "--name", "hello-database1-pg-upgrade", "--label", "hello.pg-upgrade=hello",
            "--pull", "never", "--network", "none",
            "--env", "POSTGRES_DB=database1", "--env", "POSTGRES_USER=database1",
            "--env", "POSTGRES_PASSWORD_FILE=/run/secrets/database1_password",
            "--mount", "type=bind,source=/srv/hello/shared/config/secrets/database1_password,"
                       "target=/run/secrets/database1_password,readonly",
            "--mount", "type=bind,source=/srv/hello/shared/config/db/app-role.sh,"
                       "target=/docker-entrypoint-initdb.d/app-role.sh,readonly",
            "--volume", "hello_database1_pg17_volume:/var/lib/postgresql/data"]

    def test_the_restore_connects_as_the_app_role_all_or_nothing(self):
        assert plans.restore(["docker", "exec", "-i", "x"], DB) == [
            "docker", "exec", "-i", "x", "pg_restore", "--username", "app", "--dbname", "database1",
            "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]

    def test_row_counts_that_differ_are_named(self):
        old = plans.counts("public.a 3\npublic.b 0\npublic.c 1\n")
        new = plans.counts("public.a 2\npublic.b 0\npublic.d 1\n")
        assert plans.differences(old, new) == ["public.a has 2 rows, not 3", "public.c is missing", "public.d is new"]
        assert plans.differences(old, old) == []

    def test_the_rollback_looks_at_older_majors_newest_first(self):
        assert plans.older_volumes(Database("database1", postgres=18)) == [
            (17, "database1_pg17_volume"), (16, "database1_pg16_volume"), (15, "database1_volume")]


class TestNoDatabaseStartsOnDataThatMoved:
    """Before the databases start (`inv up`, deploys): refused when the stack file and the
    place's volumes disagree about where a database's data is."""

    VOLUMES = "docker volume ls --quiet --filter 'name=^hello_database1_'"
    MARKER = ("docker compose --project-name hello run --rm --no-deps -T --entrypoint sh database1 -c "
              "'cat \"/var/lib/postgresql/data/.moved-to-postgres\" 2>/dev/null || true'")

    def refused(self, text, answers):
        from invoke import Result

        from tasks.errors import TaskError
        from tasks.execution.runner import Runner
        from tasks.execution.targets import LocalTarget
        from tasks.procedures.pg_upgrade import refuse_moved_data
        from tests.fakes import Recorder

        conn = Recorder({command: Result(stdout=out) for command, out in answers.items()})
        r = Runner(LocalTarget(conn, loads(text)))
        r.target.facts["engine"] = True
        try:
            refuse_moved_data(r)
        except TaskError as exc:
            return exc.message, conn.commands
        return None, conn.commands

    def test_a_stack_with_one_major_reads_nothing_more(self):
        assert self.refused(BASE, {self.VOLUMES: "hello_database1_volume\n"}) == (None, [self.VOLUMES])

    def test_an_upgrade_this_place_has_not_made_is_not_started_on_an_empty_volume(self):
        message, _ = self.refused(BASE + "postgres = 17\n", {self.VOLUMES: "hello_database1_volume\n"})
        assert message == ("error: database1's data is in hello_database1_volume (PostgreSQL 15) but config/stack.toml "
                           "says postgres = 17: move it with `inv db.upgrade database1 --to 17` (set postgres = 15 "
                           "for it until then); nothing was started")

    def test_the_old_volume_an_upgrade_left_is_not_served_again(self):
        volumes = "hello_database1_pg17_volume\nhello_database1_volume\n"
        message, _ = self.refused(BASE, {self.VOLUMES: volumes, self.MARKER: "17\n"})
        assert message == ("error: database1's data moved to PostgreSQL 17 (hello_database1_pg17_volume) but "
                           "config/stack.toml says postgres = 15: set postgres = 17 for it (or go back with "
                           "`inv db.upgrade database1 --rollback`); nothing was started")

    def test_after_a_rollback_the_old_volume_serves(self):
        volumes = "hello_database1_pg17_volume\nhello_database1_volume\n"
        assert self.refused(BASE, {self.VOLUMES: volumes, self.MARKER: ""}) == (None, [self.VOLUMES, self.MARKER])


def test_the_upgrades_dump_is_not_compressed_while_writes_are_held():
    from tasks.plans import archives

    assert archives.pg_dump(["x"], "database1", compressed=False) == [
        "x", "pg_dump", "--format", "custom", "--compress", "0", "--username", "database1", "--dbname", "database1"]
    assert "--compress" not in archives.pg_dump(["x"], "database1")
