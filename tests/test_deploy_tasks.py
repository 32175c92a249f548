"""The tasks of tasks/deploy.py (`inv deploy`, `inv rollback`, `inv releases`,
`inv deploy.unlock`) as the command line calls them: the source of truth and the SSH
connection are the only stand-ins (tasks.cli's `load` and `connect`), each connection a
strict recorder (tests/cluster_fakes.py) that fails on a command it was not told of. The
steps of a deploy and a rollback are tested with their procedures (tests/test_deploy_steps.py,
tests/test_cluster_procedures.py); here, what the task bodies hand them and print."""
from __future__ import annotations

import re
import shlex

import pytest
from invoke import Config, MockContext

from tasks import cli, deploy, lifecycle
from tasks.errors import TaskError
from tasks.plans import compose, ledger
from tasks.plans import release as plans
from tasks.procedures import cluster_release, release
from tests.cluster_fakes import StrictNode, commands
from tests.stacks import NODES, PROD, SWARM, stack

STACK = stack(PROD, NODES, SWARM)
NEW = "20261121T000000Z-abcdef012345"
OLD = "20261120T000000Z-0123456789ab"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ENGINE = [shlex.join(compose.engine_version()), shlex.join(compose.compose_version())]
ELSEWHERE = "bob@elsewhere.invalid pid 7 since 2026-11-21T10:00:00+00:00"


def bash(script):
    return f"bash -c {shlex.quote(script)}"


CURRENT = bash(plans.current_release("/srv/hello"))
LEDGERS = bash(ledger.read_all("/srv/hello"))
RELEASE_LOCK = bash(plans.release_lock("/srv/hello"))
LOCK_HOLDER = bash(plans.lock_holder("/srv/hello"))
OWNER = bash(plans.directory_owner("/srv/hello"))
TAKE_LOCK = r"bash -c 'mkdir -p -m 700 /srv/hello; i=0; while ! mkdir /srv/hello/\.deploy-lock .*"


class Connection(StrictNode):
    """A host's connection: the task closes it when done."""

    closed = False

    def close(self):
        self.closed = True


def host_rules(**answers):
    """The commands a host answers: ANSWERS (exact command: stdout), the engine's version, and
    whose the directory is (no project's yet, unless ANSWERS says)."""
    return [*((re.escape(command), out) for command, out in answers.items()),
            *((re.escape(command), "28.2.2\n") for command in ENGINE), (re.escape(OWNER), "")]


@pytest.fixture
def place(monkeypatch):
    """PLACE(**rules per host): the stack the tasks load, and the strict connection each
    host gets (the connections, by name)."""

    def make(**rules):
        conns = {}

        def connect(host, dry=False):
            conns[host.name] = Connection(host.name, rules.get(host.name, []))
            return conns[host.name]

        monkeypatch.setattr(cli, "load", lambda: STACK)
        monkeypatch.setattr(cli, "connect", connect)
        return conns

    return make


def c(**stack):
    return MockContext(run={}, config=Config(overrides={"stack": stack} if stack else None))


def ledgers(*releases):
    """What `ledger.read_all` prints for RELEASES, (name, served, migrations or None)."""
    text = ""
    for name, served, migrations in releases:
        text += f"== {name} {'yes' if served else 'no'}\n"
        if migrations is not None:
            body = ledger.entry(name, COMMIT, "sha256:5eed0123456789", "2026-11-20T00:00:00+00:00", "ann@desk",
                                migrations)
            text += "".join(f"|{line}\n" for line in body.splitlines())
        text += "\n"
    return text


class TestDeploy:
    def test_a_host_that_runs_this_code_already_gets_no_new_release(self, place, monkeypatch, capsys):
        monkeypatch.setattr(release.plans, "code_digest", lambda root, app: NEW.split("-")[1])
        monkeypatch.setattr(release.archives, "stamp", lambda: NEW.split("-")[0])
        ports, claim = bash(plans.port_holders([8000])), bash(plans.claim_directory("/srv/hello", "hello-prod"))
        conns = place(prod=[(TAKE_LOCK, ""), *host_rules(**{
            bash(plans.prepare_directories("/srv/hello")): "", CURRENT: f"releases/{NEW}\n", RELEASE_LOCK: "",
            ports: "", claim: "file hello-prod\n"})])
        deploy.deploy(c(), host="prod")
        ran = commands(conns["prod"])
        assert ran[:6] + ran[7:] == [*ENGINE, OWNER, ports, bash(plans.prepare_directories("/srv/hello")), claim,
                                     CURRENT, RELEASE_LOCK]
        assert re.fullmatch(TAKE_LOCK, ran[6], re.DOTALL)
        assert conns["prod"].closed
        assert capsys.readouterr().out == f"prod runs this code already ({NEW}): nothing to deploy\n"

    @pytest.mark.parametrize("flags, config, given", [
        ({}, {}, (5, 180, False)),
        ({}, {"keep_releases": 2, "timeout": 60}, (2, 60, False)),
        ({"keep": 3, "timeout": 30, "ship_image": True}, {"keep_releases": 2, "timeout": 60}, (3, 30, True)),
    ], ids=["defaults", "config", "flags-beat-config"])
    def test_a_cluster_deploy_gets_the_cluster_and_the_flags_over_config(self, place, monkeypatch, flags, config,
                                                                         given):
        conns = place()
        asked = []
        monkeypatch.setattr(cluster_release, "deploy", lambda s, keep, timeout, ship_image: asked.append(
            (s.cluster.name, sorted(s.nodes), keep, timeout, ship_image)))
        deploy.deploy(c(**config), cluster="swarm", **flags)
        assert asked == [("swarm", ["node1", "node2"], *given)]
        assert {name: (commands(conn), conn.closed) for name, conn in conns.items()} == {
            "node1": ([], True), "node2": ([], True)}

    @pytest.mark.parametrize("where", [{}, {"host": "prod", "cluster": "swarm"}], ids=["neither", "both"])
    def test_a_host_or_a_cluster_one_of_the_two(self, place, where):
        conns = place()
        with pytest.raises(TaskError) as failed:
            deploy.deploy(c(), **where)
        assert failed.value.message == "error: name a host (--host NAME) or a cluster (--cluster NAME), one of the two"
        assert conns == {}


class TestRollback:
    def test_a_host_with_no_release_before_the_live_one_is_refused_under_the_lock(self, place):
        conns = place(prod=[(TAKE_LOCK, ""), *host_rules(**{
            CURRENT: f"releases/{NEW}\n", LEDGERS: ledgers((NEW, True, {"database1": []})), RELEASE_LOCK: ""})])
        with pytest.raises(TaskError) as failed:
            deploy.rollback(c(), host="prod")
        assert failed.value.message == f"error: no release before {NEW} on prod to roll back to"
        ran = commands(conns["prod"])
        assert ran[0] == OWNER
        assert re.fullmatch(TAKE_LOCK, ran[1], re.DOTALL) and ran[2:] == [CURRENT, LEDGERS, RELEASE_LOCK]

    def test_a_cluster_rollback_gets_the_release_the_force_and_the_timeout(self, place, monkeypatch):
        place()
        asked = []
        monkeypatch.setattr(cluster_release, "rollback", lambda s, timeout, to, force: asked.append(
            (s.cluster.name, timeout, to, force)))
        deploy.rollback(c(timeout=90), cluster="swarm", to=OLD, force=True)
        deploy.rollback(c(timeout=90), cluster="swarm", timeout=15)
        assert asked == [("swarm", 90, OLD, True), ("swarm", 15, None, False)]


class TestReleases:
    def test_a_hosts_releases_newest_first_the_live_one_marked(self, place, capsys):
        listed = ledgers((OLD, True, None), (NEW, True, {"database1": ["a.1", "b.1"]}))
        conns = place(prod=host_rules(**{CURRENT: f"releases/{NEW}\n", LEDGERS: listed}))
        deploy.releases(c(), host="prod")
        assert commands(conns["prod"]) == [OWNER, CURRENT, LEDGERS]
        assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
            ["release", "commit", "deployed", "at", "by", "image", "migrations"],
            ["*", NEW, COMMIT[:12], "2026-11-20T00:00:00+00:00", "ann@desk", "5eed01234567", "database1", "2"],
            [OLD, "-", "-", "-", "-", "-"],
        ]

    def test_a_host_without_releases_says_so(self, place, capsys):
        place(prod=host_rules(**{CURRENT: "", LEDGERS: ""}))
        deploy.releases(c(), host="prod")
        assert capsys.readouterr().out == "no releases on prod yet\n"

    def test_a_clusters_releases_are_read_on_its_manager(self, place, capsys):
        conns = place(node1=host_rules(**{CURRENT: f"releases/{OLD}\n", LEDGERS: ledgers((OLD, True, None))}))
        deploy.releases(c(), cluster="swarm")
        assert commands(conns["node1"]) == [OWNER, CURRENT, LEDGERS] and commands(conns["node2"]) == []
        assert capsys.readouterr().out.splitlines()[1].split() == ["*", OLD, "-", "-", "-", "-", "-"]


class TestAnotherProjectsDirectory:
    """A host entry whose directory holds another project's releases: every task on those
    releases is refused in one line, before it reads or changes anything more."""

    REFUSAL = ("error: /srv/hello on prod belongs to project hello-b (/srv/hello/project), not hello-prod: give "
               "[hosts.prod] a directory of its own (each project deploys into its own)")

    @pytest.mark.live_state
    @pytest.mark.parametrize("task, args", [
        (deploy.releases, {}), (deploy.unlock, {"force": True}), (deploy.rollback, {}), (deploy.deploy, {}),
        (lifecycle.up, {}),
    ], ids=["releases", "unlock", "rollback", "deploy", "up"])
    def test_is_refused(self, place, task, args):
        conns = place(prod=host_rules(**{OWNER: "file hello-b\n"}))
        with pytest.raises(TaskError) as failed:
            task(c(), host="prod", **args)
        assert failed.value.message == self.REFUSAL
        assert [command for command in commands(conns["prod"]) if command not in ENGINE] == [OWNER]


class TestUnlock:
    @pytest.mark.parametrize("holder, said", [
        (ELSEWHERE, f"released the deploy lock on prod (held by {ELSEWHERE})"),
        ("", "released the deploy lock on prod (it was not held)"),
    ], ids=["held-elsewhere", "not-held"])
    def test_with_force_the_lock_is_released_and_the_task_says_whose_it_was(self, place, capsys, holder, said):
        conns = place(prod=host_rules(**{LOCK_HOLDER: holder + "\n" if holder else "", RELEASE_LOCK: ""}))
        deploy.unlock(c(), "prod", force=True)
        assert commands(conns["prod"]) == [OWNER, LOCK_HOLDER, RELEASE_LOCK] and conns["prod"].closed
        assert capsys.readouterr().out == said + "\n"

    def test_a_lock_held_elsewhere_stays_without_force(self, place):
        conns = place(prod=host_rules(**{LOCK_HOLDER: ELSEWHERE + "\n"}))
        with pytest.raises(TaskError, match=re.escape("release the lock with `inv deploy.unlock --host prod --force`")):
            deploy.unlock(c(), "prod")
        assert commands(conns["prod"]) == [OWNER, LOCK_HOLDER]

    def test_a_dry_run_releases_nothing(self, place, capsys):
        conns = place(prod=host_rules(**{LOCK_HOLDER: ELSEWHERE + "\n"}))
        deploy.unlock(c(), "prod", force=True, dry=True)
        assert commands(conns["prod"]) == []
        assert capsys.readouterr().out.splitlines() == [
            f"[dry] [prod:/srv/hello/current] {plans.directory_owner('/srv/hello')}",
            f"[dry] [prod:/srv/hello/current] {plans.lock_holder('/srv/hello')}",
            f"[dry] [prod:/srv/hello/current] {plans.release_lock('/srv/hello')}"]

    def test_one_host_at_a_time(self, place):
        conns = place()
        with pytest.raises(TaskError) as failed:
            deploy.unlock(c(), "prod,node1")
        assert failed.value.message == "error: name a single host: this task runs on one host at a time"
        assert conns == {}
