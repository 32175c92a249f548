"""Dry runs, against a recording target that fails the test on any command: a dry run
prints what it would run, runs nothing here or on a host, and answers the reads the next
commands need with a placeholder named after what they read."""
import pytest
from invoke import Config, MockContext

from tasks.execution.runner import Runner, dry_run
from tasks.execution.targets import HostTarget, LocalTarget
from tasks.procedures import backup_files, backups, dumps, images
from tasks.procedures import volume_copy
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED

BACKUPS = '\n[backups]\nschedule = "15 3 * * *"\nrepository = "sftp:backup@vault.example.com:/srv/restic/hello"\n'
STACK = loads(COMMITTED + BACKUPS + """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
http_port = 8080
project = "hello-prod"
""")
COMPOSE = "docker compose --project-name hello"


class Refuses(Recorder):
    """A connection or context on which nothing may run."""

    def run(self, command, **kwargs):
        raise AssertionError(f"a dry run ran {command!r}")

    def get(self, remote, local):
        raise AssertionError(f"a dry run copied {remote!r}")

    put = get


def here():
    return Runner(LocalTarget(Refuses(), STACK), dry=True)


def on_host():
    return Runner(HostTarget(Refuses(), STACK.hosts["prod"], STACK, local_c=Refuses()), dry=True)


def dry_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[dry]")]


class TestTheRunner:
    def test_a_read_named_by_what_it_prints_answers_a_placeholder_of_that_name(self, capsys):
        r = here()
        assert r.probe(["docker", "ps", "--quiet"], prints="helper container").stdout == "HELPER_CONTAINER"
        assert r.run(["docker", "create", "x"], prints="database1 container").stdout == "DATABASE1_CONTAINER"
        assert r.probe(["docker", "ps", "--quiet"]).stdout == ""
        assert dry_lines(capsys) == ["[dry] docker create x"]  # a probe is silent

    def test_no_caller_tells_a_dry_run_what_to_answer(self):
        with pytest.raises(TypeError):
            here().probe(["docker", "info"], dry_answer="{}")

    def test_a_requirement_not_met_holds_a_dry_run_back_from_nothing(self):
        assert here().require(False, "never said") is False
        assert here().require(True, "never said") is True

    @pytest.mark.parametrize("flag, config, dry", [
        pytest.param(False, {}, False, id="neither"),
        pytest.param(True, {}, True, id="the task's --dry"),
        pytest.param(False, {"run": {"dry": True}}, True, id="Invoke's own inv --dry"),
    ])
    def test_a_task_runs_dry_with_its_flag_or_invokes_own(self, flag, config, dry):
        assert dry_run(MockContext(config=Config(overrides=config)), flag) is dry


class TestBackupsDry:
    def test_status_prints_the_command_and_tells_nothing(self, capsys):
        assert backups.status(here()) == (True, [], "local")
        assert dry_lines(capsys) == [f"[dry] {COMPOSE} run --rm -T backup status"]

    def test_ssh_key_prints_the_scan_and_stops_there(self, capsys):
        backups.ssh_key(here(), None, yes=False)
        assert dry_lines(capsys) == [f"[dry] {COMPOSE} run --rm -T backup keyscan"]

    def test_a_dump_is_signed_and_published_by_name_only(self, capsys, monkeypatch):
        # No key file is read or made in a dry run.
        monkeypatch.setattr(backup_files, "KEY_FILE", backup_files.ROOT / "no-such-dir" / "backup_key")
        db = STACK.databases[0]
        final = dumps.dump_database(on_host(), db)
        lines = dry_lines(capsys)
        assert final.name.startswith("hello-prod_database1_") and final.suffix == ".dump"
        assert any(f"pg_dump --format custom" in line for line in lines)
        published = [f"[dry] [prod:/srv/hello/current] would write {final}.sha256",
                     f"[dry] [prod:/srv/hello/current] would write {final}.json"]
        assert lines[lines.index(published[0]):][:2] == published


class TestVolumeBackupDry:
    def test_the_helper_container_is_a_placeholder_the_copy_names(self, capsys):
        info = volume_copy.resolve_volume(volume_copy.stack_volumes(here()), "media_volume")
        with volume_copy.helper_container(here(), info) as container:
            assert container == "HELPER_CONTAINER"


class TestShipImageDry:
    def test_it_says_what_it_would_send_and_sends_nothing(self, capsys):
        r = on_host()
        images.ship_image(r, r.here(), "hello-prod-djangoapp:abcdef012345")
        assert dry_lines(capsys)[-1] == (
            "[dry] would send the layers of hello-prod-djangoapp:abcdef012345 that prod lacks "
            "(docker save | gzip | ssh docker load)")
