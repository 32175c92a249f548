"""A cluster of two test hosts (each its own address, engine and sshd) made one Docker Swarm
by `inv swarm.init`, over SSH, as [clusters.NAME] in config/stack.toml says."""
import re

import pytest

from tests.e2e.conftest import Stack, free_port
from testkit.projectcopy import copy_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(servers, tmp_path_factory):
    node1, node2 = servers("swarm-1", images=()), servers("swarm-2", images=())
    root = copy_project(tmp_path_factory.mktemp("swarm") / "project")
    stack = root / "config/stack.toml"
    stack.write_text(stack.read_text() + "\n" + node1.hosts_entry("node1", f"{node1.dir}/srv")
                     + node2.hosts_entry("node2", f"{node2.dir}/srv")
                     + '\n[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\nreplicas = 2\n'
                       'endpoint_mode = "dnsrr"\npublish_mode = "host"\n')
    s = Stack("hello-e2e-swarm", free_port(0), root=root)
    s.inv("render")
    s.nodes = (node1, node2)
    return s


def test_swarm_init_makes_one_swarm_then_a_second_run_changes_nothing(cluster):
    node1, node2 = cluster.nodes
    made = cluster.inv("swarm.init", "--cluster", "prod", timeout=300).stdout
    assert "made the swarm on node1" in made and "joined node2" in made, made
    assert "node1 labelled hello.database.database1" in made, made
    listed = node1.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").stdout.splitlines()
    assert len(listed) == 2 and all(" Ready" in line for line in listed), listed
    assert node2.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "active"
    labels = node1.docker("node", "inspect", "--format", "{{json .Spec.Labels}}", "self").stdout
    assert '"hello.database.database1":"true"' in labels, labels
    again = cluster.inv("swarm.init", "--cluster", "prod", timeout=300).stdout
    assert "swarm prod is as configured (2 nodes): nothing changed" in again, again
    status = cluster.inv("swarm.status", "--cluster", "prod").stdout
    assert len(re.findall(r"^\S+ +Ready +Active", status, re.M)) == 2, status
    assert "no services of this stack yet" in status


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


def test_an_unreachable_worker_is_named_in_one_line(cluster):
    node1, node2 = cluster.nodes
    node2.link(False)
    try:
        failed = cluster.inv("swarm.init", "--cluster", "prod", check=False, timeout=300)
    finally:
        node2.link(True)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 1 and len(lines) == 1 and "node2" in lines[0], failed.stderr
