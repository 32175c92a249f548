"""Small plans a task or procedure used to write inline, by exact equality; and the one
quoting helper every shell-script plan uses."""
import pytest

from tasks.plans import backups, compose, hostfiles, locks, release, secrets, shell
from tasks.source import settings


@pytest.mark.parametrize("plan, expected", [
    pytest.param(compose.volume_sizes(), ["docker", "system", "df", "--verbose", "--format", "{{json .Volumes}}"],
                 id="volume-sizes"),
    pytest.param(compose.remove_network("hello_database2_network"), ["docker", "network", "rm", "hello_database2_network"],
                 id="remove-network"),
    pytest.param(compose.remove_volume("hello_database2_volume"), ["docker", "volume", "rm", "hello_database2_volume"],
                 id="remove-volume"),
    pytest.param(backups.expectations_folder("/srv/hello/shared/config/backup-expected"),
                 "mkdir -p /srv/hello/shared/config/backup-expected && chmod 755 /srv/hello/shared/config/backup-expected",
                 id="expectations-folder"),
    pytest.param(backups.forget_notify_from_stack("/srv/my hello/shared/config/secrets/backup_notify"),
                 "if head -n 1 '/srv/my hello/shared/config/secrets/backup_notify' 2>/dev/null "
                 "| grep -qxF '# from [backups] notify in config/stack.toml'; "
                 "then rm -f '/srv/my hello/shared/config/secrets/backup_notify'; fi",
                 id="forget-notify-from-stack"),
])
def test_plan(plan, expected):
    assert plan == expected


def test_up_waits_as_long_as_the_settings_say_by_default():
    assert compose.up()[-2:] == ["--wait-timeout", str(settings.DEFAULTS["timeout"])]


def test_every_script_plan_quotes_with_the_one_helper():
    assert hostfiles._q is locks._q is release._q is secrets._q is shell.quote
    assert shell.quote("/srv/a b/c'd") == "'/srv/a b/c'\"'\"'d'"
