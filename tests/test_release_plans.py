"""Deploy plans and host configuration, as data."""
import re
import subprocess

import pytest

from tasks.plans import release as shipping
from tasks.source.stack import Site, Host, StackError, loads
from tests.stacks import COMMITTED

BASE = COMMITTED
HOSTS = """
[hosts.prod]
address = "203.0.113.10"
user = "deploy"
identity_file = "/keys/id"
known_hosts = "/keys/known_hosts"
directory = "/srv/hello/"

[hosts.staging]
address = "203.0.113.11"
directory = "/srv/hello"
port = 2222
http_port = 8080
project = "hello-staging"

[groups]
web = ["prod", "staging"]
"""


class TestHosts:
    def test_parse_and_resolve(self):
        stack = loads(BASE + HOSTS)
        prod = stack.hosts["prod"]
        assert prod == Host(name="prod", address="203.0.113.10", directory="/srv/hello", user="deploy", port=22,
                            identity_file="/keys/id", known_hosts="/keys/known_hosts", site=Site())
        assert [h.name for h in stack.resolve_hosts("web")] == ["prod", "staging"]
        assert [h.name for h in stack.resolve_hosts("staging,prod,staging")] == ["staging", "prod"]

    def test_unknown_host_names_what_is_known(self):
        with pytest.raises(StackError, match=r"unknown host 'nope': add \[hosts.nope\] to config/stack.toml \(known: prod, staging, web\)"):
            loads(BASE + HOSTS).resolve_hosts("nope")

    @pytest.mark.parametrize("entry, message", [
        ('address = "a"', "needs directory"),
        ('address = "a"\ndirectory = "relative"', "directory 'relative' is not valid: an absolute path"),
        ('address = "a"\ndirectory = "/d"\npassword = "x"', "unknown setting(s) password (secrets never go here)"),
        ('address = "a"\ndirectory = "/d"\nport = "ssh"', "port 'ssh' is not a TCP port"),
        ('address = "-oProxyCommand=id"\ndirectory = "/d"', "address '-oProxyCommand=id' is not valid"),
        ('address = "a"\nuser = "-oProxyCommand=id"\ndirectory = "/d"', "user '-oProxyCommand=id' is not valid"),
        ('address = "a"\ndirectory = "/"', "directory '/' is not valid"),
        ('address = "a"\ndirectory = "/srv/../etc"', "directory '/srv/../etc' is not valid"),
        ('address = "a"\ndirectory = "/d"\nhttp_port = true', "http_port True is not a TCP port"),
        ('address = "a"\ndirectory = "/d"\nproject = "p\\n"', "project name 'p\\n' is not valid"),
    ], ids=["no-directory", "relative-directory", "a-secret", "bad-port", "option-address", "option-user",
            "root-directory", "dotdot-directory", "boolean-port", "newline-project"])
    def test_bad_host_entries(self, entry, message):
        with pytest.raises(StackError, match=re.escape(message)):
            loads(BASE + f"\n[hosts.x]\n{entry}\n")


def test_rsync_ships_only_what_the_stack_needs_with_strict_ssh():
    stack = loads(BASE + HOSTS)
    argv = shipping.rsync("/src", stack.hosts["prod"], "/srv/hello/releases/R", "/srv/hello/releases/P", stack.app)
    assert argv[:5] == ["rsync", "--archive", "--delete", "--stats", "--human-readable"]
    assert argv[5:7] == ["--rsh", "ssh -p 22 -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/keys/known_hosts "
                                  "-o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=4 "
                                  "-i /keys/id -o IdentitiesOnly=yes"]
    assert "--link-dest=/srv/hello/releases/P" in argv
    assert "--exclude=/config/db/*.env" in argv and "--exclude=/config/django.env" in argv
    assert "--include=/hello/***" in argv and argv[-3] == "--exclude=*"
    assert "--exclude=/hello/db.sqlite3" in argv and "--exclude=/hello/media/" in argv
    assert argv[-2:] == ["/src/", "deploy@203.0.113.10:/srv/hello/releases/R/"]


@pytest.mark.parametrize("stats, sent", [("Total bytes sent: 1,536\n", 1536), ("Total bytes sent: 2.50K\n", 2560),
                                         ("Total bytes sent: 1.00M", 1 << 20), ("nothing", 0)])
def test_bytes_sent(stats, sent):
    assert shipping.bytes_sent(stats) == sent


def test_shipped_files_leave_secrets_and_local_state_behind(tmp_path):
    for name in ["Dockerfile", "Pipfile", "config/stack.toml", "config/django.env", "config/db/database1.env",
                 "config/db/database1.env.example", "hello/manage.py", "hello/x/__pycache__/m.pyc", "tasks/db.py",
                 "backups/a.tar.zst", "hello/db.sqlite3"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    app = loads(BASE).app
    shipped = sorted(p.relative_to(tmp_path).as_posix() for p in shipping.shipped_files(tmp_path, app))
    # The tooling's Pipfile stays here: the image installs the project's requirements ([app]).
    assert shipped == ["Dockerfile", "config/db/database1.env.example", "config/stack.toml", "hello/manage.py"]
    digest = shipping.code_digest(tmp_path, app)
    (tmp_path / "config/django.env").write_text("another secret")
    assert shipping.code_digest(tmp_path, app) == digest  # secrets do not change the image tag
    (tmp_path / "hello/manage.py").write_text("changed")
    assert shipping.code_digest(tmp_path, app) != digest


def test_secret_generation_happens_on_the_host_and_never_overwrites():
    script, stdin = shipping.generate_secret_file("/srv/hello/shared/config/django.env", "KEY=@@GENERATED_SECRET@@\n")
    assert stdin == "KEY=@@GENERATED_SECRET@@\n"
    assert script.startswith("if test -e /srv/hello/shared/config/django.env; then cat > /dev/null; exit 0; fi; umask 077;")
    assert "head -c 64 /dev/urandom" in script and 'ENVIRON["SECRET"]' in script  # the value stays out of argv
    assert 'ln "$t" /srv/hello/shared/config/django.env' in script  # a link fails rather than replace a file


def test_release_env():
    text = shipping.release_env("hello-prod", 8080, "hello-prod-djangoapp:abc", "/srv/hello/shared/config",
                                {"POSTGRES_IMAGE": "local/postgres:15"})
    assert text.splitlines()[1:] == ["COMPOSE_PROJECT_NAME=hello-prod", "HTTP_PORT=8080",
                                     "APP_IMAGE=hello-prod-djangoapp:abc", "STACK_CONFIG_DIR=/srv/hello/shared/config",
                                     "POSTGRES_IMAGE=local/postgres:15"]


def test_the_init_script_is_installed_where_the_containers_mount_it(tmp_path):
    release, config = tmp_path / "release dir", tmp_path / "shared's config"
    (release / "config" / "db").mkdir(parents=True)
    (release / "config" / "db" / "app-role.sh").write_text("#!/bin/sh\necho one\n")
    script = shipping.install_mounted(release, config)
    for text in ("#!/bin/sh\necho one\n", "#!/bin/sh\necho two\n"):
        (release / "config" / "db" / "app-role.sh").write_text(text)
        subprocess.run(["bash", "-c", script], check=True)
        installed = config / "db" / "app-role.sh"
        assert installed.read_text() == text and installed.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (config / "db").iterdir()) == ["app-role.sh"]  # no temporary file left


def test_every_stack_task_takes_host():
    import inspect

    from tasks import ns

    with_host = {name for name in ns.task_names if "host" in inspect.signature(ns[name].body).parameters}
    assert {"up", "down", "ps", "logs", "migrate", "createsuperuser", "static", "manage", "doctor", "db.list",
            "db.shell", "db.dump", "db.load", "volume.list", "volume.backup", "volume.restore", "backup.all",
            "deploy.deploy", "rollback", "releases", "volume.archive", "archive.all"} <= with_host


class TestHostShell:
    """The deploy's host-side shell, exactly (each is run with `bash -c`)."""

    def test_the_lock_is_an_atomic_mkdir_naming_its_owner(self):
        assert shipping.take_lock("/srv/hello", "ann@desk pid 7 since T") == (
            "mkdir -p -m 700 /srv/hello; i=0; while ! mkdir /srv/hello/.deploy-lock 2>/dev/null; do "
            "i=$((i + 1)); [ $i -le 0 ] || exit 3; sleep 0.2; done; "
            "printf '%s\\n' 'ann@desk pid 7 since T' > /srv/hello/.deploy-lock/owner || "
            "{ rm -rf /srv/hello/.deploy-lock; exit 1; }")
        assert shipping.lock_holder("/srv/hello") == "cat /srv/hello/.deploy-lock/owner 2>/dev/null || true"
        assert shipping.release_lock("/srv/hello") == "rm -rf /srv/hello/.deploy-lock"

    @pytest.mark.parametrize("holder, found", [
        ("ann@desk pid 7 since 2026-11-21T10:00:00+00:00", ("desk", 7)),
        ("ann@desk.example.org pid 12345 since T", ("desk.example.org", 12345)),
        ("", None),
        ("someone wrote this by hand", None),
    ], ids=["owner-line", "dotted-machine", "empty", "foreign-text"])
    def test_the_lock_owner_names_a_machine_and_a_pid(self, holder, found):
        assert shipping.lock_owner(holder) == found

    @pytest.mark.parametrize("holder, alive, force, refusal", [
        ("", False, False, None),
        ("ann@desk pid 7 since T", False, False, None),
        ("ann@desk pid 7 since T", True, False,
         "the deploy lock on prod is held by a deploy that still runs on this machine (ann@desk pid 7 since T): "
         "wait for it to end, or stop it (kill 7) and run this again"),
        ("ann@desk pid 7 since T", True, True,
         "the deploy lock on prod is held by a deploy that still runs on this machine (ann@desk pid 7 since T): "
         "wait for it to end, or stop it (kill 7) and run this again"),
        ("bob@laptop pid 7 since T", False, False,
         "the deploy lock on prod is held by bob@laptop pid 7 since T, which this machine cannot check: once that "
         "deploy has ended (ask whoever runs it), release the lock with `inv deploy.unlock --host prod --force`"),
        ("bob@laptop pid 7 since T", False, True, None),
        ("garbled", False, False,
         "the deploy lock on prod is held by garbled, which this machine cannot check: once that deploy has ended "
         "(ask whoever runs it), release the lock with `inv deploy.unlock --host prod --force`"),
        ("garbled", False, True, None),
    ], ids=["not-held", "dead-here", "alive-here", "alive-here-force", "elsewhere", "elsewhere-force",
            "unreadable", "unreadable-force"])
    def test_unlock_refuses_a_live_deploy_and_one_it_cannot_check_without_force(self, holder, alive, force, refusal):
        assert shipping.unlock_refusal("prod", holder, "desk", alive, force) == refusal

    def test_current_is_switched_in_one_rename(self):
        assert shipping.switch("/srv/my hello", "20261121T000000Z-abcdef012345") == (
            "touch '/srv/my hello'/releases/20261121T000000Z-abcdef012345/.served && "
            "ln -sfn releases/20261121T000000Z-abcdef012345 '/srv/my hello'/.current.tmp && "
            "mv -T '/srv/my hello'/.current.tmp '/srv/my hello'/current")

    def test_reading_the_releases(self):
        assert shipping.current_release("/srv/hello") == "readlink /srv/hello/current || true"
        assert shipping.prepare_directories("/srv/hello") == "mkdir -p -m 755 /srv/hello/releases /srv/hello/shared"
        assert shipping.remove_trees(["/a", "/b c"]) == "rm -rf -- /a '/b c'"

    def test_the_lock_script_really_excludes_and_says_why_it_failed(self, tmp_path):
        import subprocess

        def run(script):
            return subprocess.run(["bash", "-c", script], capture_output=True, text=True).returncode

        assert run(shipping.take_lock(tmp_path, "ann")) == 0
        assert (tmp_path / ".deploy-lock/owner").read_text() == "ann\n"
        assert run(shipping.take_lock(tmp_path, "bob")) == shipping.LOCK_HELD
        assert run(shipping.release_lock(tmp_path)) == 0 and not (tmp_path / ".deploy-lock").exists()
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)  # the owner cannot be written: not "held", and no lock left
        if run(f"touch {tmp_path}/ro/x") != 0:  # (root writes anyway)
            assert run(shipping.take_lock(tmp_path / "ro", "ann")) not in (0, shipping.LOCK_HELD)

    def test_only_served_releases_are_listed_and_the_unfinished_ones_are_found(self, tmp_path):
        import subprocess

        def out(script):
            return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()

        assert out(shipping.list_releases(tmp_path)) == [] == out(shipping.unfinished_releases(tmp_path))
        for name in ("A", "B", "C", "D"):
            (tmp_path / "releases" / name).mkdir(parents=True)
        out(shipping.switch(tmp_path, "A"))
        out(shipping.switch(tmp_path, "C"))
        assert out(shipping.list_releases(tmp_path)) == ["A", "C"]
        assert out(shipping.unfinished_releases(tmp_path)) == ["B", "D"]
        (tmp_path / "releases/C/.served").unlink()  # current from before the marker: still current
        assert out(shipping.unfinished_releases(tmp_path)) == ["B", "D"]
        out(shipping.mark_served(tmp_path))
        assert out(shipping.list_releases(tmp_path)) == ["A", "C"]

    def test_rsync_errors_name_the_cause(self):
        disk = ('rsync: [receiver] write failed on "/srv/hello/releases/R/big": No space left on device (28)\n'
                "rsync error: error in file IO (code 11) at receiver.c(380) [receiver=3.2.7]\n")
        assert shipping.rsync_error(disk, 11).endswith("No space left on device (28)")
        cut = "Timeout, server 10.0.0.2 not responding.\nrsync: connection unexpectedly closed (12 bytes)\n"
        assert shipping.rsync_error(cut, 255) == "Timeout, server 10.0.0.2 not responding."
        assert shipping.rsync_error("", 12) == "exit status 12"

    def test_secrets_script_passes_templates_as_here_documents(self):
        script = shipping.host_secrets("/s/shared", "/s/releases/R", {"config/django.env": "K=@@GENERATED_SECRET@@\n"})
        lines = script.splitlines()
        assert lines[0] == "set -e" and lines[1] == "mkdir -p -m 700 /s/shared/config"
        assert lines[2].startswith("( if test -e /s/shared/config/django.env; then cat > /dev/null; exit 0; fi;")
        assert lines[2].endswith(") <<'HELLO_ENV_TEMPLATE_END'")
        assert lines[3:] == ["K=@@GENERATED_SECRET@@", "HELLO_ENV_TEMPLATE_END",
                             "ln -sfn /s/shared/config/django.env /s/releases/R/config/django.env"]

    def test_a_template_cannot_end_its_own_here_document(self):
        with pytest.raises(ValueError, match="contains HELLO_ENV_TEMPLATE_END"):
            shipping.host_secrets("/s", "/r", {"x.env": "HELLO_ENV_TEMPLATE_END\n"})

    def test_the_secrets_script_really_makes_and_keeps_the_files(self, tmp_path):
        import subprocess

        shared, release = tmp_path / "shared", tmp_path / "releases/R"
        (release / "config").mkdir(parents=True)
        script = shipping.host_secrets(shared, release, {"config/django.env": "A=@@GENERATED_SECRET@@\nB=2\n"})
        subprocess.run(["bash", "-c", script], check=True)
        made = (shared / "config/django.env").read_text()
        assert made.startswith("A=") and len(made.splitlines()[0]) == 52 and made.endswith("B=2\n")
        assert (shared / "config/django.env").stat().st_mode & 0o777 == 0o600
        assert (release / "config/django.env").resolve() == shared / "config/django.env"
        subprocess.run(["bash", "-c", script], check=True)  # a second run keeps the secret
        assert (shared / "config/django.env").read_text() == made


def sh(script):
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout


def release_made_by(directory, release, project):
    """A release directory as an earlier version's deploy left it: its .env names its project."""
    (directory / "releases" / release).mkdir(parents=True)
    (directory / "releases" / release / ".env").write_text(
        f"# Written by `inv deploy`; non-secret settings of this release.\nCOMPOSE_PROJECT_NAME={project}\n"
        "HTTP_PORT=8000\n")


class TestDirectoryOwner:
    OLD, NEW = "20261120T000000Z-0123456789ab", "20261121T000000Z-abcdef012345"

    def test_a_new_directory_names_no_project_and_the_first_deploy_claims_it(self, tmp_path):
        directory = tmp_path / "srv" / "hello"
        assert sh(shipping.directory_owner(directory)) == ""
        assert sh(shipping.claim_directory(directory, "hello-a")) == "file hello-a\n"
        assert (directory / "project").read_text() == "hello-a\n"
        assert (directory / "project").stat().st_mode & 0o777 == 0o644
        assert sorted(p.name for p in directory.iterdir()) == ["project"]  # no temporary file left
        assert sh(shipping.directory_owner(directory)) == "file hello-a\n"

    def test_a_claimed_directory_keeps_its_project(self, tmp_path):
        sh(shipping.claim_directory(tmp_path, "hello-a"))
        assert sh(shipping.claim_directory(tmp_path, "hello-b")) == "file hello-a\n"
        assert (tmp_path / "project").read_text() == "hello-a\n"

    def test_a_directory_of_an_earlier_version_is_its_live_releases_project(self, tmp_path):
        release_made_by(tmp_path, self.OLD, "hello-a")
        release_made_by(tmp_path, self.NEW, "hello-b")  # made by the other project, never served
        assert sh(shipping.directory_owner(tmp_path)) == "releases hello-b\n"  # none live: the newest
        (tmp_path / "current").symlink_to(f"releases/{self.OLD}")
        assert sh(shipping.directory_owner(tmp_path)) == "releases hello-a\n"
        # Its first deploy by this version records it; the file is believed from then on.
        assert sh(shipping.claim_directory(tmp_path, "hello-a")) == "file hello-a\n"
        assert sh(shipping.directory_owner(tmp_path)) == "file hello-a\n"

    @pytest.mark.parametrize("printed, refusal", [
        ("", None),
        ("file hello-a\n", None),
        ("releases hello-a\n", None),
        ("file hello-b\n", "/srv/hello on prod belongs to project hello-b (/srv/hello/project), not hello-a: give "
                           "[hosts.prod] a directory of its own (each project deploys into its own)"),
        ("releases hello-b\n", "/srv/hello on prod holds the releases of project hello-b, not hello-a: give "
                               "[hosts.prod] a directory of its own (each project deploys into its own)"),
        ("file \x1b[31mX\n", "/srv/hello on prod belongs to project '\\x1b[31mX' (/srv/hello/project), not hello-a: "
                             "give [hosts.prod] a directory of its own (each project deploys into its own)"),
        ("file \n", "/srv/hello on prod belongs to project '' (/srv/hello/project), not hello-a: give [hosts.prod] a "
                    "directory of its own (each project deploys into its own)"),
    ], ids=["new", "ours", "ours-by-its-releases", "another's", "another's-by-its-releases", "garbled", "empty"])
    def test_another_projects_directory_is_refused_in_one_line(self, printed, refusal):
        assert shipping.owner_refusal("prod", "/srv/hello", "hello-a", printed) == refusal


class TestPorts:
    @pytest.mark.parametrize("site, ports", [
        (Site(), [("127.0.0.1", 8080, "http_port")]),
        (Site(domains=("a.test",), tls="acme", bind="0.0.0.0", http_port=80),
         [("0.0.0.0", 8080, "http_port"), ("0.0.0.0", 443, "https_port")]),
    ], ids=["plain", "https"])
    def test_the_front_publishes_the_http_port_and_with_tls_the_https_one(self, site, ports):
        assert shipping.published(site, 8080) == ports

    def test_who_holds_a_port_is_read_from_the_engine_and_the_sockets(self):
        assert shipping.port_holders([80]) == (
            "docker ps --filter publish=80 --format '80 container {{.Names}} "
            "{{with .Label \"com.docker.compose.project\"}}{{.}}{{else}}-{{end}} {{.Ports}}'; "
            "ss -Hltn 'sport = :80' 2>/dev/null | awk '{ print \"80 socket \" $4 }'; true")

    FRONT_A = "80 container hello-a-front-1 hello-a 127.0.0.1:80->80/tcp\n80 socket 127.0.0.1:80\n"
    WAYS_OUT = ("give [hosts.prod] another http_port, or put the projects behind the server's shared front "
                "(front = \"shared\" in [hosts.prod])")

    @pytest.mark.parametrize("wanted, printed, refusal", [
        ([("127.0.0.1", 80, "http_port")], "", None),
        ([("127.0.0.1", 80, "http_port")], FRONT_A.replace("hello-a", "hello-b"), None),
        ([("127.0.0.1", 80, "http_port")], FRONT_A,
         f"port 80 on prod is taken by project hello-a (its container hello-a-front-1): {WAYS_OUT}"),
        ([("0.0.0.0", 8080, "http_port"), ("0.0.0.0", 443, "https_port")],
         "443 container web - 0.0.0.0:443->443/tcp, :::443->443/tcp\n",
         f"port 443 on prod is taken by the container web: {WAYS_OUT.replace('http_port', 'https_port')}"),
        ([("127.0.0.1", 80, "http_port")], "80 socket *:80\n",
         f"port 80 on prod is taken by a program outside Docker (listening on *:80): {WAYS_OUT}"),
        ([("127.0.0.1", 80, "http_port")], "80 socket [::]:80\n",
         f"port 80 on prod is taken by a program outside Docker (listening on [::]:80): {WAYS_OUT}"),
        ([("127.0.0.1", 80, "http_port")], FRONT_A.replace("127.0.0.1", "10.0.0.2"), None),
        ([("10.0.0.3", 80, "http_port")], "80 container hello-a-front-1 hello-a 0.0.0.0:80->80/tcp\n",
         f"port 80 on prod is taken by project hello-a (its container hello-a-front-1): {WAYS_OUT}"),
    ], ids=["free", "ours", "another-project", "outside-compose", "a-program", "a-program-v6", "another-address",
            "a-wildcard"])
    def test_a_port_another_holds_is_refused_naming_it_and_the_ways_out(self, wanted, printed, refusal):
        assert shipping.port_refusal("prod", "hello-b", wanted, printed) == refusal
