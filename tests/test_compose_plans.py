"""Plans are data: each function returns the exact argv a task will run."""
import pytest

from tasks.plans import compose


@pytest.mark.parametrize(
    "argv, expected",
    [
        pytest.param(compose.up(), ["up", "--detach", "--remove-orphans", "--build", "--wait", "--wait-timeout", "180"], id="up"),
        pytest.param(compose.up(build=False, wait=False), ["up", "--detach", "--remove-orphans", "--no-build"], id="up-no-build-no-wait"),
        pytest.param(compose.up(["database2"], no_deps=True, timeout=30),
                     ["up", "--detach", "--remove-orphans", "--build", "--wait", "--wait-timeout", "30", "--no-deps", "database2"], id="up-one-service"),
        pytest.param(compose.down(), ["down", "--remove-orphans"], id="down-keeps-volumes"),
        pytest.param(compose.down(volumes=True), ["down", "--remove-orphans", "--volumes"], id="down-volumes"),
        pytest.param(compose.build(), ["build"], id="build"),
        pytest.param(compose.build(["djangoapp"], pull=True, no_cache=True), ["build", "--pull", "--no-cache", "djangoapp"], id="build-options"),
        pytest.param(compose.logs(), ["logs", "--tail", "200"], id="logs"),
        pytest.param(compose.logs(["nginx"], follow=True, tail=10), ["logs", "--tail", "10", "--follow", "nginx"], id="logs-follow"),
        pytest.param(compose.ps(), ["ps"], id="ps"),
        pytest.param(compose.migrate("default"),
                     ["exec", "-T", "djangoapp", "python", "manage.py", "migrate", "--noinput", "--database", "default"], id="migrate"),
        pytest.param(compose.collectstatic(),
                     ["exec", "-T", "djangoapp", "python", "manage.py", "collectstatic", "--noinput", "--verbosity", "1"], id="collectstatic"),
        pytest.param(compose.createsuperuser(tty=True), ["exec", "djangoapp", "python", "manage.py", "createsuperuser"], id="createsuperuser-interactive"),
        pytest.param(compose.manage(["shell"], tty=True), ["exec", "djangoapp", "python", "manage.py", "shell"], id="manage-tty"),
        pytest.param(compose.psql_shell("database2"), ["exec", "database2", "psql", "-U", "database2", "-d", "database2"], id="psql"),
    ],
)
def test_plan(argv, expected):
    assert argv == expected


def test_unattended_createsuperuser_passes_the_password_by_name_only():
    argv = compose.createsuperuser("admin", "admin@example.com")
    assert argv == [
        "exec", "-T", "-e", "DJANGO_SUPERUSER_PASSWORD", "djangoapp", "python", "manage.py",
        "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com",
    ]
    assert not any("=" in word for word in argv)


def test_compose_prefix_names_the_project():
    assert compose.compose_prefix(["docker", "compose"], "hello") == ["docker", "compose", "--project-name", "hello"]
    assert compose.compose_prefix(["docker-compose"], "x") == ["docker-compose", "--project-name", "x"]
