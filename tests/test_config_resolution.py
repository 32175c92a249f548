"""The configuration a task runs with, resolved in one place: Compose's own variables read
as Compose reads them (environment first, then `.env`), and defaults flag > config > built-in."""

import pytest
from invoke import Config

from tasks import doctor
from tasks.errors import StackError
from tasks.execution.runner import Runner
from tasks.execution.targets import LocalTarget
from tasks.source import render, settings
from tests.stacks import stack

STACK = stack()  # the example's, not the checkout's live one (testkit/livestate.py)


@pytest.fixture
def root(tmp_path):
    return tmp_path


class TestComposeVariables:
    def test_dotenv_beside_the_compose_file_is_read_as_compose_reads_it(self, root):
        (root / ".env").write_text("# a comment\nHTTP_PORT=8011\nCOMPOSE_PROJECT_NAME='other'\n")
        assert settings.local_place(STACK, root, environ={}) == ("other", 8011)

    def test_the_environment_beats_dotenv(self, root):
        (root / ".env").write_text("HTTP_PORT=8011\n")
        assert settings.local_place(STACK, root, environ={"HTTP_PORT": "8022"}) == ("hello", 8022)

    def test_without_either_the_source_of_truth_decides(self, root):
        assert settings.local_place(STACK, root, environ={}) == (STACK.project, STACK.http_port)

    @pytest.mark.parametrize("value", ["eighty", "0", "70000"])
    def test_a_bad_port_is_one_clear_line(self, root, value):
        (root / ".env").write_text(f"HTTP_PORT={value}\n")
        with pytest.raises(StackError, match="is not a TCP port"):
            settings.local_place(STACK, root, environ={})

    def test_a_task_and_compose_agree_on_the_port(self, root, monkeypatch):
        (root / ".env").write_text("HTTP_PORT=8011\n")
        target = LocalTarget(None, STACK, root=root)
        assert target.http_port == 8011 and target.url == "http://127.0.0.1:8011/"


class TestDefaults:
    def test_a_flag_beats_config_which_beats_the_built_in_default(self):
        config = Config(overrides={"stack": {"timeout": 60}})
        assert settings.option(config, "timeout", 30) == 30
        assert settings.option(config, "timeout") == 60
        assert settings.option(Config(), "timeout") == settings.DEFAULTS["timeout"] == 180

    def test_values_take_the_defaults_type(self):
        assert settings.option(Config(), "timeout", "40") == 40

    def test_task_help_names_the_default_and_its_config_key(self):
        from tasks import ns

        help_text = ns["deploy.deploy"].help["keep"]
        assert help_text.endswith("(default: 5; config stack.keep_releases)")
        assert ns["backup.prune"].help["keep"].endswith("(default: 7; config stack.keep_backups)")

    def test_the_flag_parses_as_a_number(self):
        from tasks import ns

        args = {a.name: a for a in ns["up"].get_arguments()}
        assert args["timeout"].kind is int


class TestDoctorEnvFiles:
    def runner(self, root):
        return Runner(LocalTarget(None, STACK, root=root))

    def make_all(self, root):
        for path, text in render.secret_files(STACK).items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
            (root / path).chmod(0o600)

    def test_missing_files_are_named(self, root):
        ok, message, _ = doctor.check_env_files(self.runner(root))
        assert not ok and message == ("missing: config/django.env, config/secrets/django_secret_key, "
                                      "config/secrets/database1_password")

    def test_a_secret_others_can_read_is_named(self, root):
        self.make_all(root)
        (root / "config/secrets/database1_password").chmod(0o644)
        ok, message, hint = doctor.check_env_files(self.runner(root))
        assert not ok and message == "readable by others: config/secrets/database1_password"
        assert hint == "chmod 600 config/secrets/database1_password"

    def test_a_secret_left_in_an_env_file_of_an_earlier_version_is_named(self, root):
        self.make_all(root)
        (root / "config/db").mkdir()
        (root / "config/db/database1.env").write_text("POSTGRES_PASSWORD=x\n")
        ok, message, _ = doctor.check_env_files(self.runner(root))
        assert not ok and "config/db/database1.env" in message

    def test_all_present(self, root):
        self.make_all(root)
        assert doctor.check_env_files(self.runner(root))[0]
