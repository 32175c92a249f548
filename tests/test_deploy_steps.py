"""`inv deploy` and `inv rollback` as steps, against recording connections (the host, and
this machine for rsync): the exact order of what runs, and the one undo path."""
import shlex

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import compose
from tasks.plans import release as plans
from tasks.procedures import release
from tasks.source.stack import loads
from tests.fakes import Recorder

STACK = loads(open("config/stack.toml").read() + """
[hosts.prod]
address = "203.0.113.10"
user = "deploy"
directory = "/srv/hello"
project = "hello-prod"
""")
HOST = STACK.hosts["prod"]
NEW = "20261121T000000Z-abcdef012345"
OLD = "20261120T000000Z-0123456789ab"
COMPOSE = "docker compose --project-name hello-prod"
RUNNING = f"{COMPOSE} ps --services --status running"
HEALTH = shlex.join(["docker", "compose", "--project-name", "hello-prod", *compose.health_through_nginx()])


def bash(script):
    return f"bash -c {shlex.quote(script)}"


@pytest.fixture(autouse=True)
def fixed_release(monkeypatch):
    monkeypatch.setattr(release.archives, "stamp", lambda: NEW.split("-")[0])
    monkeypatch.setattr(release.plans, "code_digest", lambda root: NEW.split("-")[1])


def host(answers=None, dry=False):
    conn, here = Recorder({bash(plans.current_release("/srv/hello")): Result(f"releases/{OLD}\n"),
                           RUNNING: Result("djangoapp\nnginx\ndatabase1\n"), **(answers or {})}), Recorder()
    return Runner(HostTarget(conn, HOST, STACK, local_c=here), dry), conn, here


def steps_run(conn):
    """What ran on the host, without the probes for the engine and the running services."""
    return [c for c in conn.commands if "version" not in c and c != RUNNING]


def where(conn, command):
    return [cwd for cwd, c, _ in conn.calls if c == command]


def test_a_deploy_runs_its_steps_in_order_and_switches_last():
    r, conn, here = host()
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    host_commands = steps_run(conn)
    assert host_commands[:5] == [bash(plans.prepare_directories("/srv/hello")),
                                 host_commands[1], bash(plans.current_release("/srv/hello")),
                                 bash(plans.mark_served("/srv/hello")), bash(plans.unfinished_releases("/srv/hello"))]
    assert host_commands[1].startswith("bash -c 'test ! -e /srv/hello/.deploy-lock || exit 3; mkdir")
    assert here.commands[0].startswith("rsync --archive --delete") and f"--link-dest=/srv/hello/releases/{OLD}" in here.commands[0]
    steps = host_commands[5:]
    assert steps[0].startswith("bash -c 'set -e\ncd /srv/hello/shared\n")  # secrets of an earlier version moved
    assert steps[1].startswith("bash -c 'set -e\nmkdir -p -m 700 /srv/hello/shared/config")  # secrets
    assert steps[2].startswith("bash -c 'umask 077; t=/srv/hello/releases/" + NEW + "/.env.$$.tmp")
    assert steps[3:] == [
        f"{COMPOSE} build djangoapp",
        f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 30 database1",
        f"{COMPOSE} exec -T database1 psql --username database1 --dbname database1 --quiet --no-psqlrc",
        f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 30",
        f"{COMPOSE} exec -T djangoapp python manage.py migrate --noinput --database default",
        f"{COMPOSE} exec -T djangoapp python manage.py collectstatic --noinput --verbosity 1",
        HEALTH,
        bash(plans.switch("/srv/hello", NEW)),
        bash(plans.list_releases("/srv/hello")),
        bash(plans.release_lock("/srv/hello")),
    ]
    assert set(where(conn, f"{COMPOSE} build djangoapp")) == {f"/srv/hello/releases/{NEW}"}
    env_written = next(stdin for _, c, stdin in conn.calls if "/.env.$$.tmp" in c)
    assert f"APP_IMAGE=hello-prod-djangoapp:{NEW.split('-')[1]}" in env_written


def test_a_release_that_fails_its_health_check_gives_way_to_the_previous_one():
    r, conn, _ = host({HEALTH: Result(exited=1)})
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=0)
    assert err.value.message.startswith(f"error: deploy of {NEW} to prod failed while waiting for /healthz (")
    assert err.value.message.endswith(f"rolled back to {OLD}, which is serving again")
    after = [call for call in conn.calls[conn.commands.index(HEALTH):] if call[1] not in (HEALTH, RUNNING)]
    assert [c for _, c, _ in after] == [
        f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 0",
        bash(plans.remove_trees([f"/srv/hello/releases/{NEW}"])),
        bash(plans.release_lock("/srv/hello")),
    ]
    assert after[-3][0] == f"/srv/hello/releases/{OLD}"  # the previous release started again
    assert bash(plans.switch("/srv/hello", NEW)) not in conn.commands


def test_a_failure_before_anything_started_switches_and_starts_nothing():
    build = f"{COMPOSE} build djangoapp"
    r, conn, _ = host({build: Result(exited=2)})
    with pytest.raises(TaskError, match=r"failed while building the image \(building on prod failed "
                                        r"\(exit status 2\)\); nothing was switched"):
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert conn.commands[-2:] == [bash(plans.remove_trees([f"/srv/hello/releases/{NEW}"])),
                                  bash(plans.release_lock("/srv/hello"))]
    assert not [c for c in conn.commands if " up " in c]


def test_ctrl_c_while_migrating_takes_the_same_way_back():
    migrate = f"{COMPOSE} exec -T djangoapp python manage.py migrate --noinput --database default"
    r, conn, _ = host({migrate: KeyboardInterrupt()})
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert err.value.code == 130
    assert "failed while migrating (interrupted); rolled back to" in err.value.message
    assert conn.commands[-1] == bash(plans.release_lock("/srv/hello"))
    assert where(conn, f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 30")[-1] == \
        f"/srv/hello/releases/{OLD}"


def test_a_held_lock_stops_the_deploy_and_names_who_holds_it():
    r, conn, here = host({bash(plans.lock_holder("/srv/hello")): Result("ann@desk pid 7 since 2026-11-21\n")})
    original = conn.run

    def run(command, **kwargs):
        result = original(command, **kwargs)
        if "mkdir /srv/hello/.deploy-lock" in command:
            return Result(exited=plans.LOCK_HELD, command=command)
        return result

    conn.run = run
    with pytest.raises(TaskError, match=r"another deploy holds the lock on prod: ann@desk pid 7 since 2026-11-21; "
                                        r"if it is dead, release it with `inv deploy.unlock --host prod`"):
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert here.calls == []
    assert bash(plans.release_lock("/srv/hello")) not in conn.commands  # not ours to release


def test_old_releases_beyond_keep_are_removed_but_never_the_live_ones():
    names = [f"2026111{i}T000000Z-0123456789ab" for i in range(6)] + [OLD, NEW]
    r, conn, _ = host({bash(plans.list_releases("/srv/hello")): Result("\n".join(names + ["junk"]) + "\n")})
    release.deploy(r, ship_image=False, keep=2, timeout=30)
    removed = [c for c in conn.commands if c.startswith("bash -c 'rm -rf -- ")]
    assert removed == [bash(plans.remove_trees([f"/srv/hello/releases/{n}" for n in names[:6]]))]


def test_a_dry_deploy_runs_nothing_anywhere(capsys):
    r, conn, here = host(dry=True)
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert conn.calls == [] and here.calls == []
    out = capsys.readouterr().out
    assert "[dry] rsync --archive --delete" in out
    assert f"[dry] [prod:/srv/hello/releases/{NEW}] {COMPOSE} build djangoapp" in out


def test_rollback_starts_the_previous_release_before_switching_to_it():
    r, conn, _ = host({bash(plans.current_release("/srv/hello")): Result(f"releases/{NEW}\n"),
                       bash(plans.list_releases("/srv/hello")): Result(f"{OLD}\n{NEW}\n")})
    release.rollback(r, timeout=30)
    tail = steps_run(conn)[-4:]
    assert tail == [f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 30", HEALTH,
                    bash(plans.switch("/srv/hello", OLD)), bash(plans.release_lock("/srv/hello"))]
    assert where(conn, HEALTH) == [f"/srv/hello/releases/{OLD}"]


def test_a_lock_that_cannot_be_written_is_not_called_held():
    r, conn, here = host()
    original = conn.run

    def run(command, **kwargs):
        if "mkdir /srv/hello/.deploy-lock" in command:
            conn.calls.append((None, command, None))
            return Result(exited=1, stderr="bash: /srv/hello/.deploy-lock/owner: No space left on device\n")
        return original(command, **kwargs)

    conn.run = run
    with pytest.raises(TaskError, match=r"taking the deploy lock on prod failed: .*No space left on device$"):
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert here.calls == []  # nothing shipped
    assert bash(plans.release_lock("/srv/hello")) not in conn.commands


def test_code_the_host_runs_already_makes_no_release():
    r, conn, here = host({bash(plans.current_release("/srv/hello")): Result(f"releases/{OLD.split('-')[0]}-{NEW.split('-')[1]}\n")})
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert here.calls == []  # nothing shipped
    assert not [c for c in conn.commands if "compose" in c and "version" not in c]
    assert conn.commands[-1] == bash(plans.release_lock("/srv/hello"))


def test_what_failed_deploys_left_is_removed_under_the_lock():
    left = "20261119T000000Z-00000000000a"
    r, conn, _ = host({bash(plans.unfinished_releases("/srv/hello")): Result(f"{left}\nnot-a-release\n")})
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    removed = conn.commands.index(bash(plans.remove_trees([f"/srv/hello/releases/{left}"])))
    assert conn.commands.index(bash(plans.unfinished_releases("/srv/hello"))) < removed
    assert removed < conn.commands.index(f"{COMPOSE} build djangoapp")


def test_a_host_lost_mid_deploy_gives_one_line_saying_what_is_left():
    """The connection breaks during the build and cannot be made again: the undo cannot run
    there, and the one line says what serves and how to release the lock."""
    gone = ConnectionResetError("Connection reset by peer")
    r, conn, _ = host({f"{COMPOSE} build djangoapp": gone,
                       bash(plans.remove_trees([f"/srv/hello/releases/{NEW}"])): gone,
                       bash(plans.release_lock("/srv/hello")): gone})
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert err.value.message == (
        f"error: deploy of {NEW} to prod failed while building the image (lost the connection to prod "
        f"(Connection reset by peer)); could not undo on prod (lost the connection to prod (Connection reset by peer)): "
        f"`current` still points at {OLD}, untouched; the deploy lock on prod is still held: once prod answers, "
        "release it with `inv deploy.unlock --host prod`")
    assert bash(plans.switch("/srv/hello", NEW)) not in conn.commands
