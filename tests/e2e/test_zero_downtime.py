"""No request dropped: every operation that changes what serves runs under constant load
(testkit/load.py: 16 keep-alive connections, a sequential probe, and slow requests that
must finish), on a test host with its own engine and sshd, and here for `inv up`.

Failed means a 5xx, a refused or reset connection, or a timeout; each operation must see 0.
The slow requests (a test-only view, on with DJANGO_TEST_VIEWS) run back to back: one is in
flight when traffic moves, and must complete.
"""
import json
import re
import subprocess
import time

import pytest

from testkit.load import Load
from testkit.projectcopy import copy_project
from testkit import INV

from .conftest import Stack, free_port

pytestmark = pytest.mark.e2e
PORT = 8080
PROJECT = "hello-e2e-zero"
SLOW = "/test/slow/?seconds=4"
MIGRATION = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0003_tick_task_id_and_scheduled")]
    operations = [migrations.AddField("note", "pinned", models.BooleanField(default=False))]
'''


class Host:
    def __init__(self, server, root):
        self.server, self.root = server, root
        self.dir = server.dir / "srv" / "hello"
        self.prefix = ["nsenter", f"--net={server.netns}"]

    def inv(self, *args, check=True):
        result = subprocess.run([*INV, *args], cwd=self.root, capture_output=True,
                                text=True, timeout=900, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"inv {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def deploy_timed(self, *args):
        """`inv deploy --host prod ARGS`, with the time at which Nginx was pointed at the new
        container (its output line, read as it comes)."""
        process = subprocess.Popen([*INV, "deploy", "--host", "prod", *args], cwd=self.root,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        lines, moved = [], None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Nginx sends requests to") and moved is None:
                moved = time.time()
        err = process.stderr.read()
        assert process.wait(timeout=900) == 0, "".join(lines) + err
        return "".join(lines), moved

    def load(self):
        return Load(f"http://127.0.0.1:{PORT}", self.prefix, slow_path=SLOW)

    def started_at(self):
        """When each container of the project started (a restart changes it)."""
        ids = self.server.docker("ps", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split()
        out = self.server.docker("inspect", "--format", "{{.Name}} {{.State.StartedAt}}", *ids).stdout
        return dict(line.lstrip("/").split() for line in out.splitlines())

    def current(self):
        return (self.dir / "current").resolve().name

    def page(self):
        status, _, body = self.server.get(f"http://127.0.0.1:{PORT}/")
        return status, body.decode()

    def edit(self, path, old, new):
        file = self.root / path
        text = file.read_text()
        assert old in text, (path, old)
        file.write_text(text.replace(old, new))


def assert_no_request_dropped(seen, what):
    print(f"{what}: {seen.summary()}")
    assert seen.requests > 100 and seen.probe_requests > 10, seen.summary()
    assert seen.failed == 0, f"{what}: {seen.summary()}\n{seen.wrk_output}"
    assert seen.slow and all(s[2] == 200 and s[3].startswith("slept") for s in seen.slow), seen.slow


@pytest.fixture(scope="module")
def host(servers, tmp_path_factory):
    server = servers("zero")
    root = copy_project(tmp_path_factory.mktemp("project"))
    with open(root / "config/stack.toml", "a") as handle:
        handle.write("\n" + server.hosts_entry("prod", str(server.dir / "srv" / "hello"), http_port=PORT,
                                               project=PROJECT))
    h = Host(server, root)
    # The host's settings, made before the first deploy (which keeps an existing file): the
    # test-only slow view on.
    shared = h.dir / "shared" / "config"
    shared.mkdir(parents=True, mode=0o700)
    (shared / "django.env").write_text((root / "config/django.env.example").read_text() + "DJANGO_TEST_VIEWS=true\n")
    (shared / "django.env").chmod(0o600)
    h.inv("deploy", "--host", "prod")
    assert h.page()[0] == 200
    h.first_release = h.current()
    h.before = h.started_at()
    return h


def test_a_code_change_deploy_drops_nothing_and_lets_the_slow_request_finish(host):
    host.edit("hello/hello/templates/hello/index.html", "Hello from Django", "Hello from release two")
    with host.load() as seen:
        out, moved = host.deploy_timed()
    assert_no_request_dropped(seen, "code change deploy")
    assert "Hello from release two" in host.page()[1]
    assert re.search(r"drained and removed \S+-djangoapp-\d", out), out
    # A slow request was in flight when traffic moved, and completed (on the old container).
    assert moved and any(s[0] < moved - 0.5 < s[1] and s[2] == 200 for s in seen.slow), (moved, seen.slow)
    after = host.started_at()
    # The databases, Nginx and the front kept running: only the app container is new.
    for name, started in host.before.items():
        if "-djangoapp-" not in name:
            assert after.get(name) == started, f"{name} was restarted"
    host.release_two = host.current()


def test_a_deploy_with_a_migration_that_adds_a_column_drops_nothing(host):
    host.edit("hello/notes/models.py", "    created = models.DateTimeField(auto_now_add=True)\n",
              "    created = models.DateTimeField(auto_now_add=True)\n    pinned = models.BooleanField(default=False)\n")
    (host.root / "hello/notes/migrations/0004_note_pinned.py").write_text(MIGRATION)
    with host.load() as seen:
        result = host.inv("deploy", "--host", "prod")
    assert_no_request_dropped(seen, "migration deploy")
    assert "Applying notes.0004_note_pinned... OK" in result.stdout
    ledger = json.loads((host.dir / "current" / "release.json").read_text())
    assert "notes.0004_note_pinned" in ledger["migrations"]["database1"]
    assert ledger["image"].startswith("sha256:") and ledger["deployed_by"]


def test_an_unchanged_redeploy_drops_nothing_and_restarts_nothing(host):
    before = host.started_at()
    with host.load() as seen:
        result = host.inv("deploy", "--host", "prod")
    assert_no_request_dropped(seen, "unchanged redeploy")
    assert "runs this code already" in result.stdout
    assert host.started_at() == before


def test_releases_lists_the_ledger_newest_first_with_the_live_one_marked(host):
    out = host.inv("releases", "--host", "prod").stdout
    rows = [line for line in out.splitlines() if re.search(r"\d{8}T\d{6}Z-", line)]
    assert len(rows) == 3
    assert rows[0].startswith("*") and host.current() in rows[0]
    assert host.first_release in rows[-1]
    counts = [int(re.search(r"database1 (\d+)", row).group(1)) for row in rows]
    assert counts[0] == counts[1] + 1 == counts[2] + 1  # the newest added one migration


def test_a_rollback_past_a_migration_is_refused_and_names_it(host):
    live = host.current()
    result = host.inv("rollback", "--host", "prod", check=False)
    assert result.returncode == 1
    assert "notes.0004_note_pinned" in result.stderr and "--force" in result.stderr
    assert host.current() == live


def test_a_forced_rollback_drops_nothing_and_says_what_stays_applied(host):
    with host.load() as seen:
        result = host.inv("rollback", "--host", "prod", "--force")
    assert_no_request_dropped(seen, "rollback")
    assert "these stay applied" in result.stdout and "notes.0004_note_pinned" in result.stdout
    assert host.current() == host.release_two
    assert "Hello from release two" in host.page()[1]


def test_rollback_to_a_named_release_drops_nothing(host):
    # Back to the newest release (the one with the migration): its code knows everything.
    newest = sorted(p.name for p in (host.dir / "releases").iterdir())[-1]
    with host.load() as seen:
        result = host.inv("rollback", "--host", "prod", "--to", newest)
    assert_no_request_dropped(seen, "rollback --to")
    assert "every migration applied is known" in result.stdout
    assert host.current() == newest


def test_a_change_of_the_nginx_configuration_is_a_reload(host):
    before = host.started_at()
    host.edit("config/stack.toml", 'client_max_body_size = "20m"', 'client_max_body_size = "30m"')
    host.inv("render")
    with host.load() as seen:
        host.inv("deploy", "--host", "prod")
    assert_no_request_dropped(seen, "nginx configuration change")
    assert "client_max_body_size 30m;" in (host.dir / "shared/config/nginx/default.conf").read_text()
    after = host.started_at()
    nginx = [name for name in before if "-nginx-" in name or "-front-" in name or "-database1-" in name]
    assert len(nginx) == 3 and all(after[name] == before[name] for name in nginx)


def test_static_drops_nothing(host):
    with host.load() as seen:
        host.inv("static", "--host", "prod")
    assert_no_request_dropped(seen, "inv static")


def test_a_release_failing_its_health_check_never_takes_traffic(host):
    live = host.current()
    health = host.root / "config/app/djangostack/wsgi.py"
    good = health.read_text()
    broken = good.replace('    healthy = all(state == "ok" for state in databases.values())',
                          '    healthy = False  # a broken release')
    assert broken != good
    health.write_text(broken)
    try:
        with host.load() as seen:
            result = host.inv("deploy", "--host", "prod", "--timeout", "25", check=False)
    finally:
        health.write_text(good)
    assert_no_request_dropped(seen, "failing deploy")
    assert result.returncode == 1
    assert "did not become healthy within 25s" in result.stderr and "still serves" in result.stderr
    assert host.current() == live
    names = host.started_at()
    assert len([n for n in names if "-djangoapp-" in n]) == 1


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    s = Stack(f"{PROJECT}-local", free_port(0), root=copy_project(tmp_path_factory.mktemp("local")))
    s.purge()
    (s.root / "config/django.env").write_text((s.root / "config/django.env.example").read_text()
                                              + "DJANGO_TEST_VIEWS=true\n")
    (s.root / "config/django.env").chmod(0o600)
    s.inv("up")
    yield s
    s.purge()


def test_local_up_after_a_code_change_drops_nothing(local):
    template = local.root / "hello/hello/templates/hello/index.html"
    template.write_text(template.read_text().replace("Hello from Django", "Hello again"))
    started = time.monotonic()
    with Load(local.url, slow_path=SLOW) as seen:
        local.inv("up")
    print(f"local inv up under load: {time.monotonic() - started:.1f}s")
    assert_no_request_dropped(seen, "local inv up")
    assert b"Hello again" in local.get("/")[2]
    assert len([c for c in local.containers()]) == 4  # database1, djangoapp, nginx, front
