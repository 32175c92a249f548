"""`inv deploy` and `inv rollback` as steps, against recording connections (the host, and
this machine for rsync and git): the exact order of what runs, and the one undo path. The
host's engine is tests.fakes.Engine: it keeps the app's containers, so that the rollout
(a new app container beside the old, Nginx reloaded, the old one drained) can be followed."""
import json
import os
import re
import shlex
import socket
import subprocess

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import compose, diagnosis, ledger
from tasks.plans import release as plans
from tasks.plans import rollout as rollout_plans
from tasks.plans import server_front as front_plans
from tasks.procedures import release, rollout
from tasks.source.stack import loads
from tests.fakes import Engine, Recorder
from tests.stacks import COMMITTED

STACK = loads(COMMITTED + """
[hosts.prod]
address = "203.0.113.10"
user = "deploy"
directory = "/srv/hello"
project = "hello-prod"
""")
HOST = STACK.hosts["prod"]
NEW = "20261121T000000Z-abcdef012345"
OLD = "20261120T000000Z-0123456789ab"
NEW_DIR = f"/srv/hello/releases/{NEW}"
OLD_DIR = f"/srv/hello/releases/{OLD}"
COMPOSE = "docker compose --project-name hello-prod"
RUNNING = shlex.join(compose.running_services("hello-prod"))
HEALTH = shlex.join(["docker", "compose", "--project-name", "hello-prod", *compose.health_through_nginx()])
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# The app containers: the one serving before the deploy, the deploy's, and a rollback's.
APP1, APP2, APP3 = (f"hello-prod-djangoapp-{n}" for n in (1, 2, 3))

APP_IDS = ("docker ps --all --quiet --filter label=com.docker.compose.project=hello-prod "
           "--filter label=com.docker.compose.service=djangoapp --filter label=com.docker.compose.oneoff=False")
INSPECT = ("docker inspect --format "
           "'{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}'")
HEALTH_TESTS = shlex.join(rollout_plans.health_tests([]))
UP_TO_DATE = f"{COMPOSE} --dry-run up --detach --no-deps --no-build djangoapp"
SCALE_TO_2 = f"{COMPOSE} up --detach --no-deps --no-recreate --no-build --scale djangoapp=2 djangoapp"
SWITCH_NGINX = shlex.join(["docker", "compose", "--project-name", "hello-prod", "exec", "-T", "nginx", "sh", "-c",
                           rollout_plans.switch_script("/etc/nginx/hello/nginx.conf")])
FRONT_UNCHANGED = f"{COMPOSE} exec -T front sh -c 'cat /etc/nginx/hello/front.conf /etc/hello/certs/site.conf 2>/dev/null | sha256sum | cmp -s - /run/front.sha256'"
IMAGE_ID = "docker image inspect --format '{{.Id}}' hello-prod-djangoapp:abcdef012345"
MIGRATIONS = (f"{COMPOSE} exec -T database1 psql --username app --dbname database1 --no-psqlrc --tuples-only "
              "--no-align --command 'SELECT app || '\"'\"'.'\"'\"' || name FROM django_migrations ORDER BY id'")
# A release about to serve again is checked first for the front this version's rollout needs.
OLD_HAS_FRONT = "bash -c 'test -e /srv/hello/releases/20261120T000000Z-0123456789ab/config/nginx/front.conf'"
# The server's shared front, when there is one, and which front a release was made for.
SHARED_FRONT = shlex.join(front_plans.inspect())


def made_for(release_dir):
    return f"bash -c {shlex.quote(front_plans.release_front(f'{release_dir}/docker-compose.yml'))}"
COLLECTSTATIC = f"{COMPOSE} run --rm --no-deps -T djangoapp python manage.py collectstatic --noinput --verbosity 0"
# The release phase of a deploy: the migrations, then the static files, in one one-off container.
RELEASE = f"{COMPOSE} " + shlex.join(rollout_plans.release_phase([["migrate", "--noinput", "--database", "default"],
                                                                  ["collectstatic", "--noinput", "--verbosity", "0"]]))


def bash(script):
    return f"bash -c {shlex.quote(script)}"


# Before anything changes: whose the directory is, who holds the front's port; then the claim.
OWNER = bash(plans.directory_owner("/srv/hello"))
PORTS = bash(plans.port_holders([8000]))
CLAIM = bash(plans.claim_directory("/srv/hello", "hello-prod"))

def written(path, mode="644"):
    """How the runner writes PATH on the host (the text comes on standard input)."""
    return bash(f'umask 077; t={path}.$$.tmp; cat > "$t" && chmod {mode} "$t" && mv -f "$t" {path}')


def release_phase(timeout=30):
    """The databases, their app role, the app's secrets, then migrations and static files
    in a one-off container of the new image."""
    return ["docker volume ls --quiet --filter 'name=^hello-prod_database1_'",
            f"{COMPOSE} up --detach --remove-orphans --no-build --no-deps database1",
            shlex.join(rollout_plans.service_containers("hello-prod")),
            f"{HEALTH_TESTS} database1-id",
            f"{COMPOSE} exec -T database1 psql --username database1 --dbname database1 --quiet --no-psqlrc",
            f"{COMPOSE} run --rm --no-deps -T secrets-init",
            RELEASE]


def moving_traffic(release, old, new, timeout=30):
    """Traffic moves from the app container OLD to NEW, started beside it from RELEASE."""
    return [APP_IDS, f"{INSPECT} {old}", UP_TO_DATE, SCALE_TO_2, APP_IDS, f"{INSPECT} {old} {new}", f"{HEALTH_TESTS} {new}",
            bash(rollout_plans.install_files(f"/srv/hello/releases/{release}/config/nginx",
                                             "/srv/hello/shared/config/nginx")),
            f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout {timeout} --no-deps nginx front",
            SWITCH_NGINX, FRONT_UNCHANGED, f"docker stop {old}", f"docker rm --force {old}"]


def securing_site(release, timeout=30):
    """The front takes the release's configuration and ports before traffic moves."""
    return [bash(rollout_plans.install_files(f"/srv/hello/releases/{release}/config/nginx",
                                             "/srv/hello/shared/config/nginx")),
            SHARED_FRONT,
            f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout {timeout} --no-deps nginx front",
            FRONT_UNCHANGED]


@pytest.fixture(autouse=True)
def fixed_release(monkeypatch):
    monkeypatch.setattr(release.archives, "stamp", lambda: NEW.split("-")[0])
    monkeypatch.setattr(release.plans, "code_digest", lambda root, app: NEW.split("-")[1])
    monkeypatch.setattr(release.getpass, "getuser", lambda: "ann")
    monkeypatch.setattr(release.socket, "gethostname", lambda: "desk")
    monkeypatch.setattr(rollout, "SETTLE", 0)


def host(answers=None, dry=False, **engine):
    """The host (OLD is live, its app container APP1 serves) and this machine (a clean checkout)."""
    engine.setdefault("made_in", OLD_DIR)
    conn = Engine({bash(plans.current_release("/srv/hello")): Result(f"releases/{OLD}\n"),
                   RUNNING: Result("djangoapp\nnginx\nfront\ndatabase1\n"), **(answers or {})}, **engine)
    here = Recorder({"git rev-parse HEAD": Result(f"{COMMIT}\n")})
    return Runner(HostTarget(conn, HOST, STACK, local_c=here), dry), conn, here


def steps_run(conn):
    """What ran on the host, without the probes for the engine and the running services."""
    return [c for c in conn.commands if "version" not in c and c != RUNNING]


def where(conn, command):
    return [cwd for cwd, c, _ in conn.calls if c == command]


def stdin_of(conn, command):
    return [stdin for _, c, stdin in conn.calls if c == command]


def test_a_deploy_runs_its_steps_in_order_and_switches_last():
    r, conn, here = host({IMAGE_ID: Result("sha256:5eed\n"),
                          MIGRATIONS: Result("contenttypes.0001_initial\nauth.0001_initial\n")})
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    host_commands = steps_run(conn)
    assert host_commands[:3] == [OWNER, PORTS, bash(plans.prepare_directories("/srv/hello"))]
    assert host_commands[3] == CLAIM
    host_commands = host_commands[3:]
    assert host_commands[:5] == [CLAIM, host_commands[1], bash(plans.current_release("/srv/hello")),
                                 bash(plans.mark_served("/srv/hello")), bash(plans.unfinished_releases("/srv/hello"))]
    assert host_commands[1].startswith("bash -c 'mkdir -p -m 700 /srv/hello; i=0; while ! mkdir /srv/hello/.deploy-lock 2>/dev/null")
    assert here.commands[0].startswith("rsync --archive --delete") and f"--link-dest={OLD_DIR}" in here.commands[0]
    # The ledger's commit is read here, where the code was shipped from.
    assert here.commands[1:] == ["git rev-parse HEAD", "git status --porcelain"]
    steps = host_commands[5:]
    assert steps[0].startswith("bash -c 'set -e\ncd /srv/hello/shared\n")  # secrets of an earlier version moved
    assert steps[1].startswith("bash -c 'set -e\nmkdir -p -m 700 /srv/hello/shared/config")  # secrets
    assert steps[2:] == [
        bash(plans.install_mounted(NEW_DIR, "/srv/hello/shared/config")),
        # the files that depend on the host's site, rendered for it
        written(f"{NEW_DIR}/docker-compose.yml"),
        written(f"{NEW_DIR}/config/nginx/front.conf"),
        written(f"{NEW_DIR}/.env"),
        # building the image
        f"{COMPOSE} build djangoapp",
        # the release phase, while APP1 serves the previous release
        *release_phase(),
        # recording the release
        IMAGE_ID,
        MIGRATIONS,
        written(f"{NEW_DIR}/release.json"),
        # securing the site (no domains: the front's configuration and ports only)
        *securing_site(NEW),
        # moving traffic: APP2 beside APP1, Nginx pointed at it, APP1 drained
        *moving_traffic(NEW, APP1, APP2),
        HEALTH,
        bash(plans.switch("/srv/hello", NEW)),
        bash(plans.list_releases("/srv/hello")),
        bash(plans.release_lock("/srv/hello")),
    ]
    # Compose runs in the new release; the Nginx files go to shared/config, whose path no release changes.
    compose_calls = [c for c in steps if c.startswith((COMPOSE, "docker ")) and c != SHARED_FRONT]
    assert {cwd for c in compose_calls for cwd in where(conn, c)} == {NEW_DIR}
    assert set(where(conn, steps[steps.index(f"{HEALTH_TESTS} {APP2}") + 1])) == {None}
    env_written = stdin_of(conn, written(f"{NEW_DIR}/.env"))[0]
    assert env_written.splitlines()[1:5] == ["COMPOSE_PROJECT_NAME=hello-prod", "HTTP_PORT=8000",
                                             f"APP_IMAGE=hello-prod-djangoapp:{NEW.split('-')[1]}",
                                             "STACK_CONFIG_DIR=/srv/hello/shared/config"]
    entry = json.loads(stdin_of(conn, written(f"{NEW_DIR}/release.json"))[0])
    deployed_at = entry.pop("deployed_at")
    assert entry == {"release": NEW, "commit": COMMIT, "image": "sha256:5eed", "deployed_by": "ann@desk",
                     "migrations": {"database1": ["contenttypes.0001_initial", "auth.0001_initial"]}}
    assert deployed_at.startswith("20") and deployed_at.endswith("+00:00")
    assert stdin_of(conn, SWITCH_NGINX) == [f"set $djangoapp http://{APP2}:8000;\n"]
    assert conn.app == {APP2: "running healthy"}


def test_a_tree_with_uncommitted_changes_is_recorded_as_such():
    r, conn, here = host()
    here.answers["git status --porcelain"] = Result(" M tasks/deploy.py\n")
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    entry = json.loads(stdin_of(conn, written(f"{NEW_DIR}/release.json"))[0])
    assert entry["commit"] == f"{COMMIT}+changes"
    assert entry["migrations"] == {"database1": []}


def test_a_release_that_fails_its_health_check_gives_way_to_the_previous_one():
    r, conn, _ = host({HEALTH: Result(exited=1)})
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=0)
    assert err.value.message == (
        f"error: deploy of {NEW} to prod failed while waiting for /healthz (/healthz through Nginx on prod did not "
        f"answer 200 within 0s (last: no 200 yet); see `inv logs --host prod`); rolled back to {OLD}, which is "
        "serving again")
    after = [call for call in conn.calls[conn.commands.index(HEALTH):] if call[1] not in (HEALTH, RUNNING)]
    # The previous release serves again the way the new one came in: its static manifest,
    # then its app container APP3 beside the new release's APP2, which drains.
    assert [c for _, c, _ in after] == [
        made_for(OLD_DIR), OLD_HAS_FRONT, COLLECTSTATIC,
        *moving_traffic(OLD, APP2, APP3, timeout=0),
        bash(plans.remove_trees([NEW_DIR])),
        bash(plans.release_lock("/srv/hello")),
    ]
    assert after[2][0] == OLD_DIR and after[-4][0] == OLD_DIR  # the previous release's compose file
    assert stdin_of(conn, SWITCH_NGINX) == [f"set $djangoapp http://{APP2}:8000;\n",
                                            f"set $djangoapp http://{APP3}:8000;\n"]
    assert conn.app == {APP3: "running healthy"}
    assert bash(plans.switch("/srv/hello", NEW)) not in conn.commands


def test_a_new_app_container_that_never_gets_healthy_is_removed_and_the_old_one_keeps_serving(capsys):
    logs = "docker logs --tail 30 hello-prod-djangoapp-2"
    r, conn, _ = host({logs: Result("booting\nImportError: no module named nope\n")}, new="running unhealthy")
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=0)
    assert err.value.message == (
        f"error: deploy of {NEW} to prod failed while moving traffic (the new app container {APP2} did not become "
        f"healthy within 0s (last: {APP2} is unhealthy); it was removed and {APP1} still serves); rolled back to {OLD}, which is "
        "serving again")
    moved = steps_run(conn)[steps_run(conn).index(SCALE_TO_2):]
    assert moved == [
        SCALE_TO_2, APP_IDS, f"{INSPECT} {APP1} {APP2}", f"{HEALTH_TESTS} {APP2}",
        # What its health URL answers (nothing here), the engine's health record, its log: printed before it goes.
        shlex.join(diagnosis.health_answer(APP2, diagnosis.HEALTH_URL)),
        f"docker inspect --format '{{{{json .State.Health}}}}' {APP2}", logs, f"docker rm --force {APP2}",
        # The previous release: APP1 runs its code already, so Nginx is pointed back at it, and nothing drains.
        made_for(OLD_DIR), OLD_HAS_FRONT, COLLECTSTATIC, APP_IDS, f"{INSPECT} {APP1}", UP_TO_DATE,
        bash(rollout_plans.install_files(f"{OLD_DIR}/config/nginx", "/srv/hello/shared/config/nginx")),
        f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 0 --no-deps nginx front",
        SWITCH_NGINX, FRONT_UNCHANGED,
        bash(plans.remove_trees([NEW_DIR])),
        bash(plans.release_lock("/srv/hello")),
    ]
    assert stdin_of(conn, SWITCH_NGINX) == [f"set $djangoapp http://{APP1}:8000;\n"]
    assert conn.app == {APP1: "running healthy"}
    assert f"  {APP2}: ImportError: no module named nope" in capsys.readouterr().out


def test_a_failure_before_anything_started_switches_and_starts_nothing():
    build = f"{COMPOSE} build djangoapp"
    r, conn, _ = host({build: Result(exited=2)})
    with pytest.raises(TaskError, match=r"failed while building the image \(building on prod failed "
                                        r"\(exit status 2\)\); nothing was switched"):
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert conn.commands[-2:] == [bash(plans.remove_trees([f"/srv/hello/releases/{NEW}"])),
                                  bash(plans.release_lock("/srv/hello"))]
    assert not [c for c in conn.commands if " up " in c]


def test_ctrl_c_while_migrating_leaves_the_previous_release_serving():
    """The release phase runs in a one-off container while the previous release serves:
    traffic never moved, so the way back only deletes the new release."""
    migrate = RELEASE
    r, conn, _ = host({migrate: KeyboardInterrupt()})
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert err.value.code == 130
    assert err.value.message == (f"error: deploy of {NEW} to prod failed while running the release phase "
                                 "(interrupted); nothing was switched")
    assert steps_run(conn)[steps_run(conn).index(migrate):] == [
        migrate, bash(plans.remove_trees([NEW_DIR])), bash(plans.release_lock("/srv/hello"))]
    assert OLD_DIR not in [cwd for cwd, _, _ in conn.calls]
    assert conn.app == {APP1: "running healthy"}


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


def test_unlock_is_refused_while_the_deploy_holding_the_lock_runs_here():
    # This test's own process plays the deploy: it runs on this machine.
    holder = f"ann@{socket.gethostname()} pid {os.getpid()} since 2026-11-21T10:00:00+00:00"
    r, conn, _ = host({bash(plans.lock_holder("/srv/hello")): Result(holder + "\n")})
    with pytest.raises(TaskError, match=re.escape(f"held by a deploy that still runs on this machine ({holder}): "
                                                  f"wait for it to end, or stop it (kill {os.getpid()})")):
        release.unlock(r, force=True)
    assert bash(plans.release_lock("/srv/hello")) not in conn.commands


def test_unlock_releases_the_lock_of_a_deploy_that_died_here():
    dead = subprocess.Popen(["true"])
    dead.wait()
    holder = f"ann@{socket.gethostname()} pid {dead.pid} since 2026-11-21T10:00:00+00:00"
    r, conn, _ = host({bash(plans.lock_holder("/srv/hello")): Result(holder + "\n")})
    release.unlock(r)
    assert conn.commands[-1] == bash(plans.release_lock("/srv/hello"))


def test_unlock_releases_a_lock_held_from_another_machine_only_with_force():
    holder = "bob@elsewhere.invalid pid 7 since 2026-11-21T10:00:00+00:00"
    r, conn, _ = host({bash(plans.lock_holder("/srv/hello")): Result(holder + "\n")})
    with pytest.raises(TaskError, match=re.escape("release the lock with `inv deploy.unlock --host prod --force`")):
        release.unlock(r)
    assert bash(plans.release_lock("/srv/hello")) not in conn.commands
    release.unlock(r, force=True)
    assert conn.commands[-1] == bash(plans.release_lock("/srv/hello"))


def test_old_releases_beyond_keep_are_removed_but_never_the_live_ones():
    names = [f"2026111{i}T000000Z-0123456789ab" for i in range(6)] + [OLD, NEW]
    r, conn, _ = host({bash(plans.list_releases("/srv/hello")): Result("\n".join(names + ["junk"]) + "\n")})
    release.deploy(r, ship_image=False, keep=2, timeout=30)
    removed = [c for c in conn.commands if c.startswith("bash -c 'rm -rf -- ")]
    assert removed == [bash(plans.remove_trees([f"/srv/hello/releases/{n}" for n in names[:6]]))]


def test_pruned_releases_take_their_images_but_never_one_a_kept_release_runs():
    # Two old releases with images of their own, one whose code the previous release (the
    # rollback target) runs too: only the first two images go.
    names = ["20261110T000000Z-00000000000a", "20261111T000000Z-00000000000b", "20261112T000000Z-0123456789ab"]
    r, conn, _ = host({bash(plans.list_releases("/srv/hello")): Result("\n".join(names + [OLD, NEW]) + "\n")})
    release.deploy(r, ship_image=False, keep=2, timeout=30)
    assert [c for c in conn.commands if c.startswith("docker image rm")] == [
        "docker image rm hello-prod-djangoapp:00000000000a hello-prod-djangoapp:00000000000b"]


def test_a_dry_deploy_runs_nothing_anywhere(capsys):
    r, conn, here = host(dry=True)
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert conn.calls == [] and here.calls == []
    out = capsys.readouterr().out
    assert "[dry] rsync --archive --delete" in out
    assert f"[dry] [prod:{NEW_DIR}] {COMPOSE} build djangoapp" in out
    assert f"[dry] [prod:{NEW_DIR}] {RELEASE}\n" in out
    assert f"[dry] [prod:{NEW_DIR}] would write {NEW_DIR}/release.json\n" in out
    assert (f"[dry] [prod:{NEW_DIR}] {COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 30 "
            "--no-deps nginx front\n") in out


OLDER = "20261119T000000Z-00000000000a"
KNOWN_TO_OLD = {"database1": ["contenttypes.0001_initial", "hello.0001_initial"]}


def read_ledgers(*releases):
    """What `ledger.read_all` prints on the host: RELEASES as (name, served, migrations), no
    ledger when migrations is None, the ledger's own text when it is a string."""
    text = ""
    for name, served, migrations in releases:
        text += f"== {name} {'yes' if served else 'no'}\n"
        if migrations is not None:
            body = migrations if isinstance(migrations, str) else ledger.entry(
                name, COMMIT, "sha256:5eed", "2026-11-20T00:00:00+00:00", "ann@desk", migrations)
            text += "".join(f"|{line}\n" for line in body.splitlines())
        text += "\n"
    return {bash(ledger.read_all("/srv/hello")): Result(text)}


def live(release, applied, *releases):
    """The host with RELEASE live (its app container APP2 serving), its database having APPLIED."""
    return host({bash(plans.current_release("/srv/hello")): Result(f"releases/{release}\n"),
                 MIGRATIONS: Result("".join(f"{name}\n" for name in applied)), **read_ledgers(*releases)},
                app={APP2: "running healthy"}, made_in=f"/srv/hello/releases/{release}")


def test_rollback_starts_the_previous_release_before_switching_to_it():
    r, conn, _ = live(NEW, KNOWN_TO_OLD["database1"],
                      (OLD, True, KNOWN_TO_OLD), (NEW, False, {"database1": [*KNOWN_TO_OLD["database1"], "hello.0002_x"]}))
    release.rollback(r, timeout=30)
    assert steps_run(conn)[0] == OWNER  # before the lock
    assert steps_run(conn)[2:] == [
        bash(plans.current_release("/srv/hello")),
        bash(ledger.read_all("/srv/hello")),
        MIGRATIONS,  # what the databases have applied now, from the live release
        made_for(OLD_DIR), OLD_HAS_FRONT,
        COLLECTSTATIC,  # the previous release's static manifest
        *moving_traffic(OLD, APP2, APP3),
        HEALTH,
        bash(plans.switch("/srv/hello", OLD)),
        bash(plans.release_lock("/srv/hello")),
    ]
    assert where(conn, MIGRATIONS) == ["/srv/hello/current"]
    assert where(conn, COLLECTSTATIC) == where(conn, HEALTH) == [OLD_DIR]
    assert stdin_of(conn, SWITCH_NGINX) == [f"set $djangoapp http://{APP3}:8000;\n"]
    assert conn.app == {APP3: "running healthy"}


def test_rollback_refuses_when_the_databases_are_ahead_of_the_target_and_names_the_migrations():
    applied = [*KNOWN_TO_OLD["database1"], "hello.0002_x", "hello.0003_y"]
    r, conn, _ = live(NEW, applied, (OLD, True, KNOWN_TO_OLD), (NEW, True, {"database1": applied}))
    with pytest.raises(TaskError) as err:
        release.rollback(r, timeout=30)
    assert err.value.message == (
        f"error: the databases have migrations that {OLD} does not know (database1: hello.0002_x, hello.0003_y); "
        "its code may fail on them: add --force to roll back anyway (they stay applied)")
    assert steps_run(conn)[-2:] == [MIGRATIONS, bash(plans.release_lock("/srv/hello"))]  # nothing started
    assert conn.app == {APP2: "running healthy"}


def test_rollback_with_force_goes_back_to_code_behind_the_databases(capsys):
    applied = [*KNOWN_TO_OLD["database1"], "hello.0002_x", "hello.0003_y"]
    r, conn, _ = live(NEW, applied, (OLD, True, KNOWN_TO_OLD), (NEW, True, {"database1": applied}))
    release.rollback(r, timeout=30, force=True)
    assert steps_run(conn)[steps_run(conn).index(MIGRATIONS):] == [
        MIGRATIONS, made_for(OLD_DIR), OLD_HAS_FRONT, COLLECTSTATIC, *moving_traffic(OLD, APP2, APP3), HEALTH,
        bash(plans.switch("/srv/hello", OLD)), bash(plans.release_lock("/srv/hello"))]
    out = capsys.readouterr().out
    assert (f"rolling back with --force: these stay applied, unknown to {OLD}'s code: database1: hello.0002_x, "
            "hello.0003_y\n") in out
    assert f"rolled prod back from {NEW} to {OLD}\n" in out


def test_rollback_to_a_release_without_a_ledger_needs_force():
    r, conn, _ = live(NEW, [], (OLD, True, None), (NEW, True, {"database1": []}))
    with pytest.raises(TaskError) as err:
        release.rollback(r, timeout=30)
    assert err.value.message == (f"error: {OLD} has no ledger (deployed by an earlier version): its migrations are "
                                 "unknown; add --force to roll back to it anyway")
    assert MIGRATIONS not in conn.commands and conn.commands[-1] == bash(plans.release_lock("/srv/hello"))
    r, conn, _ = live(NEW, [], (OLD, True, None), (NEW, True, {"database1": []}))
    release.rollback(r, timeout=30, force=True)
    assert MIGRATIONS not in conn.commands
    assert steps_run(conn)[-3:] == [HEALTH, bash(plans.switch("/srv/hello", OLD)), bash(plans.release_lock("/srv/hello"))]


def tampered(release, **changes):
    """RELEASE's ledger as written, with CHANGES to its fields (None: the field removed)."""
    entry = json.loads(ledger.entry(release, COMMIT, "sha256:5eed", "2026-11-20T00:00:00+00:00", "ann@desk",
                                    KNOWN_TO_OLD))
    entry.update(changes)
    return json.dumps({key: value for key, value in entry.items() if value is not None})


TAMPERED = {
    "migrations-number": (tampered(OLD, migrations={"database1": 5}), "the migrations of database1 are a number, not a list"),
    "migrations-list": (tampered(OLD, migrations=["hello.0001_initial"]), "migrations is a list, not an object of databases"),
    "migrations-null": (tampered(OLD, migrations=None), "no migrations"),
    "migrations-json-null": (tampered(OLD).replace('"migrations": {', '"migrations": null, "x": {'),
                             "migrations is null, not an object of databases"),
    "migration-not-text": (tampered(OLD, migrations={"database1": [1]}), "the migrations of database1 hold 1, not an app.name"),
    "database-not-a-name": (tampered(OLD, migrations={"db 1; x": []}), "migrations names 'db 1; x', not a database"),
    "commit-number": (tampered(OLD, commit=5), "commit is a number, not a line of text"),
    "commit-escape": (tampered(OLD, commit="\x1b[2J"), "commit is '\\x1b[2J', not a line of text"),
    "another-release": (tampered(NEW), f"it is the ledger of '{NEW}'"),
    "a-list": ("[1, 2]", "a list, not an object"),
    "null": ("null", "null, not an object"),
    "not-json": ('{"release": "x",', "not JSON"),
}


@pytest.mark.parametrize("text, why", TAMPERED.values(), ids=TAMPERED.keys())
def test_rollback_to_a_release_whose_ledger_is_not_valid_needs_force_and_says_why(text, why):
    r, conn, _ = live(NEW, KNOWN_TO_OLD["database1"], (OLD, True, text), (NEW, True, KNOWN_TO_OLD))
    with pytest.raises(TaskError) as err:
        release.rollback(r, timeout=30)
    assert err.value.message == (f"error: the ledger of {OLD} (/srv/hello/releases/{OLD}/release.json) is not valid: "
                                 f"{why}; its migrations are unknown: add --force to roll back to it anyway")
    assert MIGRATIONS not in conn.commands and conn.commands[-1] == bash(plans.release_lock("/srv/hello"))
    assert conn.app == {APP2: "running healthy"}  # nothing started


def test_rollback_with_force_to_a_release_whose_ledger_is_not_valid_believes_nothing_in_it(capsys):
    # The ledger claims every migration applied: a valid one would let the rollback through.
    r, conn, _ = live(NEW, ["hello.0002_x"], (OLD, True, tampered(OLD, migrations={"database1": 5})),
                      (NEW, True, {"database1": ["hello.0002_x"]}))
    release.rollback(r, timeout=30, force=True)
    assert MIGRATIONS not in conn.commands
    assert steps_run(conn)[-2:] == [bash(plans.switch("/srv/hello", OLD)), bash(plans.release_lock("/srv/hello"))]
    assert (f"the ledger of {OLD} (/srv/hello/releases/{OLD}/release.json) is not valid: the migrations of database1 "
            "are a number, not a list; its migrations are unknown (--force)\n") in capsys.readouterr().out


def test_rollback_goes_to_the_last_release_that_served_or_to_the_one_named():
    releases = [(OLDER, True, KNOWN_TO_OLD), (OLD, False, KNOWN_TO_OLD), (NEW, True, KNOWN_TO_OLD)]
    r, conn, _ = live(NEW, KNOWN_TO_OLD["database1"], *releases)
    release.rollback(r, timeout=30)  # OLD never served (a failed deploy's): not a way back
    assert where(conn, HEALTH) == [f"/srv/hello/releases/{OLDER}"]
    assert bash(plans.switch("/srv/hello", OLDER)) in conn.commands
    r, conn, _ = live(NEW, KNOWN_TO_OLD["database1"], (OLDER, True, KNOWN_TO_OLD), (OLD, True, KNOWN_TO_OLD),
                      (NEW, True, KNOWN_TO_OLD))
    release.rollback(r, timeout=30, to=OLDER)
    assert where(conn, HEALTH) == [f"/srv/hello/releases/{OLDER}"]
    assert bash(plans.switch("/srv/hello", OLDER)) in conn.commands


@pytest.mark.parametrize("to, message", [
    (OLD, f"no release '{OLD}' that served on prod: see `inv releases --host prod`"),
    ("../../etc", "no release '../../etc' that served on prod: see `inv releases --host prod`"),
    (NEW, f"{NEW} is the live release on prod already"),
], ids=["never-served", "not-a-release", "the-live-one"])
def test_rollback_to_a_release_that_cannot_serve_is_refused_before_anything_runs(to, message):
    r, conn, _ = live(NEW, [], (OLDER, True, KNOWN_TO_OLD), (OLD, False, KNOWN_TO_OLD), (NEW, True, KNOWN_TO_OLD))
    with pytest.raises(TaskError) as err:
        release.rollback(r, timeout=30, to=to)
    assert err.value.message == f"error: {message}"
    assert steps_run(conn)[-2:] == [bash(ledger.read_all("/srv/hello")), bash(plans.release_lock("/srv/hello"))]


def test_releases_are_listed_newest_first_with_their_ledgers():
    r, _, _ = live(NEW, [], (OLDER, True, None), (OLD, False, KNOWN_TO_OLD), (NEW, True, {"database1": ["a.1"]}))
    assert release.list_releases(r) == [
        ["*", NEW, COMMIT[:12], "2026-11-20T00:00:00+00:00", "ann@desk", "5eed", "database1 1", ""],
        ["", OLD, COMMIT[:12], "2026-11-20T00:00:00+00:00", "ann@desk", "5eed", "database1 2", "never served"],
        ["", OLDER, "-", "-", "-", "-", "-", ""],
    ]


@pytest.mark.parametrize("text, why", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_release_whose_ledger_is_not_valid_is_listed_without_it_and_named_in_one_line(text, why, capsys):
    r, _, _ = live(NEW, [], (OLD, True, text), (NEW, True, {"database1": ["a.1"]}))
    assert release.list_releases(r) == [
        ["*", NEW, COMMIT[:12], "2026-11-20T00:00:00+00:00", "ann@desk", "5eed", "database1 1", ""],
        ["", OLD, "-", "-", "-", "-", "-", "ledger not valid"],
    ]
    assert capsys.readouterr().out == (f"warning: the ledger of {OLD} (/srv/hello/releases/{OLD}/release.json) is not "
                                       f"valid: {why}; its migrations are unknown\n")


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
    assert not [c for c in conn.commands if "compose" in c and "version" not in c and c != PORTS]
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


OTHERS = "error: /srv/hello on prod holds the releases of project hello-other, not hello-prod: give [hosts.prod] a directory " \
         "of its own (each project deploys into its own)"


def test_a_deploy_into_a_directory_of_another_projects_releases_is_refused_before_anything_changes():
    r, conn, here = host({OWNER: Result("releases hello-other\n")})
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert err.value.message == OTHERS
    assert steps_run(conn) == [OWNER] and here.calls == []


def test_a_first_deploy_that_another_projects_claim_beat_changes_nothing_more():
    r, conn, here = host({CLAIM: Result("file hello-other\n")})
    with pytest.raises(TaskError, match=re.escape("/srv/hello on prod belongs to project hello-other "
                                                  "(/srv/hello/project), not hello-prod: give [hosts.prod] a directory")):
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert steps_run(conn) == [OWNER, PORTS, bash(plans.prepare_directories("/srv/hello")), CLAIM]  # no lock taken
    assert here.calls == []


def test_a_port_another_projects_front_holds_is_refused_before_anything_changes():
    r, conn, here = host({PORTS: Result("8000 container hello-other-front-1 hello-other 127.0.0.1:8000->80/tcp\n")})
    with pytest.raises(TaskError) as err:
        release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert err.value.message == (
        "error: port 8000 on prod is taken by project hello-other (its container hello-other-front-1): give [hosts.prod] "
        "another http_port, or put the projects behind the server's shared front (front = \"shared\" in [hosts.prod])")
    assert steps_run(conn) == [OWNER, PORTS] and here.calls == []


def test_the_ports_this_projects_front_holds_are_its_own_to_keep():
    r, conn, _ = host({PORTS: Result("8000 container hello-prod-front-1 hello-prod 127.0.0.1:8000->80/tcp\n"
                                     "8000 socket 127.0.0.1:8000\n")})
    release.deploy(r, ship_image=False, keep=5, timeout=30)
    assert bash(plans.switch("/srv/hello", NEW)) in conn.commands


def test_a_rollback_in_a_directory_of_another_projects_releases_is_refused_before_the_lock():
    r, conn, _ = live(NEW, KNOWN_TO_OLD["database1"], (OLD, True, KNOWN_TO_OLD), (NEW, True, KNOWN_TO_OLD))
    conn.answers[OWNER] = Result("releases hello-other\n")
    with pytest.raises(TaskError) as err:
        release.rollback(r, timeout=30)
    assert err.value.message == OTHERS
    assert steps_run(conn) == [OWNER]
