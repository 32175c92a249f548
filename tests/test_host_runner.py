"""The host side of the runner, against a recording connection: each command exactly, the
directory it runs in, what it reads on standard input, and that a dry run runs nothing."""
import shlex

import pytest
from invoke import Result

from tasks.execution import targets
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import compose
from tasks.procedures import backup_files
from tests.fakes import Recorder
from tests.stacks import PROD_8080, stack

STACK = stack(PROD_8080)
HOST = STACK.hosts["prod"]
ENGINE = ["docker version --format '{{.Server.Version}}'", "docker compose version --short"]
COMPOSE = "docker compose --project-name hello-prod"


def host_runner(answers=None, dry=False, release=None):
    conn = Recorder(answers)
    return Runner(HostTarget(conn, HOST, STACK, release=release, local_c=Recorder()), dry), conn


def bash(script):
    return f"bash -c {shlex.quote(script)}"


class TestWhereThingsRun:
    def test_compose_runs_in_the_live_release_under_the_hosts_project(self):
        r, conn = host_runner()
        r.compose(compose.ps())
        # The engine is asked outside any release: before a first deploy there is none.
        assert conn.calls == [(None, ENGINE[0], None), (None, ENGINE[1], None),
                              ("/srv/hello/current", f"{COMPOSE} ps", None)]

    def test_the_engine_is_checked_once_per_target(self):
        r, conn = host_runner()
        r.compose(compose.ps())
        r.in_release("20261121T000000Z-abcdef012345").compose(compose.ps())
        assert conn.commands.count(ENGINE[0]) == 1
        assert conn.calls[-1] == ("/srv/hello/releases/20261121T000000Z-abcdef012345", f"{COMPOSE} ps", None)

    def test_file_operations_run_outside_any_release_with_absolute_paths(self):
        r, conn = host_runner({bash("stat -c %s '/srv/hello/shared/backups/a b'"): Result("1234\n")})
        r.write("/srv/hello/shared/x.env", "A=1\n", mode=0o600)
        r.mkdir("/srv/hello/shared/backups")
        r.rename("/srv/hello/a.tmp", "/srv/hello/a")
        r.remove("/srv/hello/a", "/srv/hello/b c")
        assert r.size("/srv/hello/shared/backups/a b") == 1234
        assert conn.calls == [
            (None, bash("umask 077; t=/srv/hello/shared/x.env.$$.tmp; cat > \"$t\" && chmod 600 \"$t\" && "
                        "mv -f \"$t\" /srv/hello/shared/x.env"), "A=1\n"),
            (None, bash("mkdir -p -m 700 /srv/hello/shared/backups"), None),
            (None, bash("mv -f /srv/hello/a.tmp /srv/hello/a"), None),
            (None, bash("rm -f -- /srv/hello/a '/srv/hello/b c'"), None),
            (None, bash("stat -c %s '/srv/hello/shared/backups/a b'"), None),
        ]

    def test_a_failed_file_operation_is_one_line_naming_the_host(self):
        script = "mkdir -p -m 700 /srv/hello/shared"
        r, _ = host_runner({bash(script): Result(stderr="mkdir: Permission denied\n", exited=1)})
        with pytest.raises(Exception) as err:
            r.mkdir("/srv/hello/shared")
        assert err.value.message == "error: creating /srv/hello/shared failed on prod: mkdir: Permission denied"


class TestDryRun:
    def test_nothing_runs_and_every_line_says_where(self, capsys):
        r, conn = host_runner(dry=True)
        assert r.compose(compose.ps()).ok and r.probe(["docker", "ps"]).stdout == ""
        r.write("/srv/hello/shared/x.env", "secret\n")
        r.target.ensure_secrets(r)
        assert r.exists("/srv/hello/current") is False
        assert conn.calls == []
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"[dry] [prod:/srv/hello/current] {COMPOSE} ps"
        assert out[1] == "[dry] [prod:/srv/hello/current] would write /srv/hello/shared/x.env"
        assert "secret" not in "\n".join(out)

    def test_every_service_is_taken_as_running(self):
        r, _ = host_runner(dry=True)
        assert r.running_services() == {"djangoapp", "nginx", "front", "database1"}


class TestWhatAHostDecides:
    def test_secrets_are_made_on_the_host_in_one_round_trip_and_linked_into_the_release(self):
        r, conn = host_runner(release="R")
        r.target.ensure_secrets(r)
        [(_, moving, _), (cwd, command, stdin), (_, mounted, _)] = conn.calls
        # First the secrets of an earlier version move out of its env files, there.
        assert shlex.split(moving)[2].startswith("set -e\ncd /srv/hello/shared\n")
        script = shlex.split(command)[2]
        assert cwd is None and stdin is None
        assert script.startswith("set -e\nmkdir -p -m 700 /srv/hello/shared/config\n"
                                 "( if test -e /srv/hello/shared/config/django.env; then cat > /dev/null; exit 0; fi;")
        assert "ln -sfn /srv/hello/shared/config/django.env /srv/hello/releases/R/config/django.env" in script
        # The secrets folder is linked whole (Compose mounts it into containers).
        assert "ln -sfn /srv/hello/shared/config/secrets /srv/hello/releases/R/config/secrets" in script
        assert "( if test -e /srv/hello/shared/config/secrets/database1_password;" in script
        # The templates travel as here-documents holding the token; the values are made there.
        assert script.count("<<'HELLO_ENV_TEMPLATE_END'\n") == 3 and "\n@@GENERATED_SECRET@@\nHELLO_ENV_TEMPLATE_END" in script
        # Then the databases' init script goes where the containers mount it from (STACK_CONFIG_DIR).
        assert mounted == bash("set -e; mkdir -p -m 755 /srv/hello/shared/config/db; "
                               "cmp -s /srv/hello/releases/R/config/db/app-role.sh /srv/hello/shared/config/db/app-role.sh "
                               "&& exit 0; cp /srv/hello/releases/R/config/db/app-role.sh "
                               "/srv/hello/shared/config/db/app-role.sh.tmp && chmod 644 "
                               "/srv/hello/shared/config/db/app-role.sh.tmp && mv -f "
                               "/srv/hello/shared/config/db/app-role.sh.tmp /srv/hello/shared/config/db/app-role.sh")

    def test_health_is_probed_through_nginx_from_the_app_container(self):
        r, conn = host_runner()
        description, check = r.target.health_check(r)
        assert description == "/healthz through Nginx on prod" and check() is None
        assert conn.calls[-1] == ("/srv/hello/current",
                                  shlex.join(r.compose_argv(compose.health_through_nginx())), None)

    def test_a_backup_made_there_is_copied_here_manifest_last(self, tmp_path, monkeypatch):
        from pathlib import PurePosixPath

        monkeypatch.setattr(targets, "LOCAL_BACKUPS", tmp_path)
        r, conn = host_runner()
        made = r.target.bring_home(r, PurePosixPath("/srv/hello/shared/backups/hello_media_volume_x.tar.zst"))
        assert made == tmp_path / "hello_media_volume_x.tar.zst"
        assert [t[1] for t in conn.transfers] == ["/srv/hello/shared/backups/hello_media_volume_x.tar.zst",
                                                  "/srv/hello/shared/backups/hello_media_volume_x.tar.zst.sha256",
                                                  "/srv/hello/shared/backups/hello_media_volume_x.tar.zst.json"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["hello_media_volume_x.tar.zst",
                                                              "hello_media_volume_x.tar.zst.json",
                                                              "hello_media_volume_x.tar.zst.sha256"]
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in tmp_path.iterdir())

    def test_a_restore_sends_the_backup_then_verifies_it_there(self, tmp_path, monkeypatch):
        import hashlib
        import io
        import tarfile

        from tasks.plans import archives

        key_file = tmp_path / "backup_key"
        key_file.write_text("k" * 64 + "\n")
        monkeypatch.setattr(backup_files, "KEY_FILE", key_file)
        archive = tmp_path / "hello_media_volume_20261121T000000Z.tar.gz"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.addfile(tarfile.TarInfo("./"), None)
        archive.write_bytes(buffer.getvalue())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        (tmp_path / (archive.name + ".sha256")).write_text(f"{digest}  {archive.name}\n")
        (tmp_path / (archive.name + ".json")).write_text(archives.manifest(
            b"k" * 64, kind="volume", archive=archive.name, sha256=digest, compression="gzip", owners=["0:0"],
            created="t"))
        r, conn = host_runner()
        there, data = backup_files.verified_on_target(r, archive)
        assert str(there) == f"/srv/hello/shared/backups/{archive.name}"
        assert [(kind, remote) for kind, _, remote in conn.transfers] == [
            ("put", f"/srv/hello/shared/backups/.{archive.name}.tmp"),
            ("put", f"/srv/hello/shared/backups/.{archive.name}.sha256.tmp"),
            ("put", f"/srv/hello/shared/backups/.{archive.name}.json.tmp")]
        assert conn.calls[-1] == ("/srv/hello/current", "sha256sum --check --status --strict",
                                  f"{digest}  /srv/hello/shared/backups/{archive.name}\n")


def test_the_live_release_keeps_the_links_its_deploy_made():
    r, conn = host_runner()  # `inv up --host`, `inv build --host`
    r.target.ensure_secrets(r)
    assert conn.calls == []


@pytest.mark.live_state
def test_a_task_for_one_host_never_falls_back_to_here():
    from invoke import MockContext

    from tasks import deploy
    from tasks.errors import TaskError

    with pytest.raises(TaskError, match=r"name a host \(--host NAME\) or a cluster \(--cluster NAME\)"):
        deploy.deploy(MockContext(run={}), "")
    with pytest.raises(TaskError, match="one of the two"):
        deploy.deploy(MockContext(run={}), "prod", cluster="prod")
