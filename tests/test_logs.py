"""Bounded logs ([logs] in config/stack.toml): every container the stack runs, in Compose, on
Swarm and as a one-off, keeps at most max_file files of max_size each."""
import re

import pytest
import yaml

from tasks.errors import StackError
from tasks.plans import archives, backups as backup_plans, swarm as swarm_plans
from tasks.source import render
from tasks.source.stack import Logs, loads
from tests.stacks import COMMITTED, NODES, SWARM

# Every kind of container the stack renders: a site with certbot, backups, services, processes
# (one a singleton), schedules (the scheduler), on a host and on a cluster.
EVERYTHING = (NODES + SWARM + """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
domains = ["example.com"]
acme_email = "ops@example.com"

[backups]
schedule = "15 3 * * *"
repository = "/srv/backups"

[[services]]
name = "redis"
kind = "redis"

[[services]]
name = "cache"
kind = "memcached"

[[processes]]
name = "worker"
command = ["celery", "-A", "hello", "worker"]

[[processes]]
name = "beat"
command = ["celery", "-A", "hello", "beat"]
singleton = true

[[schedules]]
name = "clearsessions"
cron = "17 3 * * *"
command = ["clearsessions"]
""")
DEFAULT = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
LOCAL = {"driver": "local", "options": {"max-size": "50m", "max-file": "2"}}


def services_of(text: str) -> dict:
    return yaml.safe_load(text)["services"]


def every_file(stack):
    """The compose file for the checkout and for the host, and the cluster's stack file."""
    host = render.site_files(stack, stack.hosts["prod"].site)[render.COMPOSE_FILE]
    files = render.rendered(stack)
    return {"checkout": files[render.COMPOSE_FILE], "host": host, "cluster": files[render.stack_file("swarm")]}


class TestSettings:
    def test_without_logs_the_stack_bounds_each_container_to_30_megabytes(self):
        assert loads(COMMITTED).logs == Logs(driver="json-file", max_size="10m", max_file=3)

    def test_a_logs_table_sets_driver_size_and_count(self):
        stack = loads(COMMITTED + '\n[logs]\ndriver = "local"\nmax_size = "50m"\nmax_file = 2\n')
        assert stack.logs == Logs(driver="local", max_size="50m", max_file=2)
        assert stack.logs.options == {"max-size": "50m", "max-file": "2"}

    @pytest.mark.parametrize("body, message", [
        ('driver = "syslog"\n', "[logs] driver 'syslog' is not valid: one of json-file, local"),
        ('driver = "none"\n', "[logs] driver 'none' is not valid: one of json-file, local"),
        ('max_size = "10"\n', "[logs] max_size '10' is not valid: a size of 1k to 999g, such as 10m, 512k or 1g"),
        ('max_size = "10mb"\n', "[logs] max_size '10mb' is not valid"),
        ('max_size = "0m"\n', "[logs] max_size '0m' is not valid"),
        ('max_size = "1.5m"\n', "[logs] max_size '1.5m' is not valid"),
        ('max_size = "-1"\n', "[logs] max_size '-1' is not valid"),
        ('max_size = "10M\\n"\n', "[logs] max_size '10M\\n' is not valid"),
        ("max_size = 10\n", "[logs] max_size 10 is not valid"),
        ("max_file = 0\n", "[logs] max_file 0 is not valid: a whole number from 1 to 100"),
        ("max_file = true\n", "[logs] max_file True is not valid: a whole number from 1 to 100"),
        ('max_file = "3"\n', "[logs] max_file '3' is not valid: a whole number from 1 to 100"),
        ("max_file = 101\n", "[logs] max_file 101 is not valid"),
        ('compress = true\n', "[logs]: unknown setting(s) compress (known: driver, max_file, max_size)"),
    ], ids=["syslog", "none", "no-unit", "two-letter-unit", "zero", "fraction", "negative", "line-break",
            "a-number", "no-file", "a-boolean", "text-count", "too-many-files", "unknown-key"])
    def test_bad_values_are_refused_in_one_line(self, body, message):
        with pytest.raises(StackError) as caught:
            loads(COMMITTED + "\n[logs]\n" + body)
        assert message in str(caught.value) and "\n" not in str(caught.value)
        assert str(caught.value).startswith("config/stack.toml: ")

    def test_logs_must_be_a_table(self):
        with pytest.raises(StackError, match=re.escape("logs 5 is not valid: a table (driver, max_size, max_file)")):
            loads("logs = 5\n" + COMMITTED)


class TestRendered:
    @pytest.mark.parametrize("place", ["checkout", "host", "cluster"])
    def test_every_service_has_the_default_bound(self, place):
        services = services_of(every_file(loads(COMMITTED + EVERYTHING))[place])
        assert {name: service.get("logging") for name, service in services.items()} == {
            name: DEFAULT for name in services}
        # The stack has every kind of container this test means to cover.
        assert {"djangoapp", "nginx", "redis", "cache", "worker", "beat", "scheduler", "database1", "backup"} <= set(
            services)
        if place != "cluster":
            assert {"front", "secrets-init"} <= set(services)
        if place == "host":
            assert "certbot" in services

    @pytest.mark.parametrize("place", ["checkout", "host", "cluster"])
    def test_every_service_has_the_configured_bound(self, place):
        stack = loads(COMMITTED + EVERYTHING + '\n[logs]\ndriver = "local"\nmax_size = "50m"\nmax_file = 2\n')
        services = services_of(every_file(stack)[place])
        assert {name: service.get("logging") for name, service in services.items()} == {
            name: LOCAL for name in services}


class TestOneOffs:
    def test_a_swarm_job_has_the_bound(self):
        argv = swarm_plans.job("hello-migrate-database1-abc", "replicated-job", "hello-djangoapp:abc",
                               ["python", "manage.py", "migrate"], env={}, env_file="/srv/django.env", secrets=[],
                               logs=Logs(driver="local", max_size="50m", max_file=2))
        at = argv.index("--log-driver")
        assert argv[at:at + 6] == ["--log-driver", "local", "--log-opt", "max-file=2", "--log-opt", "max-size=50m"]
        assert argv.index("hello-djangoapp:abc") > at

    def test_a_swarm_job_without_settings_has_the_default_bound(self):
        argv = swarm_plans.job("j", "replicated-job", "img", ["true"], env={}, env_file="/e", secrets=[])
        assert ["--log-driver", "json-file", "--log-opt", "max-file=3", "--log-opt", "max-size=10m"] == argv[
            argv.index("--log-driver"):argv.index("--log-driver") + 6]

    def test_a_volume_helper_keeps_no_log_of_the_archive_it_streams(self):
        # Its standard output is a volume's archive: the engine would write it all to the log.
        argv = archives.helper("postgres:15", [("hello_media_volume", "/data", True)], ["tar", "-c", "."], "hello")
        assert argv[argv.index("--log-driver") + 1] == "none"
        assert argv.index("--log-driver") < argv.index("--entrypoint")

    def test_the_repository_folder_helper_keeps_no_log(self):
        argv = backup_plans.own_repository("hello-backup:latest", "/srv/backups")
        assert argv[argv.index("--log-driver") + 1] == "none"
