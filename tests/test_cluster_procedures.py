"""The cluster procedures against a fake two-node cluster (tests/cluster_fakes.py): each node
answers only the commands its rules know, and the tests check the exact commands each node
ran: deploy, its undo, rollback, refresh, migrate, manage, createsuperuser, swarm.init and
swarm.status (run for real on two test hosts in tests/e2e/test_swarm.py)."""
import json
import re
import shlex

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.plans import compose
from tasks.plans import release as release_plans
from tasks.plans import swarm as plans
from tasks.procedures import cluster_release, cluster_tasks, places, swarm
from tasks.source import render
from tests.cluster_fakes import MANAGER_INFO, WORKER_INFO, SwarmState, commands, fake_cluster

PREV = "20261120T000000Z-0123456789ab"
NEW = "20261121T000000Z-abcdef012345"
IMAGE, PREV_IMAGE = "hello-djangoapp:abcdef012345", "hello-djangoapp:0123456789ab"
NEW_DIR = f"/srv/hello/releases/{NEW}"
RUNNING = "{{.Image}}|{{.CurrentState}}|{{.Node}}"
INFO = "docker info --format '{{json .Swarm}}'"
UPDATE = "docker service inspect --format '{{json .UpdateStatus}}' hello_djangoapp"
OBJECTS = [f"docker {kind} ls --filter label=com.docker.stack.namespace=hello --format '{{{{.Name}}}}'"
           for kind in plans.STACK_OBJECTS]
MIGRATIONS = ("docker exec dbid psql --username app --dbname database1 --no-psqlrc --tuples-only --no-align "
              "--command 'SELECT app || '\"'\"'.'\"'\"' || name FROM django_migrations ORDER BY id'")


def engine(info):
    return [(r"docker version --format .*", "27.0\n"), (r"docker compose version --short", "2.29\n"),
            (shlex_re(INFO), info),
            (r"bash -c 'mkdir -p -m 755 /srv/hello/releases /srv/hello/shared'", ""),
            (r"bash -c 'cd /srv/hello/releases .*\.served.*", ""),
            (r"bash -c 'rm -rf -- /srv/hello/releases/.*'", ""),
            (r"bash -c 'umask 077; t=.*", ""),  # a file written (hostfiles.write)
            (r"bash -c 'set -e\ncd /srv/hello/shared\n.*", ""),  # secrets moved out of env files
            (r"bash -c 'set -e\nmkdir -p -m 700 /srv/hello/shared/config\n.*", ""),  # secrets made there
            (r"bash -c 'set -e; mkdir -p -m 755 /srv/hello/shared/config/db; .*", ""),  # the init script
            (r"docker compose --project-name hello build djangoapp", "")]


def replicas(image, count=2):
    return "".join(f"{image}|Running 3 seconds ago|node{n % 2 + 1}\n" for n in range(count))


def digests(command: str) -> str:
    """The digest of each file the command reads, a line each: a, b, c... twelve times, in the
    order of the stack's secrets and configs (django_secret_key, database1_password, [the
    other databases' passwords,] nginx_main, nginx_site, app_role[, scheduler_notify])."""
    return "".join(letter * 12 + "\n" for letter in "abcdefghijklmnop"[:command.count("sha256sum")])


def manager_rules(current="", app=IMAGE):
    return [(r"bash -c 'readlink /srv/hello/current \|\| true'", current + "\n" if current else ""),
            (r"bash -c 'mkdir -p -m 700 /srv/hello; i=0; while ! mkdir /srv/hello/.deploy-lock .*", ""), (r"bash -c 'rm -rf /srv/hello/.deploy-lock'", ""),
            (r"bash -c 'if test -d /srv/hello/current/; then touch .*", ""),
            (r"bash -c 'set -eo pipefail; sha256sum .*", digests),
            (r"bash -c 'touch /srv/hello/releases/.*/\.served && ln -sfn .*", ""),
            (r"(docker (service|secret|config|network) ls --filter .*)", ""),
            (r"env .*docker stack deploy .*", ""),
            (shlex_re(UPDATE), "null\n"),
            (r"docker service ps hello_database1 .*", "local/postgres:15|Running 3 seconds ago|node1\n"),
            (r"docker service ps hello_djangoapp .*", replicas(app)),
            (r"docker service (rm|create) .*", ""),
            (r"docker service ps hello-migrate-.*", "Complete 1 second ago|\n"),
            (r"docker service ps hello-static-.*", "Complete 1 second ago|\nComplete 1 second ago|\n"),
            (r"docker ps --quiet --filter label=com.docker.swarm.service.name=hello_database1", "dbid\n"),
            (shlex_re(MIGRATIONS), "admin.0001_initial\n"),
            (r"docker image inspect --format .*", "sha256:abc\n"),
            (r"docker node ls --format .*", '{"ID": "id1", "Status": "Ready", "Availability": "Active"}\n'
                                            '{"ID": "id2", "Status": "Ready", "Availability": "Active"}\n'),
            (r"bash -c 'docker service ps --quiet --no-trunc .*", "id1\nid2\n")] + engine(MANAGER_INFO)


def shlex_re(command):
    return re.escape(command)


HERE = [(r"rsync .*", "Total bytes sent: 1,234\n"), (r"git rev-parse HEAD", "0123456789abcdef\n"),
        (r"git status --porcelain", "")]


@pytest.fixture
def new_code(monkeypatch):
    monkeypatch.setattr(cluster_release.release_plans, "code_digest", lambda root, app: NEW.split("-")[1])
    monkeypatch.setattr("tasks.procedures.release.archives.stamp", lambda: NEW.split("-")[0])


def cluster(current="", app=IMAGE, manager=(), worker=(), extra=""):
    return fake_cluster(extra, node_rules={"node1": [*manager, *manager_rules(current, app)],
                                    "node2": [*worker, *engine(WORKER_INFO)]}, here_rules=HERE)


def swarm_commands(conn):
    """What a node ran, without the file operations (bash -c) and the engine checks."""
    return [c for c in commands(conn) if not c.startswith("bash -c ") and " version" not in c]


def stack_deploy(image, count):
    return shlex.join(plans.deploy_stack("docker-stack.prod.yml", "hello", {
        "APP_IMAGE": image, "APP_REPLICAS": str(count), "PROJECT": "hello", "STACK_CONFIG_DIR": "/srv/hello/shared/config",
        "VERSION_django_secret_key": "a" * 12, "VERSION_database1_password": "b" * 12,
        "VERSION_nginx_main": "c" * 12, "VERSION_nginx_site": "d" * 12, "VERSION_app_role": "e" * 12}))


def job(name, mode, command, **extra):
    return shlex.join(plans.job(name, mode, IMAGE, command, env={
        "DJANGO_SETTINGS_MODULE": "djangostack.settings", "STACK_APP_SETTINGS": "hello.settings.production",
        "STACK_APP_WSGI": "hello.wsgi:application", "DJANGO_DATABASES": "database1",
        "DJANGO_SECRET_KEY_FILE": "/run/secrets/django_secret_key",
        "DATABASE1_PASSWORD_FILE": "/run/secrets/database1_password"},
        env_file="/srv/hello/shared/config/django.env",
        secrets=[("hello_django_secret_key_aaaaaaaaaaaa", "django_secret_key"),
                 ("hello_database1_password_bbbbbbbbbbbb", "database1_password")], **extra))


MIGRATE_JOB = job("hello-migrate-database1-abcdef01", "replicated-job",
                  ["python", "manage.py", "migrate", "--noinput", "--database", "default"],
                  networks=["hello_database1_network"])
STATIC_JOB = job("hello-static-abcdef01", "global-job",
                 ["python", "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                 mounts=[("hello_static_volume", "/srv/static")])


def test_a_first_deploy_builds_on_every_node_and_runs_swarm_commands_on_the_manager_alone(new_code, capsys):
    s, conns, here = cluster()
    cluster_release.deploy(s, keep=3, timeout=5)
    job_state = "--no-trunc --format '{{.CurrentState}}|{{.Error}}'"
    assert swarm_commands(conns["node1"]) == [
        INFO, "docker compose --project-name hello build djangoapp",  # its own copy, in the release directory
        *OBJECTS, stack_deploy(IMAGE, 0),  # the databases first, no app yet
        f"docker service ps hello_database1 --filter desired-state=running --format '{RUNNING}'",
        "docker service rm hello-migrate-database1-abcdef01", MIGRATE_JOB,
        f"docker service ps hello-migrate-database1-abcdef01 {job_state}",
        "docker service rm hello-migrate-database1-abcdef01",
        "docker service rm hello-static-abcdef01", STATIC_JOB,
        f"docker service ps hello-static-abcdef01 {job_state}", "docker service rm hello-static-abcdef01",
        stack_deploy(IMAGE, 2), UPDATE,
        f"docker service ps hello_djangoapp --filter desired-state=running --format '{RUNNING}'",
        "docker ps --quiet --filter label=com.docker.swarm.service.name=hello_database1", MIGRATIONS,
        "docker image inspect --format '{{.Id}}' hello-djangoapp:abcdef012345",
        "docker node ls --format '{{json .}}'"]
    manager = commands(conns["node1"])
    assert manager[-6:] == [
        f"bash -c 'umask 077; t={NEW_DIR}/release.json.$$.tmp; cat > \"$t\" && chmod 644 \"$t\" && "
        f"mv -f \"$t\" {NEW_DIR}/release.json'",
        f"bash -c {shlex.quote(release_plans.switch('/srv/hello', NEW))}",
        "docker node ls --format '{{json .}}'",
        f"bash -c {shlex.quote(plans.task_nodes('hello', 'djangoapp'))}",
        f"bash -c {shlex.quote(release_plans.list_releases('/srv/hello'))}",
        "bash -c 'rm -rf /srv/hello/.deploy-lock'"]
    # The worker: its directory, the swarm check, its copy of the release built there; nothing of Swarm.
    assert swarm_commands(conns["node2"]) == [INFO, "docker compose --project-name hello build djangoapp"]
    worker = commands(conns["node2"])
    assert worker[2:4] == ["bash -c 'mkdir -p -m 755 /srv/hello/releases /srv/hello/shared'", INFO]
    assert worker[-1] == f"bash -c {shlex.quote(release_plans.list_releases('/srv/hello'))}"
    assert not [c for c in worker if "deploy-lock" in c or "current" in c]
    assert [c.split(" --rsh")[0] for c in commands(here) if c.startswith("rsync")] == [
        "rsync --archive --delete --stats --human-readable"] * 2
    out = capsys.readouterr().out
    assert f"deploying {NEW} to cluster prod (node1, node2; previous: none)" in out
    assert f"deployed {NEW} to cluster prod in " in out and f"(2 replica(s) of {IMAGE})" in out


def test_the_databases_step_keeps_the_app_on_the_image_that_serves(new_code):
    s, conns, _ = cluster(current=f"releases/{PREV}")
    cluster_release.deploy(s, keep=3, timeout=5)
    deploys = [c for c in commands(conns["node1"]) if "docker stack deploy" in c]
    assert deploys == [stack_deploy(PREV_IMAGE, 2), stack_deploy(IMAGE, 2)]


WORKER = '[[processes]]\nname = "worker"\ncommand = ["celery", "-A", "hello", "worker"]\nreplicas = 2\n'


def test_a_new_process_starts_with_the_new_code_alone_and_is_waited_for(new_code):
    """It runs none before the release phase (the databases step would put it on the image
    that serves, or on code not migrated yet), then its replicas of the new image."""
    worker_rules = [(shlex_re("docker service inspect --format '{{json .UpdateStatus}}' hello_worker"), "null\n"),
                    (r"docker service ps hello_worker .*", replicas(IMAGE))]
    s, conns, _ = cluster(current=f"releases/{PREV}", manager=worker_rules, extra=WORKER)
    cluster_release.deploy(s, keep=3, timeout=5)
    ran = commands(conns["node1"])
    deploys = [c for c in ran if "docker stack deploy" in c]
    assert [re.search(r"REPLICAS_WORKER=(\d+)", c)[1] for c in deploys] == ["0", "2"]
    assert ran.index(deploys[1]) < ran.index(
        f"docker service ps hello_worker --filter desired-state=running --format '{RUNNING}'")


def test_code_the_cluster_runs_already_makes_no_release(new_code, capsys):
    s, conns, _ = cluster(current=f"releases/{NEW}")
    cluster_release.deploy(s, keep=3, timeout=5)
    assert swarm_commands(conns["node1"]) == [INFO]
    assert swarm_commands(conns["node2"]) == [INFO]
    assert commands(conns["node1"])[-1] == "bash -c 'rm -rf /srv/hello/.deploy-lock'"
    assert f"cluster prod runs this code already ({NEW}): nothing to deploy" in capsys.readouterr().out


def test_ship_image_is_refused_on_a_cluster_before_anything_runs():
    s, conns, _ = cluster()
    with pytest.raises(TaskError, match="--ship-image is for a host"):
        places.of(s).deploy(True, 3, 5)
    assert commands(conns["node1"]) == [] and commands(conns["node2"]) == []


@pytest.mark.live_state
def test_a_worker_outside_the_swarm_stops_the_deploy_before_the_lock():
    s, conns, _ = cluster(worker=[(r"docker info --format .*", json.dumps({"LocalNodeState": "inactive"}))])
    with pytest.raises(TaskError, match=r"node2 is not in the swarm: run `inv swarm.init --cluster prod`"):
        cluster_release.deploy(s, keep=3, timeout=5)
    assert not [c for c in commands(conns["node1"]) if "deploy-lock" in c]


SERVICES = {("service", "hello_database1"), ("service", "hello_djangoapp"), ("service", "hello_nginx")}
LIVE = SERVICES | {("secret", "hello_django_secret_key_000000000000"), ("secret", "hello_database1_password_000000000000"),
                   ("config", "hello_nginx_main_000000000000"), ("network", "hello_nginx_network"),
                   ("network", "hello_database1_network")}


def inspect(*names):
    return shlex.join(plans.inspect_services([f"hello_{name}" for name in names]))


def test_a_failed_rolling_update_asks_swarm_to_roll_back_and_removes_the_release_on_every_node(new_code, capsys):
    # The second `docker stack deploy` (the roll) gives the app the new image, then fails.
    swarm = SwarmState(LIVE, spec=lambda name, n: {"Image": IMAGE if n >= 2 else PREV_IMAGE} if "app" in name else {},
                       fail=lambda n: n == 2)
    s, conns, _ = cluster(current=f"releases/{PREV}", manager=swarm.rules())
    with pytest.raises(TaskError) as caught:
        cluster_release.deploy(s, keep=3, timeout=5)
    assert caught.value.message.startswith(f"error: deploy of {NEW} to cluster prod failed while rolling the replicas (")
    assert caught.value.message.endswith("Swarm is rolling the app back to what it ran (see `inv swarm.status "
                                      "--cluster prod`)")
    manager = commands(conns["node1"])
    at = manager.index("docker service rollback --detach hello_djangoapp")
    assert manager[at - 1] == inspect("database1", "djangoapp", "nginx") and manager[at + 1:] == [
        *OBJECTS, f"bash -c 'rm -rf -- {NEW_DIR}'", "bash -c 'rm -rf /srv/hello/.deploy-lock'"]
    assert commands(conns["node2"])[-1] == f"bash -c 'rm -rf -- {NEW_DIR}'"
    assert f"bash -c {shlex.quote(release_plans.switch('/srv/hello', NEW))}" not in manager  # current never switched
    assert swarm.specs["hello_djangoapp"] == {"Name": "hello_djangoapp", "Image": PREV_IMAGE}
    assert swarm.objects == LIVE
    assert f"rolling hello_djangoapp back to what ran before {NEW}" in capsys.readouterr().out


def test_a_rolling_update_that_swarm_rolls_back_by_itself_is_left_to_it(new_code):
    swarm = SwarmState(LIVE, spec=lambda name, n: {"Image": IMAGE if n >= 2 else PREV_IMAGE} if "app" in name else {},
                       fail=lambda n: n == 2)

    def rolling_back_by_itself(command):
        return json.dumps([{**entry, "UpdateStatus": {"State": "rollback_started"}} if swarm.deploys == 2 and
                           entry["Spec"]["Name"] == "hello_djangoapp" else entry
                           for entry in json.loads(swarm.inspect(command))])

    s, conns, _ = cluster(current=f"releases/{PREV}", manager=[
        (r"docker service inspect hello_[\w ]+", rolling_back_by_itself), *swarm.rules()])
    with pytest.raises(TaskError, match="Swarm is rolling the app back"):
        cluster_release.deploy(s, keep=3, timeout=5)
    assert not [c for c in commands(conns["node1"]) if "docker service rollback" in c]


MIGRATION_FAILS = [(r"docker service ps hello-migrate-database1-.*", "Failed 1 second ago|task: non-zero exit (1)\n"),
                   (r"docker service logs --raw --no-task-ids hello-migrate-database1-abcdef01",
                    "RuntimeError: a broken migration\n"),
                   (r"docker service ps hello_database2 .*", "local/postgres:15|Running 3 seconds ago|node1\n")]
WITH_DATABASE2 = '[[databases]]\nname = "database2"\n'
SETTLE = ["docker stack ps hello --filter desired-state=running --format '{{.Name}}'"]


def test_a_failed_deploy_that_adds_a_database_removes_what_it_made_and_rolls_back_what_it_changed(new_code, capsys):
    # Each secret is named by its own file's digest: database2's password is new, the others'
    # names are as they were (database1 is left alone).
    made = {("service", "hello_database2"), ("network", "hello_database2_network"),
            ("secret", "hello_database2_password_cccccccccccc")}
    # The databases step gives the app database2's secret and network; database1's spec and
    # Nginx's stay as they were.
    swarm = SwarmState(LIVE, made, spec=lambda name, n: {"Secrets": n} if name == "hello_djangoapp" else {})
    s, conns, _ = cluster(current=f"releases/{PREV}", manager=[*MIGRATION_FAILS, *swarm.rules()], extra=WITH_DATABASE2)
    with pytest.raises(TaskError, match="failed while running the release phase .*a broken migration"):
        cluster_release.deploy(s, keep=3, timeout=5)
    assert swarm_commands(conns["node1"])[-18:] == [
        "docker service rm hello-migrate-database1-abcdef01", inspect("database1", "djangoapp", "nginx"),
        "docker service rollback --detach hello_djangoapp",  # database1 was never changed
        *OBJECTS, inspect("djangoapp"), *SETTLE,  # until the app no longer uses database2
        "docker service rm hello_database2",
        inspect("djangoapp"), *SETTLE,  # until database2 stopped
        "docker secret rm hello_database2_password_cccccccccccc", "docker network rm hello_database2_network",
        *OBJECTS]  # until the manager lists none of them
    assert swarm.objects == LIVE
    assert swarm.specs == {name: {"Name": name, **({"Secrets": 0} if name == "hello_djangoapp" else {})}
                           for _, name in SERVICES}
    assert commands(conns["node1"])[-2:] == [f"bash -c 'rm -rf -- {NEW_DIR}'", "bash -c 'rm -rf /srv/hello/.deploy-lock'"]
    out = capsys.readouterr().out
    assert f"rolling hello_djangoapp back to what ran before {NEW}" in out
    assert "removing what this deploy made in Swarm: network hello_database2_network, " in out
    assert "service hello_database2" in out and "warning" not in out


def test_a_failed_first_deploy_removes_every_service_it_made_and_rolls_none_back(new_code):
    swarm = SwarmState(set(), LIVE)
    s, conns, _ = cluster(manager=[*MIGRATION_FAILS, *swarm.rules()])
    with pytest.raises(TaskError, match="failed while running the release phase"):
        cluster_release.deploy(s, keep=3, timeout=5)
    manager = swarm_commands(conns["node1"])
    assert {"docker service rm hello_database1", "docker service rm hello_djangoapp",
            "docker service rm hello_nginx"} <= set(manager)
    assert not [c for c in manager if "rollback" in c or c.startswith("docker service inspect hello_")]
    assert swarm.objects == set()


def test_a_first_deploy_that_fails_as_the_app_rolls_out_removes_it_and_says_nothing_was_switched(new_code):
    swarm = SwarmState(set(), LIVE, fail=lambda n: n == 2)
    s, conns, _ = cluster(manager=swarm.rules())
    with pytest.raises(TaskError) as caught:
        cluster_release.deploy(s, keep=3, timeout=5)
    assert caught.value.message.endswith("failed while rolling the replicas (docker stack deploy failed "
                                         "(exit status 1)); nothing was switched")
    assert not [c for c in commands(conns["node1"]) if "rollback" in c] and swarm.objects == set()


def test_the_undo_waits_until_the_manager_no_longer_lists_what_it_removed(new_code, capsys):
    made = {("service", "hello_database2"), ("network", "hello_database2_network")}
    # Listed on the manager until database2's container there has stopped.
    swarm = SwarmState(LIVE, made, lingers={("network", "hello_database2_network"): 2})
    s, conns, _ = cluster(current=f"releases/{PREV}", manager=[*MIGRATION_FAILS, *swarm.rules()], extra=WITH_DATABASE2)
    with pytest.raises(TaskError, match="failed while running the release phase"):
        cluster_release.deploy(s, keep=3, timeout=5)
    ran = swarm_commands(conns["node1"])
    assert ran[ran.index("docker network rm hello_database2_network") + 1:] == [*OBJECTS] * 3
    assert swarm.objects == LIVE and "warning" not in capsys.readouterr().out


def test_what_a_service_still_uses_stays_and_is_named(new_code, capsys):
    made = {("network", "hello_database2_network"), ("secret", "hello_database2_password_cccccccccccc")}
    swarm = SwarmState(LIVE, made, in_use={("network", "hello_database2_network")})
    s, conns, _ = cluster(current=f"releases/{PREV}", manager=[*MIGRATION_FAILS, *swarm.rules()], extra=WITH_DATABASE2)
    with pytest.raises(TaskError, match="failed while running the release phase"):
        cluster_release.deploy(s, keep=3, timeout=5)
    assert swarm.objects == LIVE | {("network", "hello_database2_network")}
    assert ("warning: Swarm kept network hello_database2_network, still in use (see `inv swarm.status --cluster prod`): "
            "once nothing uses it, run on node1: `docker network rm hello_database2_network`") in capsys.readouterr().out


def test_a_failed_build_on_one_node_names_it_and_switches_nothing(new_code):
    s, conns, _ = cluster(worker=[(r"docker compose --project-name hello build djangoapp",
                                   Result(exited=1, stderr="no space left\n"))])
    with pytest.raises(TaskError, match=rf"deploy of {NEW} to cluster prod failed while building on every node "
                                        r"\(building on node2 failed.*; nothing was switched"):
        cluster_release.deploy(s, keep=3, timeout=5)
    assert not [c for c in commands(conns["node1"]) if "docker stack deploy" in c or "docker service rollback" in c]
    assert commands(conns["node2"])[-1] == f"bash -c 'rm -rf -- {NEW_DIR}'"


LEDGERS = (f"== {PREV} yes\n|" + json.dumps({"release": PREV, "commit": "c", "image": "i", "deployed_at": "t",
                                                "deployed_by": "u", "migrations": {"database1": ["admin.0001_initial"]}})
           + f"\n== {NEW} yes\n")


def test_a_rollback_rolls_the_previous_image_out_and_switches_current(capsys):
    s, conns, _ = cluster(current=f"releases/{NEW}", app=PREV_IMAGE,
                          manager=[(r"bash -c 'cd /srv/hello/releases 2>/dev/null \|\| exit 0; for r in .*", LEDGERS)])
    cluster_release.rollback(s, timeout=5)
    ran = swarm_commands(conns["node1"])
    assert ran[:3] == [INFO, "docker ps --quiet --filter label=com.docker.swarm.service.name=hello_database1",
                       MIGRATIONS]
    assert [c for c in ran if "docker stack deploy" in c] == [stack_deploy(PREV_IMAGE, 2)]
    assert f"bash -c {shlex.quote(release_plans.switch('/srv/hello', PREV))}" in commands(conns["node1"])
    assert swarm_commands(conns["node2"]) == [INFO]
    out = capsys.readouterr().out
    assert f"rolling 2 replica(s) back to {PREV_IMAGE}" in out and f"rolled cluster prod back from {NEW} to {PREV}" in out


def test_a_rollback_to_code_that_lacks_applied_migrations_is_refused():
    s, conns, _ = cluster(current=f"releases/{NEW}",
                          manager=[(r"bash -c 'cd /srv/hello/releases 2>/dev/null \|\| exit 0; for r in .*", LEDGERS),
                                   (shlex_re(MIGRATIONS), "admin.0001_initial\nadmin.0002_more\n")])
    with pytest.raises(TaskError, match="migrations that .* does not know \\(database1: admin.0002_more\\)"):
        cluster_release.rollback(s, timeout=5)
    assert not [c for c in commands(conns["node1"]) if "docker stack deploy" in c]


def test_migrate_runs_one_job_of_the_live_image_and_no_collectstatic(capsys):
    s, conns, _ = cluster(current=f"releases/{NEW}")
    cluster_release.migrate(s, "database1", timeout=5)
    assert swarm_commands(conns["node1"]) == [
        INFO, "docker service rm hello-migrate-database1-abcdef01", MIGRATE_JOB,
        "docker service ps hello-migrate-database1-abcdef01 --no-trunc --format '{{.CurrentState}}|{{.Error}}'",
        "docker service rm hello-migrate-database1-abcdef01"]
    assert swarm_commands(conns["node2"]) == [INFO]


def test_a_failed_migration_job_says_its_last_line():
    s, conns, _ = cluster(current=f"releases/{NEW}", manager=[
        (r"docker service ps hello-migrate-.*", "Failed 1 second ago|task: non-zero exit (1)\n"),
        (r"docker service logs --raw --no-task-ids hello-migrate-database1-abcdef01", "django.db.utils.Error: boom\n")])
    with pytest.raises(TaskError, match=r"hello-migrate-database1-abcdef01 failed .*: django.db.utils.Error: boom"):
        cluster_release.migrate(s, None, timeout=5)
    assert commands(conns["node1"])[-1] == "docker service rm hello-migrate-database1-abcdef01"


def test_migrate_before_any_deploy_says_what_to_run():
    s, _, _ = cluster()
    with pytest.raises(TaskError, match=r"nothing is deployed to cluster prod yet: `inv deploy --cluster prod`"):
        cluster_release.migrate(s, None, timeout=5)


def test_refresh_is_refused_when_the_live_stack_file_has_no_backup_service():
    s, conns, _ = cluster(current=f"releases/{NEW}",
                          manager=[(r"grep -q '\^  backup:\$' docker-stack.prod.yml", Result(exited=1))])
    with pytest.raises(TaskError, match=f"the live release of cluster prod \\({NEW}\\) has no backup service"):
        cluster_release.refresh(s, timeout=5)
    assert commands(conns["node1"])[-2:] == ["grep -q '^  backup:$' docker-stack.prod.yml",
                                             "bash -c 'rm -rf /srv/hello/.deploy-lock'"]


def test_refresh_deploys_the_live_release_again_as_it_is(capsys):
    s, conns, _ = cluster(current=f"releases/{NEW}", manager=[(r"grep -q .*", "")])
    cluster_release.refresh(s, timeout=5)
    assert swarm_commands(conns["node1"]) == [INFO, "grep -q '^  backup:$' docker-stack.prod.yml", *OBJECTS,
                                              stack_deploy(IMAGE, 2)]
    assert f"the stack of cluster prod took up the change ({NEW}, as it was)" in capsys.readouterr().out


def test_a_dry_refresh_prints_what_it_would_run_and_changes_nothing(capsys):
    s, conns, _ = cluster()
    for node in s.nodes.values():
        node.dry = True
    cluster_release.refresh(s, timeout=5)
    assert commands(conns["node1"]) == [] and commands(conns["node2"]) == []
    out = capsys.readouterr().out
    assert "[dry] [node1:/srv/hello/current] " in out and "docker stack deploy" in out


APP_ON_NODE2 = [(r"docker ps --quiet --filter label=com.docker.swarm.service.name=hello_djangoapp", "appid\n")]


def test_manage_runs_in_the_first_node_that_runs_a_replica():
    s, conns, _ = cluster(manager=[(r"docker ps --quiet --filter label=com.docker.swarm.service.name=hello_djangoapp",
                                    "")],
                          worker=[*APP_ON_NODE2, (r"docker exec -i appid python manage.py showmigrations", "")])
    cluster_tasks.manage(s, ["showmigrations"], tty=False)
    assert commands(conns["node1"]) == ["docker ps --quiet --filter label=com.docker.swarm.service.name=hello_djangoapp"]
    assert commands(conns["node2"]) == ["docker ps --quiet --filter label=com.docker.swarm.service.name=hello_djangoapp",
                                        "docker exec -i appid python manage.py showmigrations"]


def test_createsuperuser_on_a_cluster_passes_the_password_on_stdin_only(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret pass")
    s, conns, _ = cluster(manager=[(r"docker ps --quiet --filter .*hello_djangoapp", "")],
                          worker=[(r"docker ps --quiet --filter .*hello_djangoapp", "appid\n"),
                                  (r"bash -c 'IFS= read -r DJANGO_SUPERUSER_PASSWORD; .*", "Superuser created.\n")])
    places.of(s).createsuperuser("ann", "ann@example.com")
    script = compose.with_secret_on_stdin("DJANGO_SUPERUSER_PASSWORD", [
        "docker", "exec", "-i", "-e", "DJANGO_SUPERUSER_PASSWORD", "appid", "python", "manage.py", "createsuperuser",
        "--noinput", "--username", "ann", "--email", "ann@example.com"])
    assert conns["node2"].calls[-1] == (None, f"bash -c {shlex.quote(script)}", "s3cret pass\n")
    assert all("s3cret" not in c for c in commands(conns["node1"]) + commands(conns["node2"]))


def test_createsuperuser_on_a_cluster_without_a_password_changes_nothing(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    s, conns, _ = cluster()
    with pytest.raises(TaskError, match="set DJANGO_SUPERUSER_PASSWORD"):
        places.of(s).createsuperuser("ann", None)
    assert commands(conns["node1"]) == [] and commands(conns["node2"]) == []


def test_no_replica_anywhere_says_where_to_look():
    empty = [(r"docker ps --quiet --filter .*hello_djangoapp", "")]
    s, _, _ = cluster(manager=empty, worker=empty)
    with pytest.raises(TaskError, match=r"no replica of the app runs on cluster prod: see `inv swarm.status"):
        cluster_tasks.manage(s, ["shell"], tty=False)


def test_logs_of_an_unknown_service_name_the_known_ones():
    s, conns, _ = cluster()
    with pytest.raises(TaskError, match=r"no service 'web' on cluster prod \(there are: djangoapp, nginx, database1\)"):
        places.of(s).logs("web", False, 10)
    assert commands(conns["node1"]) == []


def test_logs_of_every_service_come_from_the_manager():
    s, conns, _ = cluster(manager=[(r"docker service logs .*", "")])
    places.of(s).logs(None, False, 10)
    assert commands(conns["node1"]) == [shlex.join(plans.service_logs("hello", name, False, 10))
                                        for name in ("djangoapp", "nginx", "database1")]


def test_logs_of_a_process_come_from_its_service():
    s, conns, _ = cluster(manager=[(r"docker service logs .*", "")], extra=WORKER)
    places.of(s).logs("worker", False, 10)
    assert commands(conns["node1"]) == [shlex.join(plans.service_logs("hello", "worker", False, 10))]


INACTIVE = json.dumps({"LocalNodeState": "inactive", "NodeID": ""})


def test_init_makes_the_swarm_joins_the_worker_with_the_token_on_stdin_and_rotates_it(capsys):
    joined = {"done": False}

    def worker_info(command):
        return WORKER_INFO if joined["done"] else INACTIVE

    def join(command):
        joined["done"] = True
        return ""

    node_list = '{"ID": "id1", "Hostname": "n1"}\n'
    inspected = json.dumps([{"ID": "id1", "Spec": {"Labels": {}}}, {"ID": "id2", "Spec": {"Labels": {}}}])
    s, conns, _ = fake_cluster(node_rules={
        "node1": [(r"docker info --format .*", lambda c: MANAGER_INFO if conns["node1"].commands.count(c) > 1 else INACTIVE),
                  (r"docker swarm init .*", ""), (r"docker node ls --format .*", node_list),
                  (r"docker swarm join-token --quiet worker", "SWMTKN-1-secret\n"),
                  (r"docker swarm join-token --rotate --quiet worker", ""),
                  (r"docker node inspect id1 id2|docker node inspect id1", inspected),
                  (r"docker node update .*", "")],
        "node2": [(r"docker info --format .*", worker_info), (r"bash -c .*docker swarm join.*", join)]})
    swarm.init(s)
    assert commands(conns["node1"]) == [
        INFO, shlex.join(plans.init("10.0.0.1")), "docker node ls --format '{{json .}}'",
        "docker swarm join-token --quiet worker", "docker swarm join-token --rotate --quiet worker",
        INFO, "docker node ls --format '{{json .}}'", "docker node inspect id1",
        shlex.join(plans.update_labels("id1", ["hello.database.database1"], []))]
    join_call = conns["node2"].calls[1]
    assert join_call[1] == f"bash -c {shlex.quote(plans.join_script('10.0.0.1', '10.0.0.2'))}"
    assert join_call[2] == "SWMTKN-1-secret\n" and "SWMTKN" not in join_call[1]
    assert commands(conns["node2"]) == [INFO, join_call[1], INFO]
    assert "swarm prod: made the swarm on node1; joined node2; node1 labelled hello.database.database1" in \
        capsys.readouterr().out


def test_init_of_a_swarm_as_configured_changes_nothing(capsys):
    labelled = json.dumps([{"ID": "id1", "Spec": {"Labels": {"hello.database.database1": "true"}}},
                           {"ID": "id2", "Spec": {"Labels": {}}}])
    nodes = '{"ID": "id1"}\n{"ID": "id2"}\n'
    s, conns, _ = fake_cluster(node_rules={
        "node1": [(r"docker info --format .*", MANAGER_INFO), (r"docker node ls --format .*", nodes),
                  (r"docker node inspect id1 id2", labelled)],
        "node2": [(r"docker info --format .*", WORKER_INFO)]})
    swarm.init(s)
    assert [c for c in commands(conns["node1"]) if "swarm" in c or "update" in c] == []
    assert "swarm prod is as configured (2 nodes): nothing changed" in capsys.readouterr().out


def test_init_refuses_a_worker_of_another_swarm_in_one_line():
    s, conns, _ = fake_cluster(node_rules={
        "node1": [(r"docker info --format .*", MANAGER_INFO), (r"docker node ls --format .*", '{"ID": "id1"}\n')],
        "node2": [(r"docker info --format .*", json.dumps({"LocalNodeState": "active", "NodeID": "other"}))]})
    with pytest.raises(TaskError, match=r"node2 is in another swarm \(active\): run `docker swarm leave` there first"):
        swarm.init(s)
    assert "docker swarm join-token --quiet worker" not in commands(conns["node1"])


def test_init_refuses_a_manager_that_is_a_worker_elsewhere():
    s, conns, _ = fake_cluster(node_rules={"node1": [(r"docker info --format .*", WORKER_INFO)], "node2": []})
    with pytest.raises(TaskError, match="node1 is a worker of another swarm"):
        swarm.init(s)
    assert commands(conns["node1"]) == [INFO] and commands(conns["node2"]) == []


def test_status_is_two_tables_from_the_manager():
    s, conns, _ = fake_cluster(node_rules={"node1": [
        (r"docker info --format .*", MANAGER_INFO),
        (r"docker node ls --format .*", '{"Hostname": "n1", "Status": "Ready", "Availability": "Active", '
                                        '"ManagerStatus": "Leader", "EngineVersion": "27"}\n'),
        (r"docker stack services hello .*", '{"Name": "hello_djangoapp", "Mode": "replicated", "Replicas": "2/2"}\n'),
        (r"docker stack ps hello .*", '{"Name": "hello_djangoapp.1", "Node": "n1", "CurrentState": "Running"}\n')],
        "node2": []})
    nodes, services = places.of(s).ps(False)
    assert nodes == [["node", "status", "availability", "manager", "engine"], ["n1", "Ready", "Active", "Leader", "27"]]
    assert services == [["service", "mode", "replicas", "tasks"],
                        ["hello_djangoapp", "replicated", "2/2", "n1: Running"]]
    assert commands(conns["node2"]) == []


def test_a_dry_init_runs_nothing_on_any_node(capsys):
    s, conns, _ = fake_cluster(node_rules={"node1": [], "node2": []})
    for node in s.nodes.values():
        node.dry = True
    swarm.init(s)
    assert commands(conns["node1"]) == [] and commands(conns["node2"]) == []
    assert "[dry] [node1:/srv/hello/current] docker swarm init --advertise-addr 10.0.0.1" in capsys.readouterr().out


def test_the_optional_secret_files_are_made_blank_by_one_script():
    assert plans.blank_if_missing(["/s/a b", "/s/c"]) == (
        "umask 077; [ -s '/s/a b' ] || echo > '/s/a b'; [ -s /s/c ] || echo > /s/c")


def test_a_stack_file_is_asked_for_a_service_by_an_anchored_grep():
    assert plans.stack_has_service("docker-stack.prod.yml", "backup") == [
        "grep", "-q", "^  backup:$", "docker-stack.prod.yml"]


def test_one_image_name_per_code_digest():
    assert release_plans.image("hello-prod", "abcdef012345") == "hello-prod-djangoapp:abcdef012345"
    assert release_plans.release_image("hello", NEW) == IMAGE and release_plans.digest_of(NEW) == "abcdef012345"


def test_the_password_script_reads_one_line_and_puts_nothing_in_argv():
    assert compose.with_secret_on_stdin("PW", ["docker", "exec", "-e", "PW", "c", "x y"]) == (
        "IFS= read -r PW; export PW; exec docker exec -e PW c 'x y'")


def test_the_django_environment_is_one_source_for_compose_stack_and_jobs():
    from tasks.source import render

    s, _, _ = cluster()
    env = render.django_environment(s.stack)
    assert env == {"DJANGO_SETTINGS_MODULE": "djangostack.settings", "STACK_APP_SETTINGS": "hello.settings.production",
                   "STACK_APP_WSGI": "hello.wsgi:application", "DJANGO_DATABASES": "database1",
                   "DJANGO_SECRET_KEY_FILE": "/run/secrets/django_secret_key",
                   "DATABASE1_PASSWORD_FILE": "/run/secrets/database1_password"}
    files = render.rendered(s.stack)
    for path in (render.COMPOSE_FILE, render.stack_file("prod")):
        assert "".join(f'      {k}: "{v}"\n' for k, v in env.items()) in files[path], path


def test_every_node_finishes_and_the_first_failure_in_node_order_names_its_node():
    from tasks.execution.ssh import in_parallel

    finished = []

    def work(name, item):
        finished.append(name)
        if name != "a":
            raise ValueError(f"broke {item}")

    results = in_parallel({"a": 1, "b": 2, "c": 3}, work)
    assert sorted(finished) == ["a", "b", "c"]
    assert [(name, str(exc) if exc else None) for name, exc in results] == [("a", None), ("b", "broke 2"),
                                                                             ("c", "broke 3")]
    s, _, _ = cluster()
    with pytest.raises(TaskError, match="node1: broke"):
        s.each(lambda name, node: (_ for _ in ()).throw(ValueError("broke")))


# -- processes and schedules on a cluster ------------------------------------------------------
PROCS = ('\n[[processes]]\nname = "worker"\ncommand = ["celery", "-A", "hello", "worker"]\nreplicas = 2\n'
         '\n[[schedules]]\nname = "sessions"\ncron = "* * * * *"\ncommand = ["clearsessions"]\n')
NOTIFY_FILE = "/srv/hello/shared/config/secrets/backup_notify"
WITH_NOTIFY = [(r"bash -c 'umask 077; \[ -s .*", "")]
WORKER_SPEC = json.dumps([{"Spec": {"Name": "hello_worker", "Mode": {"Replicated": {"Replicas": 2}}}}])
WORKER_TASKS = "docker service ps hello_worker --filter desired-state=running --format '{{.Image}}|{{.CurrentState}}|{{.Node}}'"


def test_a_stack_with_schedules_gets_the_notify_file_as_a_secret_named_by_its_digest():
    s, conns, _ = cluster(current=f"releases/{NEW}", extra=PROCS, manager=WITH_NOTIFY)
    d = cluster_release.SwarmRelease(s).context(NEW, None, 5)
    env = cluster_release.environment(s, d)
    # Each secret and config named by its own file's digest: new notify URLs restart the
    # scheduler alone, and a new database's secret leaves the others' names as they were.
    assert {key: env[key] for key in env if key.startswith("VERSION_")} == {
        "VERSION_django_secret_key": "a" * 12, "VERSION_database1_password": "b" * 12, "VERSION_nginx_main": "c" * 12,
        "VERSION_nginx_site": "d" * 12, "VERSION_app_role": "e" * 12, "VERSION_scheduler_notify": "f" * 12}
    ran = commands(conns["node1"])
    # A Swarm secret must have content: a blank line when no URL is set up, before its digest.
    assert ran.index(f"bash -c 'umask 077; [ -s {NOTIFY_FILE} ] || echo > {NOTIFY_FILE}'") < \
        next(i for i, c in enumerate(ran) if "sha256sum" in c)
    assert f"sha256sum < {NOTIFY_FILE} | cut -c1-12'" in next(c for c in ran if "sha256sum" in c)


def test_without_schedules_no_notify_file_is_made_or_read():
    s, conns, _ = cluster(current=f"releases/{NEW}")
    env = cluster_release.environment(s, cluster_release.SwarmRelease(s).context(NEW, None, 5))
    assert "VERSION_scheduler_notify" not in env
    assert not any("backup_notify" in c for c in commands(conns["node1"]))


def test_scale_on_a_cluster_asks_swarm_and_waits_for_the_tasks():
    s, conns, _ = cluster(current=f"releases/{NEW}", extra=PROCS, manager=[
        (r"docker service inspect hello_worker", WORKER_SPEC), (r"docker service scale .*", ""),
        (re.escape(WORKER_TASKS), replicas(IMAGE, 3))])
    places.of(s).scale(s.stack, {"worker": 3}, 5)
    assert swarm_commands(conns["node1"]) == [INFO, "docker service inspect hello_worker",
                                              "docker service scale --detach hello_worker=3", WORKER_TASKS]


def test_a_scale_that_does_not_come_up_is_scaled_back():
    s, conns, _ = cluster(current=f"releases/{NEW}", extra=PROCS, manager=[
        (r"docker service inspect hello_worker", WORKER_SPEC), (r"docker service scale .*", ""),
        (re.escape(WORKER_TASKS), replicas(IMAGE, 2) + f"{IMAGE}|Starting 3 seconds ago|node2\n")])
    with pytest.raises(TaskError, match=r"worker did not reach 3 running task\(s\) within .*2 of 3 running"):
        places.of(s).scale(s.stack, {"worker": 3}, 1)
    assert commands(conns["node1"])[-1] == "docker service scale --detach hello_worker=2"


def test_scale_of_a_process_not_deployed_yet_says_to_deploy():
    s, conns, _ = cluster(current=f"releases/{NEW}", extra=PROCS, manager=[
        (r"docker service inspect hello_worker", Result(exited=1, stderr="no such service"))])
    with pytest.raises(TaskError, match=r"^worker not on cluster prod yet: `inv deploy --cluster prod` starts it$"):
        places.of(s).scale(s.stack, {"worker": 3}, 5)
    assert not any("scale" in c for c in commands(conns["node1"]))


def test_a_dry_scale_on_a_cluster_changes_nothing(capsys):
    s, conns, _ = cluster(extra=PROCS)
    for node in s.nodes.values():
        node.dry = True
    places.of(s).scale(s.stack, {"worker": 3}, 5)
    assert commands(conns["node1"]) == [] and commands(conns["node2"]) == []
    assert "docker service scale --detach hello_worker=3" in capsys.readouterr().out


SCHEDULER_PS = "docker ps --quiet --filter label=com.docker.swarm.service.name=hello_scheduler"


def test_the_scheduler_s_status_is_read_on_the_node_that_runs_it():
    s, conns, _ = cluster(extra=PROCS, manager=[(re.escape(SCHEDULER_PS), "")], worker=[
        (re.escape(SCHEDULER_PS), "schedid\n"),
        (r"docker exec schedid /app/scheduler/bin/python /app/stack/djangostack/scheduler.py status",
         '{"schedules": {}, "stale": false}\n')])
    assert places.of(s).scheduler_status() == {"schedules": {}, "stale": False}
    assert commands(conns["node2"])[-1] == \
        "docker exec schedid /app/scheduler/bin/python /app/stack/djangostack/scheduler.py status"


def test_a_scheduler_running_nowhere_says_to_deploy():
    none = [(re.escape(SCHEDULER_PS), "")]
    s, _, _ = cluster(extra=PROCS, manager=none, worker=none)
    with pytest.raises(TaskError, match=r"^the scheduler is not running on cluster prod: deploy it \(`inv deploy "
                                        r"--cluster prod`\), or see `inv swarm.status --cluster prod`$"):
        places.of(s).scheduler_status()


def test_a_schedule_run_on_a_cluster_is_a_one_off_job_of_the_live_image_whose_output_is_shown(monkeypatch, capsys):
    monkeypatch.setattr(cluster_release.time, "time", lambda: 1700000000)
    name = "hello-schedule-sessions-1700000000"
    s, conns, _ = cluster(current=f"releases/{NEW}", extra=PROCS, manager=[
        *WITH_NOTIFY, (rf"docker service ps {name} .*", "Complete 1 second ago|\n"),
        (rf"docker service logs --raw --no-task-ids {name}", "Sessions cleared.\n")])
    places.of(s).run_schedule(s.stack.schedules[0])
    assert swarm_commands(conns["node1"]) == [
        INFO, f"docker service rm {name}",
        shlex.join(plans.job(name, "replicated-job", IMAGE, ["python", "manage.py", "clearsessions"],
                             env=render.django_environment(s.stack), env_file="/srv/hello/shared/config/django.env",
                             secrets=[("hello_django_secret_key_aaaaaaaaaaaa", "django_secret_key"),
                                      ("hello_database1_password_bbbbbbbbbbbb", "database1_password")],
                             networks=["hello_database1_network"])),
        f"docker service ps {name} --no-trunc --format '{{{{.CurrentState}}}}|{{{{.Error}}}}'",
        f"docker service logs --raw --no-task-ids {name}", f"docker service rm {name}"]
    assert "Sessions cleared.\n" in capsys.readouterr().out


def test_a_failed_schedule_run_on_a_cluster_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(cluster_release.time, "time", lambda: 1700000000)
    s, conns, _ = cluster(current=f"releases/{NEW}", extra=PROCS, manager=[
        *WITH_NOTIFY, (r"docker service ps hello-schedule-.*", "Failed 1 second ago|task: non-zero exit (1)\n"),
        (r"docker service logs .*", "CommandError: boom\n")])
    with pytest.raises(TaskError, match=r"^schedule sessions \(manage.py clearsessions\) failed on cluster prod: "
                                        r"hello-schedule-sessions-1700000000 failed .*: CommandError: boom$"):
        places.of(s).run_schedule(s.stack.schedules[0])
    assert commands(conns["node1"])[-1] == "docker service rm hello-schedule-sessions-1700000000"


def tasks_of(name, lines):
    return (re.escape(f"docker service ps hello_{name} --filter desired-state=running --format '{RUNNING}'"), lines)


def test_doctor_on_a_cluster_counts_the_running_tasks_of_the_app_and_each_process():
    from tasks import doctor

    s, _, _ = cluster(extra=PROCS, manager=[
        tasks_of("djangoapp", replicas(IMAGE, 2)), tasks_of("worker", f"{IMAGE}|Running 1 minute ago|node1\n"
                                                                      f"{IMAGE}|Starting 5 seconds ago|node2\n"),
        tasks_of("scheduler", replicas(IMAGE, 1))])
    assert doctor.check_cluster_processes(s) == [(
        False, "process worker: 1 of 2 running and healthy on cluster prod (1 starting or failing)",
        "`inv logs -s worker --cluster prod` says why; `inv deploy --cluster prod` starts what is missing")]
    s, _, _ = cluster(extra=PROCS, manager=[tasks_of("djangoapp", replicas(IMAGE, 2)),
                                            tasks_of("worker", replicas(IMAGE, 2)), tasks_of("scheduler", replicas(IMAGE, 1))])
    assert doctor.check_cluster_processes(s) == (
        True, "processes running and healthy: djangoapp 2/2, worker 2/2, scheduler 1/1", None)


def test_doctor_on_a_cluster_takes_the_scheduler_s_word_on_the_schedules():
    from tasks import doctor

    failing = {"stale": False, "schedules": {"sessions": {"failing": True, "last_start": "2026-03-01T12:00:00",
                                                          "last_failure": "2026-03-01T12:00:01", "exit": 1,
                                                          "last_error": "exit status 1"}}}
    s, _, _ = cluster(extra=PROCS, manager=[(re.escape(SCHEDULER_PS), "schedid\n"),
                                            (r"docker exec schedid .* status", json.dumps(failing) + "\n")])
    assert doctor.check_schedules(s) == [(
        False, "schedule sessions: last run FAILED at 2026-03-01 12:00:01: exit status 1 on cluster prod",
        "`inv schedule.status --cluster prod` and `inv logs -s scheduler --cluster prod` say more")]
    none = [(re.escape(SCHEDULER_PS), "")]
    s, _, _ = cluster(extra=PROCS, manager=none, worker=none)
    ok, message, _ = doctor.check_schedules(s)
    assert not ok and message.startswith("the scheduler is not running on cluster prod")
