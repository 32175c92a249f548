import shlex

import pytest
from invoke import Config, MockContext, Result

from tasks.plans import compose


@pytest.fixture
def mock_c():
    """A MockContext that knows the engine/compose probes; any other command must be
    declared by the test, and an unexpected one raises."""

    def make(commands=None, **config):
        run = {
            "docker version --format '{{.Server.Version}}'": Result("28.2.2\n"),
            "docker compose version --short": Result("2.40.3\n"),
            "docker buildx version": Result("github.com/docker/buildx 0.29.1 0.29.1-4\n"),
            shlex.join(compose.running_services("hello")): Result("djangoapp\nnginx\nfront\ndatabase1\n"),
            "docker ps --all --quiet --filter label=hello.backup-helper=hello": Result(""),
        }
        run.update(commands or {})
        return MockContext(config=Config(overrides=config), run=run, repeat=True)

    return make


@pytest.fixture(autouse=True)
def _no_runtime_overrides(request, monkeypatch):
    # Fast tests see the source of truth as committed, whatever the shell exports (CI
    # exports the base images' names, which a deploy passes on: release.PASS_THROUGH; the
    # end-to-end tests need them, as the stand-ins of the official images).
    from tasks.plans.release import PASS_THROUGH
    images = () if request.node.get_closest_marker("e2e") else PASS_THROUGH
    for name in ("COMPOSE_PROJECT_NAME", "HTTP_PORT", "DJANGO_SUPERUSER_PASSWORD", *images):
        monkeypatch.delenv(name, raising=False)
