"""A cluster of two test hosts (each its own address, engine and sshd) made one Docker Swarm
by `inv swarm.init`, over SSH, as [clusters.NAME] in config/stack.toml says."""
import json
import os
import re
import time

import pytest

from tests.e2e.conftest import Stack, free_port
from testkit.load import Load
from testkit.projectcopy import copy_project

pytestmark = pytest.mark.e2e

PROJECT = "hello-e2e-swarm"
PORT = 8000  # the stack's http_port, published on each node
ARTIFACTS = "/tmp/hello-e2e-artifacts"


def page(node) -> tuple[int, bytes]:
    status, _, body = node.get(f"http://127.0.0.1:{PORT}/")
    return status, body


def replicas(node1) -> list[list[str]]:
    """[node ID, state, image] of each of the app's tasks that should run (the test hosts
    share this machine's hostname: Swarm's node names cannot tell them apart)."""
    ids = node1.docker("service", "ps", "--quiet", f"{PROJECT}_djangoapp", "--filter", "desired-state=running").stdout.split()
    if not ids:
        return []
    out = node1.docker("inspect", "--format", "{{.NodeID}}|{{.Status.State}}|{{.Spec.ContainerSpec.Image}}", *ids).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def node_id(node) -> str:
    return node.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()


def record(name: str, figures: dict) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(f"{ARTIFACTS}/swarm-{name}.json", "w") as f:
        json.dump(figures, f, indent=1)
    print(name, figures)


@pytest.fixture(scope="module")
def cluster(servers, tmp_path_factory):
    node1, node2 = servers("swarm-1"), servers("swarm-2")
    root = copy_project(tmp_path_factory.mktemp("swarm") / "project")
    stack = root / "config/stack.toml"
    stack.write_text(stack.read_text() + "\n" + node1.hosts_entry("node1", f"{node1.dir}/srv", project=PROJECT)
                     + node2.hosts_entry("node2", f"{node2.dir}/srv", project=PROJECT)
                     + '\n[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\nreplicas = 2\n'
                       'endpoint_mode = "dnsrr"\npublish_mode = "host"\n'
                       # The backup service on the manager, its repository a folder there.
                       f'\n[backups]\nschedule = "15 3 * * *"\nrepository = "{node1.dir}/restic"\n')
    s = Stack(PROJECT, free_port(0), root=root)
    s.inv("render")
    s.nodes = (node1, node2)
    return s


def test_swarm_init_makes_one_swarm_then_a_second_run_changes_nothing(cluster):
    node1, node2 = cluster.nodes
    made = cluster.inv("swarm.init", "--cluster", "prod", timeout=300).stdout
    assert "made the swarm on node1" in made and "joined node2" in made, made
    assert f"node1 labelled {PROJECT}.database.database1" in made, made
    listed = node1.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").stdout.splitlines()
    assert len(listed) == 2 and all(" Ready" in line for line in listed), listed
    assert node2.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "active"
    labels = node1.docker("node", "inspect", "--format", "{{json .Spec.Labels}}", "self").stdout
    assert f'"{PROJECT}.database.database1":"true"' in labels, labels
    again = cluster.inv("swarm.init", "--cluster", "prod", timeout=300).stdout
    assert "swarm prod is as configured (2 nodes): nothing changed" in again, again
    status = cluster.inv("swarm.status", "--cluster", "prod").stdout
    assert len(re.findall(r"^\S+ +Ready +Active", status, re.M)) == 2, status
    assert "no services of this stack yet" in status


def test_render_check_covers_the_stack_file(cluster):
    assert "up to date" in cluster.inv("render", "--check").stdout
    stack_file = cluster.root / "docker-stack.prod.yml"
    rendered = stack_file.read_text()
    stack_file.write_text(rendered.replace("order: start-first", "order: stop-first", 1))
    stale = cluster.inv("render", "--check", check=False)
    assert stale.returncode == 1 and "docker-stack.prod.yml" in stale.stdout + stale.stderr, stale
    cluster.inv("render")
    assert stack_file.read_text() == rendered


def test_a_deploy_serves_the_page_through_nginx_on_both_nodes(cluster):
    node1, node2 = cluster.nodes
    done = cluster.inv("deploy", "--cluster", "prod", timeout=1800)
    print(done.stdout)
    assert "deployed" in done.stdout, done.stdout
    running = replicas(node1)
    assert len(running) == 2 and all(state == "running" for _, state, _ in running), running
    assert {where for where, _, _ in running} == {node_id(node1), node_id(node2)}, running  # one per node
    for node in (node1, node2):
        status, body = page(node)
        assert status == 200 and b"Hello from Django" in body, (node.name, status, body[:200])
    listed = cluster.inv("swarm.status", "--cluster", "prod").stdout
    assert re.search(rf"{PROJECT}_djangoapp +replicated +2/2", listed), listed
    assert re.search(rf"{PROJECT}_database1 +replicated +1/1", listed), listed
    # The database runs on the node its label pins it to.
    task = node1.docker("service", "ps", "--quiet", f"{PROJECT}_database1", "--filter", "desired-state=running").stdout.split()
    assert node1.docker("inspect", "--format", "{{.NodeID}}", *task).stdout.split() == [node_id(node1)]


def test_the_everyday_tasks_take_the_cluster(cluster):
    assert re.search(rf"{PROJECT}_djangoapp +replicated +2/2", cluster.inv("ps", "--cluster", "prod").stdout)
    shown = cluster.inv("logs", "--cluster", "prod", "--service", "djangoapp", "--tail", "20")
    logs = shown.stdout + shown.stderr  # the containers' standard error comes as the command's
    assert "Booting worker" in logs or "Listening at" in logs, logs
    migrated = cluster.inv("migrate", "--cluster", "prod", timeout=600).stdout
    assert "migrating database1" in migrated, migrated
    made = cluster.inv("createsuperuser", "--cluster", "prod", "--username", "swarm-admin", "--email", "admin@hello.test",
                       env={"DJANGO_SUPERUSER_PASSWORD": "not-in-argv-8c1e"}, timeout=300)
    assert "not-in-argv-8c1e" not in made.stdout + made.stderr
    shown = cluster.inv("manage", "--cluster", "prod", "--args",
                        "shell -c \"from django.contrib.auth.models import User; "
                        "print('admins', User.objects.filter(username='swarm-admin', is_superuser=True).count())\"",
                        timeout=300).stdout
    assert "admins 1" in shown, shown


def test_every_service_and_container_of_the_cluster_keeps_a_bounded_log(cluster):
    """[logs] (its defaults here) in each service's spec, and so in each container on each node."""
    node1, node2 = cluster.nodes
    services = node1.docker("service", "ls", "--quiet", "--filter", f"label=com.docker.stack.namespace={PROJECT}").stdout.split()
    specs = node1.docker("service", "inspect", "--format", "{{.Spec.Name}} {{json .Spec.TaskTemplate.LogDriver}}",
                         *services).stdout.splitlines()
    assert {f"{PROJECT}_djangoapp", f"{PROJECT}_nginx", f"{PROJECT}_database1", f"{PROJECT}_backup"} <= {
        line.split()[0] for line in specs}, specs
    assert [line for line in specs if not line.endswith(' {"Name":"json-file","Options":{"max-file":"3","max-size":"10m"}}')
            ] == [], specs
    for node in (node1, node2):
        ids = node.docker("ps", "--quiet", "--filter", f"label=com.docker.stack.namespace={PROJECT}").stdout.split()
        configs = node.docker("inspect", "--format", "{{.Name}} {{json .HostConfig.LogConfig}}", *ids).stdout.splitlines()
        assert ids and [line for line in configs
                        if not line.endswith(' {"Type":"json-file","Config":{"max-file":"3","max-size":"10m"}}')] == [], configs


def test_the_backups_run_on_the_manager_and_a_drill_passes(cluster):
    node1, _ = cluster.nodes
    done = cluster.inv("backup.now", "--cluster", "prod", timeout=600)
    assert "snapshot" in done.stdout, done.stdout
    listed = cluster.inv("backup.snapshots", "--cluster", "prod").stdout
    assert re.search(r"database1 \([\d,]+ rows\)", listed), listed
    drill = cluster.inv("backup.drill", "--cluster", "prod", timeout=600).stdout
    assert "PASS" in drill, drill
    assert "cluster prod: last backup" in cluster.inv("backup.status", "--cluster", "prod").stdout
    # The repository is the manager's folder, restic's.
    assert (node1.dir / "restic" / "config").exists()

    def notify_secret() -> str:
        secrets = json.loads(node1.docker("service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Secrets}}",
                                          f"{PROJECT}_backup").stdout)
        return next(s["SecretName"] for s in secrets if s["File"]["Name"] == "notify")

    # New notify URLs are a new secret of the backup service alone: the app's replicas stay.
    app_tasks = sorted(node1.docker("service", "ps", "--quiet", f"{PROJECT}_djangoapp").stdout.split())
    before = notify_secret()
    cluster.inv("backup.notify", "--cluster", "prod", input="json://127.0.0.1:9/hook\n", timeout=600)
    assert notify_secret() != before
    container = node1.docker("ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={PROJECT}_backup").stdout.split()[0]
    assert node1.docker("exec", container, "cat", "/run/secrets/notify").stdout.strip() == "json://127.0.0.1:9/hook"
    assert sorted(node1.docker("service", "ps", "--quiet", f"{PROJECT}_djangoapp").stdout.split()) == app_tasks
    assert "cluster prod: last backup" in cluster.inv("backup.status", "--cluster", "prod").stdout


def admins(cluster) -> str:
    return cluster.inv("manage", "--cluster", "prod", "--args",
                       "shell -c \"from django.contrib.auth.models import User; "
                       "print('admins', sorted(User.objects.values_list('username', flat=True)))\"", timeout=300).stdout


def test_a_restore_on_the_cluster_brings_database1_back_to_the_snapshot(cluster):
    node1, _ = cluster.nodes
    # swarm-admin was made before the snapshot of the test above; this one after it.
    cluster.inv("createsuperuser", "--cluster", "prod", "--username", "after-snapshot", "--email", "a@hello.test",
                env={"DJANGO_SUPERUSER_PASSWORD": "after-snapshot-pw-1"}, timeout=300)
    assert "after-snapshot" in admins(cluster)
    media = cluster.inv("backup.restore", "latest", "--cluster", "prod", "--media", "--yes", check=False)
    assert media.returncode == 1 and "each node's own volume" in media.stderr, media.stderr
    done = cluster.inv("backup.restore", "latest", "--cluster", "prod", "--yes", timeout=600)
    assert "loaded" in done.stdout and "into database1" in done.stdout, done.stdout
    shown = admins(cluster)
    assert "swarm-admin" in shown and "after-snapshot" not in shown, shown
    assert page(node1)[0] == 200  # the replicas reconnected by themselves


def test_a_rolling_update_with_a_code_change_under_load_fails_no_request(cluster):
    node1, _ = cluster.nodes
    before = {image for _, _, image in replicas(node1)}
    view = cluster.root / "hello/hello/views.py"
    view.write_text(view.read_text() + "\n# a code change for the rolling update\n")
    started = time.monotonic()
    with Load(f"http://127.0.0.1:{PORT}", ["nsenter", f"--net={node1.netns}"]) as seen:
        cluster.inv("deploy", "--cluster", "prod", timeout=1800)
    took = time.monotonic() - started
    after = replicas(node1)
    assert len(after) == 2 and not {image for _, _, image in after} & before, (before, after)
    record("rolling-update", {"requests": seen.requests, "failed": sum(seen.wrk_errors.values()) + seen.non_2xx,
                              "probe_failures": seen.probe_failures, "longest_gap_s": seen.longest_gap,
                              "deploy_s": round(took, 1)})
    logs = node1.docker("service", "logs", "--raw", f"{PROJECT}_nginx", check=False)
    errors = [line for line in (logs.stdout + logs.stderr).splitlines() if "[error]" in line or "[warn]" in line]
    with open(f"{ARTIFACTS}/swarm-nginx-errors.txt", "w") as f:
        f.write("\n".join(errors) + "\n")
    assert seen.requests > 100 and sum(seen.wrk_errors.values()) == 0 and seen.non_2xx == 0, seen.wrk_output
    assert seen.probe_failures == [], (seen.probe_failures, seen.wrk_output, errors[-20:])
    # The ledger on the manager, as a host's: both releases, the new one live, with the
    # migrations database1 had applied.
    listed = cluster.inv("releases", "--cluster", "prod").stdout
    rows = [line for line in listed.splitlines() if re.search(r"\d{8}T\d{6}Z-", line)]
    assert len(rows) == 2 and rows[0].startswith("*") and re.search(r"database1 \d+", rows[0]), listed


def test_a_rollback_rolls_the_replicas_back_to_the_previous_release(cluster):
    node1, _ = cluster.nodes
    listed = cluster.inv("releases", "--cluster", "prod").stdout
    previous = re.findall(r"^ +(\d{8}T\d{6}Z-[0-9a-f]{12})", listed, re.M)[0]
    done = cluster.inv("rollback", "--cluster", "prod", timeout=900)
    assert "back from" in done.stdout and previous in done.stdout, done.stdout
    running = replicas(node1)
    images = {image for _, _, image in running}
    assert images == {f"{PROJECT}-djangoapp:{previous.rsplit('-', 1)[1]}"}, images
    # Still one replica per node: a start-first update may put both on one, which the
    # rollback (as a deploy) spreads again, so that losing a node never loses them all.
    assert {where for where, _, _ in running} == {node_id(node1), node_id(cluster.nodes[1])}, running
    assert page(node1)[0] == 200
    listed = cluster.inv("releases", "--cluster", "prod").stdout
    assert re.search(rf"^\* +{previous}", listed, re.M), listed


def stack_objects(node1) -> dict[str, set[str]]:
    return {kind: set(node1.docker(kind, "ls", "--filter", f"label=com.docker.stack.namespace={PROJECT}",
                                   "--format", "{{.Name}}").stdout.split()) for kind in ("network", "secret", "config")}


def test_a_deploy_whose_migration_fails_leaves_the_live_release_serving_and_nothing_behind(cluster):
    node1, node2 = cluster.nodes
    listed = cluster.inv("releases", "--cluster", "prod").stdout
    running, objects = replicas(node1), stack_objects(node1)
    dirs = {node: sorted(p.name for p in (node.dir / "srv/releases").iterdir()) for node in cluster.nodes}
    broken = cluster.root / "hello/notes/migrations/0004_broken.py"
    broken.write_text("from django.db import migrations\n\n\ndef fail(apps, schema_editor):\n"
                      "    raise RuntimeError('a broken migration')\n\n\n"
                      "class Migration(migrations.Migration):\n    dependencies = [('notes', '0003_tick_task_id_and_scheduled')]\n"
                      "    operations = [migrations.RunPython(fail)]\n")
    try:
        result = cluster.inv("deploy", "--cluster", "prod", check=False, timeout=1800)
    finally:
        broken.unlink()
    assert result.returncode == 1 and "running the release phase" in result.stderr, (result.stdout, result.stderr)
    # The live release serves on, untouched; the failed one is gone from every node, and
    # what its `docker stack deploy` would have made in Swarm is not there either.
    assert cluster.inv("releases", "--cluster", "prod").stdout == listed
    assert sorted(replicas(node1)) == sorted(running) and page(node1)[0] == 200 and page(node2)[0] == 200
    assert {node: sorted(p.name for p in (node.dir / "srv/releases").iterdir()) for node in cluster.nodes} == dirs
    assert stack_objects(node1) == objects
    assert not (node1.dir / "srv/.deploy-lock").exists()


def running_tasks(node1, service: str) -> list[str]:
    """The ids of SERVICE's tasks meant to be running: a restart gives a new one."""
    return node1.docker("service", "ps", "--quiet", "--filter", "desired-state=running",
                        f"{PROJECT}_{service}").stdout.split()


def swarm_objects(node1) -> dict[str, set[str]]:
    """Every service, secret, config and network of the swarm (of any stack, or none)."""
    return {kind: set(node1.docker(kind, "ls", "--format", "{{.Name}}").stdout.split())
            for kind in ("service", "secret", "config", "network")}


def test_a_deploy_that_adds_a_database_and_fails_leaves_no_service_secret_config_or_network_it_made(cluster):
    node1, node2 = cluster.nodes
    listed = cluster.inv("releases", "--cluster", "prod").stdout
    images, objects = {image for _, _, image in replicas(node1)}, swarm_objects(node1)
    database1 = running_tasks(node1, "database1")
    stack_toml, secret = cluster.root / "config/stack.toml", cluster.root / "config/secrets/database2_password"
    kept = stack_toml.read_text()
    broken = cluster.root / "hello/notes/migrations/0004_broken.py"
    try:
        cluster.inv("db.add", "database2")
        cluster.inv("swarm.init", "--cluster", "prod", timeout=300)  # node1 labelled for database2
        broken.write_text("from django.db import migrations\n\n\ndef fail(apps, schema_editor):\n"
                          "    raise RuntimeError('a broken migration')\n\n\n"
                          "class Migration(migrations.Migration):\n    dependencies = [('notes', '0003_tick_task_id_and_scheduled')]\n"
                          "    operations = [migrations.RunPython(fail)]\n")
        started = time.time()
        with Load(f"http://127.0.0.1:{PORT}", ["nsenter", f"--net={node1.netns}"]) as seen:
            result = cluster.inv("deploy", "--cluster", "prod", check=False, timeout=1800)
        took = time.time() - started
    finally:
        broken.unlink(missing_ok=True)
        stack_toml.write_text(kept)
        secret.unlink(missing_ok=True)
        cluster.inv("render")
    print(result.stdout, result.stderr)
    failed = sum(seen.wrk_errors.values()) + seen.non_2xx
    record("failed-database-deploy", {"requests": seen.requests, "failed": failed, "longest_gap_s": seen.longest_gap,
                                      "probe_failures_s": [[round(at - started, 1), status, body]
                                                           for at, status, body in seen.probe_failures],
                                      "deploy_s": round(took, 1)})
    # It failed after `docker stack deploy` made database2's service, network and secrets.
    assert result.returncode == 1 and "running the release phase" in result.stderr, (result.stdout, result.stderr)
    assert f"service {PROJECT}_database2" in result.stdout and f"network {PROJECT}_database2_network" in result.stdout
    # Swarm refused to remove none of it (the undo's own lines; the build log quotes other warnings).
    assert not re.search(r"^warning: ", result.stdout, re.M), result.stdout
    # Nothing it made is left in the swarm; the live release serves on, as it was, and
    # served every request meanwhile.
    assert swarm_objects(node1) == objects
    assert cluster.inv("releases", "--cluster", "prod").stdout == listed
    running = replicas(node1)
    assert len(running) == 2 and all(state == "running" for _, state, _ in running), running
    assert {image for _, _, image in running} == images, running
    assert page(node1)[0] == 200 and page(node2)[0] == 200
    assert seen.requests > 100 and failed == 0, seen.wrk_output
    # database1 was never restarted (each secret is named by its own digest: database2's
    # left database1's as it was), so /healthz, which asks every database, failed no request.
    assert running_tasks(node1, "database1") == database1
    assert seen.probe_failures == [] and seen.longest_gap < 15, (seen.probe_failures, seen.longest_gap)


def spread_out(node1) -> None:
    """The app's replicas on both nodes, as a deploy leaves them (the product spreads them
    after each deploy and rollback). The failed deploy before this test is undone by Swarm's
    own rollback, which places replicas without that spread: both on one node is possible
    until the next deploy (a gap said in the note, not tested here). Spread the product's
    way: one replica more (the emptiest node), then one fewer (from the fullest)."""
    deadline = time.monotonic() + 180
    while len(replicas(node1)) != 2 or any(state != "running" for _, state, _ in replicas(node1)):
        assert time.monotonic() < deadline, replicas(node1)
        time.sleep(2)
    if len({where for where, _, _ in replicas(node1)}) == 2:
        return
    for count in (3, 2):
        node1.docker("service", "scale", "--detach", f"{PROJECT}_djangoapp={count}")
        while len(replicas(node1)) != count or any(state != "running" for _, state, _ in replicas(node1)):
            assert time.monotonic() < deadline, replicas(node1)
            time.sleep(2)
    assert len({where for where, _, _ in replicas(node1)}) == 2, replicas(node1)


def test_a_lost_node_leaves_the_site_up_and_its_replica_restarts_on_the_other(cluster):
    node1, node2 = cluster.nodes
    first = node_id(node1)
    spread_out(node1)
    with Load(f"http://127.0.0.1:{PORT}", ["nsenter", f"--net={node1.netns}"]) as seen:
        lost = time.monotonic()
        node2.stop_engine()  # the engine and every container of node2 gone
        full = None
        while time.monotonic() - lost < 240:
            running = replicas(node1)
            if len(running) == 2 and all(where == first and state == "running" for where, state, _ in running):
                full = time.monotonic() - lost
                break
            time.sleep(1)
    failed = sum(seen.wrk_errors.values()) + seen.non_2xx
    logs = node1.docker("service", "logs", "--raw", f"{PROJECT}_nginx", check=False)
    with open(f"{ARTIFACTS}/swarm-node-loss-nginx.txt", "w") as f:
        f.write("\n".join(line for line in (logs.stdout + logs.stderr).splitlines() if "[error]" in line or "[warn]" in line))
    # Every task of the app with its node, state and error: a replica that Swarm replaced
    # on node1 too (a failed health check under load, say) shows here.
    history = node1.docker("service", "ps", "--no-trunc", "--format", "{{.Node}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}",
                           f"{PROJECT}_djangoapp", check=False).stdout.splitlines()
    record("node-loss", {"requests": seen.requests, "failed": failed, "probe_failures": seen.probe_failures,
                         "longest_gap_s": seen.longest_gap, "full_strength_s": full and round(full, 1),
                         "tasks": history})
    node2.start_engine()
    assert full is not None, f"two replicas were not running on node1 within 240 s: {replicas(node1)}"
    assert page(node1)[0] == 200
    # The site kept answering through node1: only requests in flight on node2 may fail.
    # (Before deploys spread the replicas again, a rolling update could leave both on
    # node2, and its loss failed up to half the requests for ~20 s: Docker's DNS had no
    # replica to answer for the app until Swarm started them on node1.)
    assert failed <= seen.requests // 50 and seen.longest_gap < 15, (failed, seen.longest_gap, seen.wrk_output)


def test_a_worker_that_left_joins_again_and_the_token_it_used_is_rotated(cluster):
    node1, node2 = cluster.nodes
    node2.docker("swarm", "leave")
    node_id = node1.docker("node", "ls", "--filter", "role=worker", "--format", "{{.ID}}").stdout.split()[0]
    node1.docker("node", "rm", "--force", node_id)
    used = node1.docker("swarm", "join-token", "--quiet", "worker").stdout.strip()
    assert used.startswith("SWMTKN-")
    done = cluster.inv("swarm.init", "--cluster", "prod", timeout=300)
    assert "joined node2" in done.stdout and "made the swarm" not in done.stdout, done.stdout
    # The token went in on standard input: it is in none of our output, and it is void now.
    assert "SWMTKN" not in done.stdout + done.stderr
    assert node1.docker("swarm", "join-token", "--quiet", "worker").stdout.strip() != used
    assert node2.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "active"


def test_an_unreachable_worker_is_named_in_one_line_by_init_and_by_a_deploy(cluster):
    node1, node2 = cluster.nodes
    node2.link(False)
    try:
        init = cluster.inv("swarm.init", "--cluster", "prod", check=False, timeout=300)
        deploy = cluster.inv("deploy", "--cluster", "prod", check=False, timeout=300)
    finally:
        node2.link(True)
    for failed in (init, deploy):
        lines = [line for line in failed.stderr.splitlines() if line.strip()]
        assert failed.returncode == 1 and len(lines) == 1 and "node2" in lines[0], failed.stderr
    assert page(node1)[0] == 200  # the cluster serves on, untouched
