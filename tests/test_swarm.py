"""[clusters.NAME] in config/stack.toml and the plans of `inv swarm.*` (run for real on two
test hosts in tests/e2e/test_swarm.py)."""
import json
import re

import pytest
from invoke import Result

from tasks.errors import StackError
from tasks.plans import swarm as plans
from tasks.source.stack import DIGEST, TAG, loads, swarm_names
from tests.fakes import Recorder
from tests.stacks import COMMITTED

BASE = COMMITTED + """
[hosts.node1]
address = "10.0.0.1"
directory = "/srv/hello"
[hosts.node2]
address = "10.0.0.2"
directory = "/srv/hello"
"""


def test_a_cluster_pins_every_database_to_the_manager_unless_told():
    cluster = loads(BASE + '[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\n').clusters["prod"]
    assert cluster.nodes == ("node1", "node2") and cluster.replicas == 2
    assert cluster.placement == (("database1", "node1"),)
    assert (cluster.endpoint_mode, cluster.publish_mode) == ("vip", "ingress")
    pinned = loads(BASE + '[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\ndatabases = { database1 = "node2" }\n'
                          'endpoint_mode = "dnsrr"\npublish_mode = "host"\nreplicas = 3\n').clusters["prod"]
    assert pinned.placement == (("database1", "node2"),) and pinned.replicas == 3
    assert (pinned.endpoint_mode, pinned.publish_mode) == ("dnsrr", "host")


@pytest.mark.parametrize("entry, message", [
    ('manager = "nodeX"', "'nodeX' is not a [hosts] name"),
    ('manager = "node1"\nworkers = ["node1"]', "a host is named twice"),
    ('manager = "node1"\nworkers = "node2"', "workers must be a list"),
    ('manager = "node1"\nreplicas = 0', "replicas 0 is not valid"),
    ('manager = "node1"\ndatabases = { nosuch = "node1" }', "databases must map database names"),
    ('manager = "node1"\ndatabases = { database1 = "node2" }', "pinned to 'node2', which is not one of its nodes"),
    ('manager = "node1"\nendpoint_mode = "ipvs"', "endpoint_mode 'ipvs' is not valid: one of vip, dnsrr"),
    ('manager = "node1"\nregistry = "x"', "unknown setting(s) registry"),
], ids=["unknown-host", "twice", "workers-string", "no-replicas", "unknown-db", "db-elsewhere", "endpoint", "unknown-key"])
def test_bad_clusters_are_refused_in_one_line(entry, message):
    with pytest.raises(StackError, match=None) as caught:
        loads(BASE + f"[clusters.prod]\n{entry}\n")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_cluster_names_the_known_ones():
    stack = loads(BASE + '[clusters.prod]\nmanager = "node1"\n')
    with pytest.raises(StackError, match="unknown cluster 'staging'.*known: prod"):
        stack.cluster("staging")


def test_a_node_state_comes_from_docker_info():
    worker = plans.parse_info(json.dumps({"LocalNodeState": "active", "NodeID": "abc", "ControlAvailable": False}))
    assert worker.member and not worker.manager and worker.cluster_id == ""
    assert plans.parse_info('{"LocalNodeState": "inactive", "NodeID": ""}').state == "inactive"
    manager = plans.parse_info(json.dumps({"LocalNodeState": "active", "NodeID": "m", "ControlAvailable": True,
                                           "Cluster": {"ID": "c1"}}))
    assert manager.manager and manager.cluster_id == "c1"


def test_the_commands_of_a_swarm():
    assert plans.init("10.0.0.1") == ["docker", "swarm", "init", "--advertise-addr", "10.0.0.1"]
    assert plans.init(None) == ["docker", "swarm", "init"]
    assert plans.join_script("10.0.0.1", None) == 'read -r token && exec docker swarm join --token "$token" 10.0.0.1:2377'
    # The join token comes on standard input, never in our command line.
    assert plans.join_script("10.0.0.1", "10.0.0.2") == (
        'read -r token && exec docker swarm join --token "$token" --advertise-addr 10.0.0.2 10.0.0.1:2377')
    assert plans.rotate_join_token() == ["docker", "swarm", "join-token", "--rotate", "--quiet", "worker"]
    assert plans.update_labels("n1", ["hello.database.database1"], ["hello.database.old"]) == [
        "docker", "node", "update", "--label-add", "hello.database.database1=true", "--label-rm", "hello.database.old", "n1"]


def test_labels_change_only_where_they_differ():
    node = {"Spec": {"Labels": {"hello.database.database1": "true", "other": "x", "hello.database.old": "true"}}}
    node["Spec"]["Labels"]["other-project.database.database1"] = "true"  # never ours to touch
    assert plans.label_changes(node, {"hello.database.database1", "hello.database.d2"}, "hello.database.") == (
        ["hello.database.d2"], ["hello.database.old"])
    assert plans.label_changes(node, {"hello.database.database1", "hello.database.old"}, "hello.database.") == ([], [])
    assert plans.database_label("hello-e2e", "database1") == "hello-e2e.database.database1"


def test_a_stack_deploy_takes_its_variables_in_its_environment_and_never_asks_a_registry():
    argv = plans.deploy_stack("docker-stack.prod.yml", "hello", {"APP_IMAGE": "hello-djangoapp:abc", "APP_REPLICAS": "2"})
    assert argv == ["env", "APP_IMAGE=hello-djangoapp:abc", "APP_REPLICAS=2", "docker", "stack", "deploy",
                    "--compose-file", "docker-stack.prod.yml", "--prune", "--resolve-image", "never", "hello"]


def test_a_job_has_the_apps_settings_secrets_networks_and_volumes_and_no_retry():
    argv = plans.job("hello-migrate-database1-abc", "replicated-job", "hello-djangoapp:abc",
                     ["python", "manage.py", "migrate"], env={"DJANGO_DATABASES": "database1"},
                     env_file="/srv/hello/shared/config/django.env",
                     secrets=[("hello_database1_password_v1", "database1_password")],
                     networks=["hello_database1_network"], mounts=[("hello_static_volume", "/srv/static")])
    assert argv == ["docker", "service", "create", "--detach", "--quiet", "--name", "hello-migrate-database1-abc",
                    "--mode", "replicated-job", "--restart-condition", "none",
                    "--env-file", "/srv/hello/shared/config/django.env",
                    "--log-driver", "json-file", "--log-opt", "max-file=3", "--log-opt", "max-size=10m",
                    "--env", "DJANGO_DATABASES=database1",
                    "--secret", "source=hello_database1_password_v1,target=database1_password,uid=10001,gid=10001,mode=0400",
                    "--network", "hello_database1_network",
                    "--mount", "type=volume,source=hello_static_volume,target=/srv/static",
                    "hello-djangoapp:abc", "python", "manage.py", "migrate"]


@pytest.mark.parametrize("states, expected, outcome", [
    ("", 1, None),
    ("Running 2 seconds ago|\n", 1, None),
    ("Complete 1 second ago|\n", 1, (True, "")),
    ("Complete 1 second ago|\n", 2, None),
    ("Complete 1 second ago|\nRunning 3 seconds ago|\n", 2, None),
    ("Complete 1 second ago|\nComplete 2 seconds ago|\n", 2, (True, "")),
    ("Failed 1 second ago|task: non-zero exit (1)\n", 1, (False, "task: non-zero exit (1)")),
    ("Complete 1 second ago|\nRejected 2 seconds ago|no suitable node\n", 2, (False, "no suitable node")),
], ids=["none-yet", "running", "done", "one-of-two", "one-running", "both-done", "failed", "one-rejected"])
def test_a_job_is_over_when_every_task_has_finished(states, expected, outcome):
    assert plans.job_outcome(states, expected) == outcome


def test_the_stack_file_is_rendered_per_cluster_and_its_nginx_faces_the_clients():
    import yaml

    from tasks.source import render

    stack = loads(BASE + '[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\nreplicas = 3\n'
                         'endpoint_mode = "dnsrr"\npublish_mode = "host"\n')
    files = render.rendered(stack)
    spec = yaml.safe_load(files[render.stack_file("prod")])
    app = spec["services"]["djangoapp"]["deploy"]
    assert app["replicas"] == "${APP_REPLICAS}" and app["endpoint_mode"] == "dnsrr"
    assert app["update_config"]["order"] == "start-first" and app["update_config"]["failure_action"] == "rollback"
    assert spec["services"]["nginx"]["deploy"]["mode"] == "global"
    assert spec["services"]["nginx"]["ports"][0]["mode"] == "host"
    assert spec["services"]["database1"]["deploy"]["placement"]["constraints"] == [
        "node.labels.${PROJECT}.database.database1 == true"]
    assert spec["networks"]["database1_network"] == {"driver": "overlay", "attachable": True}
    # Each secret and config named by its own file's digest: a new database's password, or a
    # new Nginx configuration, restarts only the services that use it.
    assert {key: secret["name"] for key, secret in spec["secrets"].items()} == {
        "django_secret_key": "${PROJECT}_django_secret_key_${VERSION_django_secret_key}",
        "database1_password": "${PROJECT}_database1_password_${VERSION_database1_password}"}
    assert spec["configs"]["app_role"]["name"] == "${PROJECT}_app_role_${VERSION_app_role}"
    # The cluster's own Nginx configuration is the one the stack mounts.
    assert spec["configs"]["nginx_site"]["file"] == "./config/nginx/cluster-prod.conf" and spec["version"] == "3.8"
    # Its Nginx believes no client header; the host's (behind the front) is unchanged.
    cluster_conf = files[render.cluster_nginx_conf("prod")]
    assert "real_ip_header" not in cluster_conf and "X-Forwarded-For $remote_addr" in cluster_conf
    assert "valid=5s" in cluster_conf and "proxy_connect_timeout 2s" in cluster_conf
    assert "real_ip_header X-Real-IP" in files[render.NGINX_CONF] and "valid=10s" in files[render.NGINX_CONF]
    assert render.stack_file("prod") not in render.rendered(loads(COMMITTED))


def test_a_cluster_with_backups_runs_the_backup_service_on_the_manager_with_its_own_secrets():
    import yaml

    from tasks.source import render

    stack = loads(BASE + '[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\n'
                         '[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic/hello"\n')
    spec = yaml.safe_load(render.rendered(stack)[render.stack_file("prod")])
    backup = spec["services"]["backup"]
    assert backup["image"] == "${BACKUP_IMAGE}" and backup["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert backup["environment"]["BACKUP_SECRETS_DIR"] == "/run/secrets" and backup["cap_drop"] == ["ALL"]
    # The service's user owns its secrets; the app's are not among them.
    targets = {s["target"]: s for s in backup["secrets"]}
    assert set(targets) == {"restic_password", "database1_password", "repository.env", "ssh_key", "known_hosts", "notify"}
    assert all((s["uid"], s["mode"]) == ("10002", 0o400) for s in targets.values())
    assert "django_secret_key" not in targets
    names = {key: value["name"] for key, value in spec["secrets"].items()}
    # Each named by its own file's digest: a new credential restarts the backup service alone.
    assert names["backup_restic_password"] == "${PROJECT}_backup_restic_password_${VERSION_backup_restic_password}"
    assert names["backup_repository.env"] == "${PROJECT}_backup_repository.env_${VERSION_backup_repository_env}"
    assert "/srv/restic/hello:/repository" in backup["volumes"] and "backup_state" in spec["volumes"]
    assert "backup" not in yaml.safe_load(render.rendered(loads(BASE + '[clusters.prod]\nmanager = "node1"\n'))[
        render.stack_file("prod")])["services"]


def test_digests_are_one_line_per_file_and_the_backup_image_is_tagged_by_its_id():
    script = plans.versions_script(["/c/secrets/a", "/c/secrets/b c", "/r/x.conf"])
    assert script == ("set -eo pipefail; sha256sum < /c/secrets/a | cut -c1-12; sha256sum < '/c/secrets/b c' | cut -c1-12; "
                      "sha256sum < /r/x.conf | cut -c1-12")
    built = plans.build_backup_image("hello", "/srv/r/config/backup", "postgres:15")
    assert "--build-arg POSTGRES_IMAGE=postgres:15 /srv/r/config/backup" in built and "hello-backup:$(" in built
    assert plans.exec_backup("abc", ["drill", "latest"])[-3:] == ["/usr/local/lib/hello-backup/backup.py", "drill", "latest"]


@pytest.mark.parametrize("placements, nodes, verdict", [
    (["b", "b"], ["a", "b"], True),           # both replicas on one node of two
    (["a", "b"], ["a", "b"], False),
    (["a", "a", "b"], ["a", "b"], False),     # three on two nodes: 2 and 1 is even
    (["a", "a", "a"], ["a", "b"], True),
    (["a"], ["a", "b"], False),               # one replica: nothing to spread
    (["a", "a"], ["a"], False),               # one node
    (["b", "b"], ["a", "b", "c"], True),
    (["x", "x"], ["a", "b"], False),          # a node that takes no tasks (down, drained) is not counted
], ids=["all-on-one", "even", "three-even", "three-on-one", "single", "one-node", "three-nodes", "node-gone"])
def test_replicas_are_unbalanced_when_a_node_runs_two_more_than_another(placements, nodes, verdict):
    assert plans.unbalanced(placements, nodes) is verdict


def test_only_ready_active_nodes_take_tasks():
    listed = "\n".join(json.dumps(n) for n in [{"ID": "a", "Status": "Ready", "Availability": "Active"},
                                                {"ID": "b", "Status": "Down", "Availability": "Active"},
                                                {"ID": "c", "Status": "Ready", "Availability": "Drain"}])
    assert plans.available_nodes(listed) == ["a"]


BACKUPS = '[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic/hello"\n'


@pytest.mark.parametrize("extra, project, message", [
    (BACKUPS, None, "database name '" + "d" * 30 + "' is too long for Swarm: the secret hello_backup_" + "d" * 30
     + "_password_<digest> would have 65 characters (at most 64); use at most 29 characters for it with project "
       "'hello' and [backups]"),
    ("", "p" * 30, "database name '" + "d" * 30 + "' is too long for Swarm: the secret " + "p" * 30 + "_" + "d" * 30
     + "_password_<digest> would have 83 characters (at most 64); use at most 11 characters for it with project '"
     + "p" * 30 + "'"),
    ("", "p" * 40, "project name '" + "p" * 40 + "' is too long for Swarm: the secret " + "p" * 40
     + "_django_secret_key_<digest> would have 71 characters (at most 64)"),
], ids=["backup-secret", "app-secret", "project"])
def test_a_name_too_long_for_swarm_is_refused_before_anything_is_deployed(extra, project, message):
    text = BASE.replace("[hosts.node1]\n", f'[hosts.node1]\nproject = "{project}"\n' if project else "[hosts.node1]\n") + f'[[databases]]\nname = "{"d" * 30}"\n' + extra + '[clusters.prod]\nmanager = "node1"\n'
    with pytest.raises(StackError) as caught:
        loads(text)
    assert str(caught.value) == f"config/stack.toml: [clusters.prod]: {message}"


def test_names_at_swarms_limits_are_taken_and_only_a_cluster_has_them():
    longest = "d" * 29
    stack = loads(BASE + f'[[databases]]\nname = "{longest}"\n' + BACKUPS + '[clusters.prod]\nmanager = "node1"\n')
    assert max(len(name) - limit for _, _, name, limit in swarm_names("hello", stack.databases, True)) == 0
    # Without a cluster no Swarm name is made: a compose host takes 30 characters.
    assert loads(BASE + f'[[databases]]\nname = "{"d" * 30}"\n' + BACKUPS).databases[-1].name == "d" * 30


def test_the_names_checked_are_those_the_stack_file_gives_swarm():
    import yaml

    from tasks.source import render

    stack = loads(BASE + '[[databases]]\nname = "reports"\n' + BACKUPS + '[clusters.prod]\nmanager = "node1"\n')
    spec = yaml.safe_load(render.rendered(stack)[render.stack_file("prod")])

    def named(entry):
        return re.sub(r"\$\{VERSION_\w+\}", DIGEST, entry["name"].replace("${PROJECT}", "hello"))

    made = {("secret", named(entry)) for entry in spec["secrets"].values()}
    made |= {("config", named(entry)) for entry in spec["configs"].values()}
    made |= {("service", f"hello_{name}") for name in spec["services"]}
    checked = {(kind, name) for _, kind, name, _ in swarm_names("hello", stack.databases, True)}
    assert made == {entry for entry in checked if entry[0] != "job"}
    assert {name for kind, name in checked if kind == "job"} == {f"hello-migrate-{db.name}-{TAG}"
                                                                for db in stack.databases} | {f"hello-static-{TAG}"}


def test_the_objects_of_a_stack_are_listed_by_its_label_and_removed_networks_last():
    assert plans.stack_objects("hello-prod", "network") == [
        "docker", "network", "ls", "--filter", "label=com.docker.stack.namespace=hello-prod", "--format", "{{.Name}}"]
    assert plans.remove_objects([("network", "hello_database1_network"), ("secret", "hello_b_1"),
                                 ("service", "hello_database2"), ("secret", "hello_a_1"),
                                 ("config", "hello_nginx_main_1")]) == [
        (("service", "hello_database2"), ["docker", "service", "rm", "hello_database2"]),
        (("secret", "hello_a_1"), ["docker", "secret", "rm", "hello_a_1"]),
        (("secret", "hello_b_1"), ["docker", "secret", "rm", "hello_b_1"]),
        (("config", "hello_nginx_main_1"), ["docker", "config", "rm", "hello_nginx_main_1"]),
        (("network", "hello_database1_network"), ["docker", "network", "rm", "hello_database1_network"])]
    assert plans.remove_objects([]) == []


class Manager(Recorder):
    """A swarm manager's engine: the stack's objects as (kind, name); `docker stack deploy`
    makes MADE then fails (as when Swarm refuses a name after it made the networks);
    `docker KIND rm` removes the names given but those IN_USE (and then fails)."""

    def __init__(self, objects, made, in_use=()):
        super().__init__()
        self.objects, self.made, self.in_use = set(objects), set(made), set(in_use)

    def run(self, command, **kwargs):
        result = super().run(command, **kwargs)
        words = command.split()
        if command in self.answers:
            return result
        if " docker stack deploy " in command:
            self.objects |= self.made
            return Result(stderr="failed to create secret: invalid name\n", exited=1, command=command)
        if len(words) > 2 and words[0] == "docker" and words[2] == "ls":
            names = sorted(name for kind, name in self.objects if kind == words[1])
            return Result(stdout="".join(f"{name}\n" for name in names), command=command)
        if len(words) > 2 and words[0] == "docker" and words[2] == "rm" and words[1] in plans.STACK_OBJECTS:
            self.objects -= {(words[1], name) for name in words[3:] if (words[1], name) not in self.in_use}
            if {(words[1], name) for name in words[3:]} & self.in_use:
                return Result(stderr="in use\n", exited=1, command=command)
        return Result(command=command)


def test_a_failed_stack_deploy_removes_the_secrets_and_networks_it_made_and_nothing_else(capsys):
    from tasks.errors import TaskError
    from tasks.execution.cluster import ClusterRun
    from tasks.execution.runner import Runner
    from tasks.execution.targets import HostTarget
    from tasks.procedures.cluster_release import SwarmRelease

    stack = loads(BASE + '[clusters.prod]\nmanager = "node1"\n')
    before = {("secret", "hello_django_secret_key_aaaaaaaaaaaa"), ("network", "hello_nginx_network")}
    made = {("secret", "hello_django_secret_key_bbbbbbbbbbbb"), ("secret", "hello_database1_password_bbbbbbbbbbbb"),
            ("network", "hello_database1_network"), ("config", "hello_nginx_main_bbbbbbbbbbbb")}
    # A service of the stack took the new database network before the failure: it stays.
    conn = Manager(before, made, in_use={("network", "hello_database1_network")})
    s = ClusterRun(stack.clusters["prod"], {"node1": Runner(HostTarget(conn, stack.hosts["node1"], stack), False)})
    place = SwarmRelease(s)
    d = place.context("20261121T000000Z-abcdef012345", None, 30)
    assert d.image == "hello-djangoapp:abcdef012345"
    place.env = {"PROJECT": "hello"}
    with pytest.raises(TaskError, match="docker stack deploy .*failed"):
        place.stack_deploy(d, d.image, 0, "docker stack deploy (databases)")
    listing = [" ".join(plans.stack_objects("hello", kind)).replace("{{.Name}}", "'{{.Name}}'")
               for kind in plans.STACK_OBJECTS]
    assert conn.commands[:4] == listing  # read before the stack is deployed
    place.undo(d, "bringing the databases up", "deploy failed", 1)
    removals = [c for c in conn.commands if " rm " in c and c.startswith("docker ")]
    assert removals == ["docker secret rm hello_database1_password_bbbbbbbbbbbb",
                        "docker secret rm hello_django_secret_key_bbbbbbbbbbbb",
                        "docker config rm hello_nginx_main_bbbbbbbbbbbb", "docker network rm hello_database1_network"]
    assert conn.objects == before | {("network", "hello_database1_network")}  # what was there before stays
    out = capsys.readouterr().out
    assert "removing what this deploy made in Swarm: config hello_nginx_main_bbbbbbbbbbbb, network " in out
    assert "warning: Swarm kept network hello_database1_network, still in use" in out
    assert conn.commands[-1].startswith("bash -c ") and "releases/20261121T000000Z-abcdef012345" in conn.commands[-1]


def test_an_undo_removes_nothing_when_the_stack_could_not_be_listed_first():
    from tasks.errors import TaskError
    from tasks.execution.cluster import ClusterRun
    from tasks.execution.runner import Runner
    from tasks.execution.targets import HostTarget
    from tasks.procedures.cluster_release import SwarmRelease

    stack = loads(BASE + '[clusters.prod]\nmanager = "node1"\n')
    conn = Manager(set(), {("network", "hello_database1_network")})
    conn.answers[" ".join(plans.stack_objects("hello", "config")).replace("{{.Name}}", "'{{.Name}}'")] = Result(
        exited=1, stderr="Cannot connect to the Docker daemon\n")
    s = ClusterRun(stack.clusters["prod"], {"node1": Runner(HostTarget(conn, stack.hosts["node1"], stack), False)})
    place = SwarmRelease(s)
    d = place.context("20261121T000000Z-abcdef012345", None, 30)
    place.env = {"PROJECT": "hello"}
    with pytest.raises(TaskError):
        place.stack_deploy(d, d.image, 0)
    place.undo(d, "bringing the databases up", "deploy failed", 1)
    assert not [c for c in conn.commands if " rm " in c and c.startswith("docker ")]
