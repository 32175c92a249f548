"""The plans of a rollout without downtime (tasks/plans/rollout.py) and of the release
ledger (tasks/plans/ledger.py), as data; the shell ones are also run, on temporary folders."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.plans import ledger
from tasks.plans import rollout as plans
from tasks.source import render
from tasks.source.stack import loads
from tests.stacks import COMMITTED


def sh(script, **kwargs):
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize("argv, expected", [
    pytest.param(plans.app_ids("hello"), ["docker", "ps", "--all", "--quiet", "--filter", "label=com.docker.compose.project=hello",
                                          "--filter", "label=com.docker.compose.service=djangoapp",
                                          "--filter", "label=com.docker.compose.oneoff=False"], id="app-ids"),
    pytest.param(plans.describe(["a1", "b2"]), [
        "docker", "inspect", "--format",
        "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", "a1", "b2"],
        id="describe"),
    pytest.param(plans.would_recreate(), ["--dry-run", "up", "--detach", "--no-deps", "--no-build", "djangoapp"],
                 id="would-recreate"),
    pytest.param(plans.scale_up(3), ["up", "--detach", "--no-deps", "--no-recreate", "--no-build",
                                     "--scale", "djangoapp=3", "djangoapp"], id="scale-up"),
    pytest.param(plans.run_once("secrets-init"), ["run", "--rm", "--no-deps", "-T", "secrets-init"], id="run-once"),
    pytest.param(plans.release_phase([["migrate", "--noinput", "--database", "default"]]),
                 ["run", "--rm", "--no-deps", "-T", "djangoapp", "python", "manage.py", "migrate", "--noinput",
                  "--database", "default"], id="release-phase-of-one-step"),
    pytest.param(plans.release_phase([["migrate", "--noinput", "--database", "default"], ["collectstatic", "--noinput"]]),
                 ["run", "--rm", "--no-deps", "-T", "djangoapp", "python", "manage.py", "shell", "--verbosity", "0",
                  "--command", 'STEPS = [["migrate", "--noinput", "--database", "default"], ["collectstatic", "--noinput"]]\n'
                  + plans.RELEASE_SCRIPT], id="release-phase"),
    pytest.param(plans.image_id("hello-djangoapp:abc"),
                 ["docker", "image", "inspect", "--format", "{{.Id}}", "hello-djangoapp:abc"], id="image-id"),
    pytest.param(plans.stop(["a1", "b2"]), ["docker", "stop", "a1", "b2"], id="stop"),
    pytest.param(plans.remove(["a1"]), ["docker", "rm", "--force", "a1"], id="remove"),
    pytest.param(plans.logs("a1"), ["docker", "logs", "--tail", "20", "a1"], id="logs"),
])
def test_plan(argv, expected):
    assert argv == expected


class TestTheLiveApp:
    def test_names_the_container_nginx_sends_requests_to(self):
        assert plans.live_conf("hello-prod-djangoapp-2") == "set $djangoapp http://hello-prod-djangoapp-2:8000;\n"

    @pytest.mark.parametrize("name", [
        "", "-x", ".x", "a b", "a;b", "a}b", "a/b", "a$b", "x" * 129,
        "x\n",
    ], ids=["empty", "option", "dot", "space", "semicolon", "brace", "slash", "dollar", "too-long", "newline"])
    def test_refuses_what_is_not_a_container_name(self, name):
        with pytest.raises(ValueError, match="not a container name"):
            plans.live_conf(name)


class TestUpToDate:
    """What `compose --dry-run up` says of the app's container (on standard error)."""

    def test_a_running_container_of_this_definition_and_image(self):
        assert plans.up_to_date("[+] Running 1/0\n ✔ DRY-RUN MODE -  Container hello-djangoapp-1  Running  0.0s\n")
        assert plans.up_to_date(" Container hello-djangoapp-1  Running\n")

    @pytest.mark.parametrize("output", [
        "[+] Running 2/2\n ✔ DRY-RUN MODE -  Container hello-djangoapp-1  Recreate   0.0s\n"
        " ✔ DRY-RUN MODE -  Container hello-djangoapp-1  Recreated  0.0s\n",
        "[+] Running 1/1\n ✔ DRY-RUN MODE -  Container hello-djangoapp-1  Created  0.0s\n",
        " Container hello-djangoapp-1  Creating\n",
        "",
        "no such service: djangoapp\n",
    ], ids=["recreate", "created", "creating", "nothing", "an-error"])
    def test_anything_else_is_not(self, output):
        assert not plans.up_to_date(output)


class TestNginxFiles:
    def test_the_script_quotes_every_path(self):
        assert plans.install_files("/srv/a b/config/nginx", "/srv/x's/nginx", ("front.conf",)) == (
            "set -e; mkdir -p '/srv/x'\"'\"'s/nginx'\n"
            "if ! cmp -s '/srv/a b/config/nginx'/front.conf '/srv/x'\"'\"'s/nginx'/front.conf; then "
            "if [ -e '/srv/x'\"'\"'s/nginx'/front.conf ]; then cp -p '/srv/x'\"'\"'s/nginx'/front.conf "
            "'/srv/x'\"'\"'s/nginx'/.front.conf.previous || exit 1; else rm -f '/srv/x'\"'\"'s/nginx'/.front.conf.previous; fi; "
            "cp '/srv/a b/config/nginx'/front.conf '/srv/x'\"'\"'s/nginx'/.front.conf.new || exit 1; "
            "chmod 644 '/srv/x'\"'\"'s/nginx'/.front.conf.new || exit 1; "
            "mv -f '/srv/x'\"'\"'s/nginx'/.front.conf.new '/srv/x'\"'\"'s/nginx'/front.conf || exit 1; "
            "echo front.conf; fi\n")
        assert plans.restore_files("/srv/x's/nginx", ["nginx.conf"]) == (
            "if [ -e '/srv/x'\"'\"'s/nginx'/.nginx.conf.previous ]; then "
            "mv -f '/srv/x'\"'\"'s/nginx'/.nginx.conf.previous '/srv/x'\"'\"'s/nginx'/nginx.conf; fi\n")

    def test_installed_files_change_by_rename_and_the_previous_ones_can_come_back(self, tmp_path):
        source, target = tmp_path / "release's config" / "nginx", tmp_path / "shared config" / "nginx"
        source.mkdir(parents=True)
        for name in plans.NGINX_FILES:
            (source / name).write_text(f"{name} 1\n")
        first = sh(plans.install_files(source, target))
        assert first.returncode == 0 and first.stdout.split() == list(plans.NGINX_FILES)
        assert sorted(p.name for p in target.iterdir()) == sorted(plans.NGINX_FILES)  # nothing to go back to
        assert all((target / n).stat().st_mode & 0o777 == 0o644 for n in plans.NGINX_FILES)

        (source / "default.conf").write_text("default.conf 2\n")
        second = sh(plans.install_files(source, target))
        assert second.returncode == 0 and second.stdout == "default.conf\n"  # only what changed
        assert (target / "default.conf").read_text() == "default.conf 2\n"
        assert (target / ".default.conf.previous").read_text() == "default.conf 1\n"

        restored = sh(plans.restore_files(target, plans.NGINX_FILES))
        assert restored.returncode == 0
        assert sorted(p.name for p in target.iterdir()) == sorted(plans.NGINX_FILES)
        assert [(target / n).read_text() for n in plans.NGINX_FILES] == [f"{n} 1\n" for n in plans.NGINX_FILES]

    def test_a_missing_source_file_fails_and_leaves_the_installed_one(self, tmp_path):
        source, target = tmp_path / "src", tmp_path / "dst"
        source.mkdir()
        target.mkdir()
        (target / "nginx.conf").write_text("kept\n")
        assert sh(plans.install_files(source, target, ("nginx.conf",))).returncode != 0
        assert (target / "nginx.conf").read_text() == "kept\n"


class TestSwitchScript:
    """The switch script, with the live folder moved to a temporary one and an `nginx` that
    refuses every configuration (`nginx -t` fails): nothing is reloaded, the live file is
    what it was, and the exit status says refused."""

    def run(self, tmp_path, new):
        live = tmp_path / "live"
        live.mkdir(exist_ok=True)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "nginx").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/nginx.log\n[ "$1" = "-t" ] && exit 1\nexit 0\n')
        (bin_dir / "nginx").chmod(0o755)
        script = plans.switch_script(plans.NGINX_MAIN).replace("/etc/nginx/live", str(live))
        result = sh(script, input=new, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        return result, live

    def test_a_refused_configuration_puts_the_previous_live_file_back(self, tmp_path):
        (tmp_path / "live").mkdir()
        (tmp_path / "live" / "app.conf").write_text(plans.live_conf("hello-djangoapp-1"))
        result, live = self.run(tmp_path, plans.live_conf("hello-djangoapp-2"))
        assert result.returncode == plans.REFUSED
        assert (live / "app.conf").read_text() == "set $djangoapp http://hello-djangoapp-1:8000;\n"
        assert (tmp_path / "nginx.log").read_text() == "-t -q -c /etc/nginx/hello/nginx.conf\n"  # no reload

    def test_a_refused_first_configuration_leaves_no_live_file(self, tmp_path):
        result, live = self.run(tmp_path, plans.live_conf("hello-djangoapp-1"))
        assert result.returncode == plans.REFUSED
        assert sorted(p.name for p in live.iterdir()) == []

    def test_the_front_is_reloaded_only_when_its_file_changed(self):
        assert plans.front_sum_check() == ("cat /etc/nginx/hello/front.conf /etc/hello/certs/site.conf 2>/dev/null "
                                           "| sha256sum | cmp -s - /run/front.sha256")
        assert plans.front_reload().startswith(
            "cat /etc/nginx/hello/front.conf /etc/hello/certs/site.conf 2>/dev/null | sha256sum > /run/front.sha256 && "
            "nginx -t -q -c /etc/nginx/hello/front.conf || exit 3\n")

    @pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
    def test_a_started_front_records_what_the_check_compares(self, tmp_path, https):
        """The front writes its sum when it starts (its command) and at each reload: a front
        just (re)started, with its engine or its server, is unchanged to the next deploy,
        which would otherwise reload it under the clients' feet."""
        command = yaml.safe_load(render.rendered(loads(COMMITTED))[render.COMPOSE_FILE])["services"]["front"]["command"]
        assert command[:2] == ["sh", "-c"]
        started = command[2].split(" && exec nginx ")[0]
        (tmp_path / "nginx/hello").mkdir(parents=True)
        (tmp_path / "nginx/hello/front.conf").write_text("events {}\n")
        if https:
            (tmp_path / "certs").mkdir()
            (tmp_path / "certs/site.conf").write_text("map $ssl_server_name $certificate {}\n")

        def here(script):
            return (script.replace("/etc/nginx/hello", f"{tmp_path}/nginx/hello")
                    .replace("/etc/hello/certs", f"{tmp_path}/certs").replace("/run/", f"{tmp_path}/"))

        assert sh(here(started)).returncode == 0 and (tmp_path / "front.sha256").exists()
        assert sh(here(plans.front_sum_check())).returncode == 0
        (tmp_path / "nginx/hello/front.conf").write_text("events { worker_connections 512; }\n")
        assert sh(here(plans.front_sum_check())).returncode == 1


class TestLedger:
    MIGRATIONS = {"database1": ["contenttypes.0001_initial", "hello.0001_initial"], "reports": []}

    def test_an_entry_reads_back_as_written(self):
        text = ledger.entry("20261121T000000Z-abcdef012345", "0123abc", "sha256:5eed", "2026-11-21T00:00:00+00:00",
                            "ann@desk", self.MIGRATIONS)
        assert text.endswith("}\n") and text.startswith('{\n  "commit": "0123abc",\n')  # sorted, indented
        assert ledger.parse(text) == {"release": "20261121T000000Z-abcdef012345", "commit": "0123abc",
                                      "image": "sha256:5eed", "deployed_at": "2026-11-21T00:00:00+00:00",
                                      "deployed_by": "ann@desk", "migrations": self.MIGRATIONS}

    @pytest.mark.parametrize("text, why", [
        ("", "not JSON"), ("{", "not JSON"), ("[" * 100000 + "]" * 100000, "not JSON"),
        ("[1, 2]", "a list, not an object"), ('"text"', "a string, not an object"), ("null", "null, not an object"),
        ("{}", "no release, commit, image, deployed_at, deployed_by, migrations"),
    ])
    def test_what_is_not_a_ledger_parses_to_invalid_saying_why(self, text, why):
        assert ledger.parse(text) == ledger.Invalid(why)

    @pytest.mark.parametrize("changes, why", [
        ({"migrations": {"database1": 5}}, "the migrations of database1 are a number, not a list"),
        ({"migrations": {"database1": None}}, "the migrations of database1 are null, not a list"),
        ({"migrations": {"database1": {"a": "b"}}}, "the migrations of database1 are an object, not a list"),
        ({"migrations": ["hello.0001_initial"]}, "migrations is a list, not an object of databases"),
        ({"migrations": None}, "migrations is null, not an object of databases"),
        ({"migrations": "database1"}, "migrations is a string, not an object of databases"),
        ({"migrations": {"Database 1": []}}, "migrations names 'Database 1', not a database"),
        ({"migrations": {"database1": ["hello.0001_initial", 2]}}, "the migrations of database1 hold 2, not an app.name"),
        ({"migrations": {"database1": [True]}}, "the migrations of database1 hold True, not an app.name"),
        ({"migrations": {"database1": ["hello 0001"]}}, "the migrations of database1 hold 'hello 0001', not an app.name"),
        ({"migrations": {"database1": [["a.1"]]}}, "the migrations of database1 hold ['a.1'], not an app.name"),
        ({"commit": 5}, "commit is a number, not a line of text"),
        ({"image": ["sha256:5eed"]}, "image is a list, not a line of text"),
        ({"deployed_by": "ann\x1b]0;owned\x07"}, "deployed_by is 'ann\\x1b]0;owned\\x07', not a line of text"),
        ({"deployed_at": "x" * 201}, f"deployed_at is {'x' * 36!r}..., not a line of text".replace("'...", "...")),
        ({"release": "20261120T000000Z-0123456789ab"}, "it is the ledger of '20261120T000000Z-0123456789ab'"),
    ], ids=["migrations-number", "migrations-null", "migrations-object", "migrations-list", "migrations-none",
            "migrations-string", "database-not-a-name", "migration-number", "migration-boolean", "migration-space",
            "migration-list", "commit-number", "image-list", "deployed-by-escape", "deployed-at-long",
            "another-release"])
    def test_a_tampered_ledger_is_invalid_and_says_what_is_wrong(self, changes, why):
        entry = json.loads(ledger.entry("20261121T000000Z-abcdef012345", "0123abc", "sha256:5eed",
                                        "2026-11-21T00:00:00+00:00", "ann@desk", self.MIGRATIONS))
        text = json.dumps({**entry, **changes})
        assert ledger.parse(text, "20261121T000000Z-abcdef012345") == ledger.Invalid(why)
        for key in changes:  # a field missing is named too
            assert ledger.parse(json.dumps({k: v for k, v in entry.items() if k != key})) == ledger.Invalid(f"no {key}")

    def test_the_migrations_are_read_as_the_superuser_one_a_line(self):
        db = loads(COMMITTED).databases[0]
        assert ledger.applied_migrations(db) == [
            "exec", "-T", "database1", "psql", "--username", "app", "--dbname", "database1", "--no-psqlrc",
            "--tuples-only", "--no-align", "--command", "SELECT app || '.' || name FROM django_migrations ORDER BY id"]

    def test_split_all(self):
        entry = ledger.entry("B", "c", "i", "t", "u", {"database1": ["a.1"]})
        body = "".join(f"|{line}\n" for line in entry.splitlines())
        text = f"== C no\n|{{ not json\n\n== B yes\n{body}\n== A yes\n\n== D no\n== E no\n{body}"
        assert ledger.split_all(text) == [
            ("A", True, None),  # served, no ledger (an earlier version deployed it)
            ("B", True, json.loads(entry)),
            ("C", False, ledger.Invalid("not JSON")),  # a ledger that does not parse is named as such
            ("D", False, None),
            ("E", False, ledger.Invalid("it is the ledger of 'B'")),  # another release's ledger
        ]
        assert ledger.split_all("") == []

    def test_every_release_directory_is_read_with_whether_it_served(self, tmp_path):
        releases = tmp_path / "host dir" / "releases"
        for name in ("20261120T000000Z-0123456789ab", "20261121T000000Z-abcdef012345"):
            (releases / name).mkdir(parents=True)
        (releases / "20261120T000000Z-0123456789ab" / ".served").touch()
        entry = ledger.entry("20261121T000000Z-abcdef012345", "c", "i", "t", "u", {"database1": []})
        (releases / "20261121T000000Z-abcdef012345" / ledger.LEDGER).write_text(entry)
        (releases / "a-file").write_text("not a release\n")
        result = sh(ledger.read_all(tmp_path / "host dir"))
        assert result.returncode == 0
        assert ledger.split_all(result.stdout) == [("20261120T000000Z-0123456789ab", True, None),
                                                   ("20261121T000000Z-abcdef012345", False, json.loads(entry))]
        nothing = sh(ledger.read_all(tmp_path / "no such dir"))
        assert nothing.returncode == 0 and nothing.stdout == ""

    def test_a_ledger_cannot_pass_for_another_release(self, tmp_path):
        releases = tmp_path / "releases"
        name, fake = "20261121T000000Z-abcdef012345", "20261122T000000Z-ffffffffffff"
        (releases / name).mkdir(parents=True)
        entry = ledger.entry(fake, "c", "i", "t", "u", {})
        (releases / name / ledger.LEDGER).write_text(f"{{}}\n== {fake} yes\n{entry}")  # no newline at its end
        found = ledger.split_all(sh(ledger.read_all(tmp_path)).stdout)
        assert found == [(name, False, ledger.Invalid("not JSON"))]

    def test_ahead_names_per_database_what_the_release_does_not_know(self):
        known = {"database1": ["a.1", "a.2"], "reports": ["r.1"]}
        assert ledger.ahead({"database1": ["a.1", "a.2"], "reports": ["r.1"]}, known) == {}
        assert ledger.ahead({"database1": ["a.1"], "reports": []}, known) == {}  # behind is fine
        assert ledger.ahead({"database1": ["a.1", "a.2", "a.3", "b.1"], "reports": ["r.1"]}, known) == \
            {"database1": ["a.3", "b.1"]}
        # A database the release did not have: everything applied there is unknown to it.
        assert ledger.ahead({"database1": ["a.1"], "extra": ["x.1", "x.2"]}, known) == {"extra": ["x.1", "x.2"]}


class TestReleasePhaseInOneContainer:
    """The release phase's steps run one after the other in one Django (`manage.py shell`):
    run here for real, in a project whose `step NAME STATUS` command records NAME and ends as
    STATUS says (0, a CommandError with that status, or an exception)."""
    FILES = {
        "manage.py": "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_settings')\n"
                     "from django.core.management import execute_from_command_line\n"
                     "execute_from_command_line(sys.argv)\n",
        "site_settings.py": "SECRET_KEY = 'x'\nINSTALLED_APPS = ['steps']\nDATABASES = {}\nUSE_TZ = True\n",
        "steps/__init__.py": "import os\nfrom django.core import checks\n"
                             "@checks.register()\n"
                             "def broken(app_configs, **kwargs):\n"
                             "    return [checks.Error('broken', id='steps.E001')] if os.path.exists('broken') else []\n",
        "steps/management/__init__.py": "",
        "steps/management/commands/__init__.py": "",
        "steps/management/commands/step.py": (
            "from django.core.management.base import BaseCommand, CommandError\n"
            "class Command(BaseCommand):\n"
            "    def add_arguments(self, parser):\n"
            "        parser.add_argument('name'); parser.add_argument('status')\n"
            "    def handle(self, name, status, **options):\n"
            "        open('ran', 'a').write(name + '\\n')\n"
            "        if status == 'exit0':\n"
            "            raise SystemExit(0)\n"
            "        if status == 'boom':\n"
            "            raise RuntimeError(f'{name} blew up')\n"
            "        if status != '0':\n"
            "            raise CommandError(f'{name} failed', returncode=int(status))\n"),
    }

    def run(self, tmp_path, statuses):
        for name, text in self.FILES.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        argv = plans.release_phase([["step", f"step{n}", str(status)] for n, status in enumerate(statuses, 1)])
        assert argv[:5] == ["run", "--rm", "--no-deps", "-T", "djangoapp"]
        done = subprocess.run(argv[5:], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        ran = (tmp_path / "ran").read_text().split() if (tmp_path / "ran").exists() else []
        return done, ran

    def test_every_step_runs_in_order_when_each_succeeds(self, tmp_path):
        done, ran = self.run(tmp_path, [0, 0, 0])
        assert done.returncode == 0 and ran == ["step1", "step2", "step3"] and done.stderr == "", done.stderr
        assert plans.failed_step(done.stderr, 3) is None

    def test_the_first_failure_ends_it_with_its_own_status_and_says_which(self, tmp_path):
        done, ran = self.run(tmp_path, [0, 3, 0])
        assert done.returncode == 3 and ran == ["step1", "step2"]
        assert done.stderr == "CommandError: step2 failed\nrelease step 2 failed\n"
        assert plans.failed_step(done.stderr, 3) == 1

    def test_an_exception_shows_its_traceback_as_manage_py_would(self, tmp_path):
        done, ran = self.run(tmp_path, [0, "boom", 0])
        assert done.returncode == 1 and ran == ["step1", "step2"]
        lines = done.stderr.splitlines()
        assert lines[0] == "Traceback (most recent call last):" and lines[-2:] == [
            "RuntimeError: step2 blew up", "release step 2 failed"]
        assert plans.failed_step(done.stderr, 3) == 1

    def test_a_step_that_exits_0_goes_on_to_the_next(self, tmp_path):
        done, ran = self.run(tmp_path, [0, "exit0", 0])
        assert done.returncode == 0 and ran == ["step1", "step2", "step3"] and done.stderr == "", done.stderr

    def test_the_system_checks_run_before_a_step_as_manage_py_runs_them(self, tmp_path):
        (tmp_path / "broken").write_text("")
        done, ran = self.run(tmp_path, [0, 0])
        assert done.returncode == 1 and ran == [] and "steps.E001" in done.stderr, done.stderr
        assert done.stderr.startswith("SystemCheckError: ") and done.stderr.endswith("release step 1 failed\n")

    def test_a_single_step_runs_as_manage_py_itself(self, tmp_path):
        assert plans.release_phase([["migrate"]])[5:] == ["python", "manage.py", "migrate"]
        done, ran = self.run(tmp_path, [4])
        assert done.returncode == 4 and ran == ["step1"] and plans.failed_step(done.stderr, 1) == 0

    @pytest.mark.parametrize("stderr", ["", "Error response from daemon: No such image\n", "release step 9 failed\n",
                                        "release step 1 failed later\n"])
    def test_a_container_that_does_not_say_which_step_failed_names_none(self, stderr):
        assert plans.failed_step(stderr, 3) is None
