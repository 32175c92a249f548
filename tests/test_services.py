"""[[services]] in config/stack.toml: a broker or cache from an image, parsed by its
grammar (each wrong value refused in one line), edited with comments kept, rendered on its
own network, never published, its password a secret file; and `inv service.*`."""
import json
from pathlib import Path

import pytest
import yaml

from tasks.errors import StackError
from tasks.source import render
from tasks.source.stack import Service, loads, with_service_added, with_service_removed
from tests.stacks import COMMITTED, NODES, SWARM, stack

REDIS = '\n[[services]]\nname = "redis"\nkind = "redis"\n'


def service(*lines):
    return '\n[[services]]\n' + "".join(line + "\n" for line in lines)


class TestParsing:
    def test_a_stack_without_services_has_none(self):
        assert stack().services == ()

    @pytest.mark.parametrize("kind, image, port, persistent, data", [
        ("redis", "redis:7.4", 6379, True, "/data"),
        ("valkey", "valkey/valkey:8.0", 6379, True, "/data"),
        ("memcached", "memcached:1.6", 11211, False, None),
        ("rabbitmq", "rabbitmq:3.13", 5672, True, "/var/lib/rabbitmq"),
    ])
    def test_each_kind_has_the_official_images_defaults(self, kind, image, port, persistent, data):
        parsed = stack(service('name = "svc"', f'kind = "{kind}"')).service("svc")
        assert parsed == Service(name="svc", kind=kind, image=image, port=port, persistent=persistent, data=data)

    def test_derived_names(self):
        redis = stack(REDIS).service("redis")
        assert (redis.network, redis.volume, redis.secret_name, redis.url_variable, redis.scheme) == (
            "redis_network", "redis_volume", "redis_password", "REDIS_URL", "redis")
        assert redis.image_expression == "${REDIS_IMAGE:-redis:7.4}"
        memcached = stack(service('name = "cache"', 'kind = "memcached"')).service("cache")
        assert (memcached.secret_name, memcached.scheme) == (None, "memcache")
        rabbit = stack(service('name = "broker"', 'kind = "rabbitmq"')).service("broker")
        assert (rabbit.secret_name, rabbit.scheme) == ("broker_password", "amqp")

    def test_a_service_from_any_image(self):
        parsed = stack(service('name = "search"', 'kind = "image"', 'image = "example/search:1.2"', "port = 7700",
                               'health = ["CMD", "search-ping"]', "persistent = true", 'data = "/srv/data"'))
        assert parsed.service("search") == Service(
            name="search", kind="image", image="example/search:1.2", port=7700, persistent=True,
            health=("CMD", "search-ping"), data="/srv/data")
        assert parsed.service("search").image_expression == "example/search:1.2"
        assert parsed.service("search").secret_name is None

    def test_the_image_of_a_kind_may_be_chosen(self):
        redis = stack(service('name = "redis"', 'kind = "redis"', 'image = "redis:7.2-alpine"',
                              "persistent = false")).service("redis")
        assert (redis.image_expression, redis.persistent) == ("${REDIS_IMAGE:-redis:7.2-alpine}", False)

    def test_persistent_volumes_are_the_stacks(self):
        assert stack(REDIS, service('name = "cache"', 'kind = "memcached"')).volumes[-1] == "redis_volume"

    def test_unknown_service_is_named_with_the_known_ones(self):
        with pytest.raises(StackError, match=r"^no service named 'cache' in config/stack.toml \(known: redis\)$"):
            stack(REDIS).service("cache")

    @pytest.mark.parametrize("text, message", [
        ("services = 5\n", "services 5 is not valid: [[services]] tables"),
        ("services = [5]\n", "[[services]] entry 1 5 is not valid: a table"),
        (service('kind = "redis"'), "a service name cannot be empty"),
        (service("name = 5", 'kind = "redis"'), "service name 5 is not valid: a string"),
        (service('name = "Redis"', 'kind = "redis"'), "invalid service name 'Redis'"),
        (service(f'name = "{"r" * 31}"', 'kind = "redis"'), "is too long (31 characters; at most 30)"),
        (service('name = "nginx"', 'kind = "redis"'), "service name 'nginx' is reserved"),
        (service('name = "static"', 'kind = "redis"'), "service name 'static' is reserved"),
        (service('name = "database"', 'kind = "redis"'), "service name 'database' is reserved"),
        (service('name = "database1"', 'kind = "redis"'), "service name 'database1' is the name of a database"),
        (REDIS + service('name = "redis"', 'kind = "valkey"'), "service 'redis' already exists"),
        (service('name = "redis"'), "[[services]] redis needs kind (one of redis, valkey, memcached, rabbitmq, image)"),
        (service('name = "redis"', "kind = 5"), "[[services]] redis kind 5 is not valid: one of redis, valkey"),
        (service('name = "redis"', 'kind = "mongo"'), "[[services]] redis kind 'mongo' is not valid: one of"),
        (service('name = "redis"', 'kind = "redis"', "colour = 1"), "[[services]] redis: unknown setting(s) colour"),
        (service('name = "redis"', 'kind = "redis"', "port = 6380"),
         '[[services]] redis: port is for kind = "image" (a redis service has its own)'),
        (service('name = "redis"', 'kind = "redis"', 'health = ["CMD", "true"]'), "health is for kind = \"image\""),
        (service('name = "redis"', 'kind = "redis"', 'persistent = "yes"'),
         "[[services]] redis persistent 'yes' is not valid: true or false"),
        (service('name = "redis"', 'kind = "redis"', "image = 7"), "[[services]] redis image 7 is not valid"),
        (service('name = "redis"', 'kind = "redis"', 'image = "redis 7"'), "[[services]] redis image 'redis 7' is not"),
        (service('name = "cache"', 'kind = "memcached"', "persistent = true"),
         "[[services]] cache: a memcached service keeps no data; drop persistent"),
        (service('name = "s"', 'kind = "image"', "port = 1", 'health = ["CMD", "x"]'), "[[services]] s needs image"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', 'health = ["CMD", "x"]'), "[[services]] s needs port"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = 1"), "[[services]] s needs health"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = 70000", 'health = ["CMD", "x"]'),
         "[[services]] s port 70000 is not a TCP port"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = true", 'health = ["CMD", "x"]'),
         "[[services]] s port True is not a TCP port"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = 1", 'health = "ping"'),
         "[[services]] s health 'ping' is not valid: a list of strings starting with \"CMD\""),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = 1", 'health = ["ping"]'),
         "[[services]] s health ['ping'] is not valid"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = 1", 'health = ["CMD", 5]'),
         "[[services]] s health ['CMD', 5] is not valid"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = 1", 'health = ["CMD", "x"]',
                 "persistent = true"), "[[services]] s: persistent = true needs data"),
        (service('name = "s"', 'kind = "image"', 'image = "x:1"', "port = 1", 'health = ["CMD", "x"]',
                 'data = "data"'), "[[services]] s data 'data' is not valid"),
    ])
    def test_bad_entries_are_refused_in_one_line(self, text, message):
        head = text if text.startswith("services") else ""
        with pytest.raises(StackError) as raised:
            loads(head + COMMITTED + ("" if head else text))
        assert message in str(raised.value)
        assert "\n" not in str(raised.value)


class TestAppEnvFacts:
    @pytest.mark.parametrize("fact", ["redis.url", "redis.host", "redis.port", "redis.password",
                                      "redis.password_file"])
    def test_a_service_fact_is_taken(self, fact):
        assert stack(REDIS, f'[app.env]\nBROKER = "{fact}"\n').app.env == (("BROKER", fact),)

    def test_a_service_without_password_has_no_password_fact(self):
        with pytest.raises(StackError, match=r"\[app.env\] PW = 'cache.password': service 'cache' \(memcached\) "
                                             r"has no password$"):
            stack(service('name = "cache"', 'kind = "memcached"'), '[app.env]\nPW = "cache.password"\n')

    def test_a_service_of_another_image_has_no_url_fact(self):
        search = service('name = "search"', 'kind = "image"', 'image = "x:1"', "port = 1", 'health = ["CMD", "x"]')
        with pytest.raises(StackError, match=r"\[app.env\] U = 'search.url': service 'search' \(image\) has no url$"):
            stack(search, '[app.env]\nU = "search.url"\n')

    def test_an_unknown_service_is_named_with_the_known_ones(self):
        with pytest.raises(StackError, match=r"no database named 'cache' in \[\[databases\]\].*"
                                             r"nor a service in \[\[services\]\] \(known: redis\)"):
            stack(REDIS, '[app.env]\nURL = "cache.url"\n')


class TestEditing:
    def test_adding_keeps_comments_and_loads(self):
        text = "# my stack\n" + COMMITTED
        added = with_service_added(text, "redis", "redis")
        assert added.startswith("# my stack\n" + COMMITTED)
        assert loads(added).service("redis").kind == "redis"

    def test_removing_gives_back_the_text(self):
        assert with_service_removed(with_service_added(COMMITTED, "redis", "redis"), "redis") == COMMITTED

    def test_removing_one_of_two_keeps_the_other(self):
        both = with_service_added(with_service_added(COMMITTED, "redis", "redis"), "cache", "memcached")
        assert [s.name for s in loads(with_service_removed(both, "redis")).services] == ["cache"]

    @pytest.mark.parametrize("name, kind, message", [
        ("redis", "image", "service kind 'image' cannot be added so"),
        ("redis", "mongo", "service kind 'mongo' cannot be added so: one of redis, valkey, memcached, rabbitmq"),
        ("database1", "redis", "service name 'database1' is the name of a database"),
        ("Bad", "redis", "invalid service name 'Bad'"),
    ])
    def test_bad_additions_are_refused(self, name, kind, message):
        with pytest.raises(StackError, match=message.replace("(", r"\(").replace(")", r"\)")):
            with_service_added(COMMITTED, name, kind)

    def test_adding_twice_is_refused(self):
        with pytest.raises(StackError, match="service 'redis' already exists"):
            with_service_added(with_service_added(COMMITTED, "redis", "redis"), "redis", "redis")

    def test_removing_an_unknown_one_is_refused(self):
        with pytest.raises(StackError, match=r"^no service named 'redis' in config/stack.toml \(known: none yet\)$"):
            with_service_removed(COMMITTED, "redis")


ALL = (REDIS + service('name = "cache"', 'kind = "memcached"') + service('name = "broker"', 'kind = "rabbitmq"')
       + service('name = "search"', 'kind = "image"', 'image = "example/search:1.2"', "port = 7700",
                 'health = ["CMD", "search-ping"]'))


def compose_of(*parts):
    return yaml.safe_load(render.rendered(stack(*parts))[render.COMPOSE_FILE])


class TestRendering:
    def test_without_services_nothing_changes(self):
        assert render.rendered(stack()) == render.rendered(loads(COMMITTED))
        assert "STACK_SERVICES" not in render.django_environment(stack())

    def test_each_service_is_on_its_own_network_never_published(self):
        compose = compose_of(ALL)
        for name in ("redis", "cache", "broker", "search"):
            assert compose["services"][name]["networks"] == [f"{name}_network"]
            assert "ports" not in compose["services"][name]
            assert compose["services"][name]["restart"] == "unless-stopped"
            assert f"{name}_network" in compose["services"]["djangoapp"]["networks"]
            assert compose["services"]["djangoapp"]["depends_on"][name] == {"condition": "service_healthy"}
            assert compose["networks"][f"{name}_network"] == {"driver": "bridge"}
            for other in ("nginx", "front", "secrets-init"):
                assert f"{name}_network" not in compose["services"][other].get("networks", [])

    def test_images_come_from_their_variables(self):
        services = compose_of(ALL)["services"]
        assert [services[name]["image"] for name in ("redis", "cache", "broker", "search")] == [
            "${REDIS_IMAGE:-redis:7.4}", "${MEMCACHED_IMAGE:-memcached:1.6}", "${RABBITMQ_IMAGE:-rabbitmq:3.13}",
            "example/search:1.2"]

    def test_persistent_services_keep_their_data_in_a_named_volume(self):
        compose = compose_of(ALL)
        assert "redis_volume:/data" in compose["services"]["redis"]["volumes"]
        assert "broker_volume:/var/lib/rabbitmq" in compose["services"]["broker"]["volumes"]
        assert "volumes" not in compose["services"]["cache"]
        assert {"redis_volume", "broker_volume"} <= set(compose["volumes"])
        assert "cache_volume" not in compose["volumes"]

    def test_the_password_is_a_secret_file_never_in_the_environment_nor_argv(self):
        compose = compose_of(ALL)
        redis, broker = compose["services"]["redis"], compose["services"]["broker"]
        assert redis["secrets"] == ["redis_password"] and broker["secrets"] == ["broker_password"]
        assert compose["secrets"]["redis_password"] == {"file": "${STACK_CONFIG_DIR:-./config}/secrets/redis_password"}
        assert "environment" not in redis and "environment" not in broker
        # The server reads it from its own configuration, written from the file at start.
        assert 'printf \'requirepass %s\\n\' "$$(cat /run/secrets/redis_password)"' in redis["command"][2]
        assert redis["command"][2].rstrip().endswith(
            "exec docker-entrypoint.sh redis-server /run/stack-service/redis.conf")
        assert {"type": "tmpfs", "target": "/run/stack-service"} in redis["volumes"]
        assert "default_pass = %s" in broker["command"][2] and "/etc/rabbitmq/conf.d/" in broker["command"][2]
        assert "secrets" not in compose["services"]["cache"] and "secrets" not in compose["services"]["search"]

    def test_health_checks(self):
        services = compose_of(ALL)["services"]
        assert "redis-cli -p 6379 ping" in services["redis"]["healthcheck"]["test"][3]
        assert 'REDISCLI_AUTH="$$(cat /run/secrets/redis_password)"' in services["redis"]["healthcheck"]["test"][3]
        assert services["broker"]["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "check_port_connectivity"]
        assert "/dev/tcp/127.0.0.1/11211" in services["cache"]["healthcheck"]["test"][3]
        assert services["search"]["healthcheck"]["test"] == ["CMD", "search-ping"]

    def test_the_app_gets_the_passwords_and_where_each_service_is(self):
        parsed = stack(ALL)
        assert render.app_secrets(parsed)[-2:] == ["redis_password", "broker_password"]
        assert json.loads(render.django_environment(parsed)["STACK_SERVICES"]) == [
            {"name": "redis", "kind": "redis", "host": "redis", "port": 6379,
             "password_file": "/run/secrets/redis_password"},
            {"name": "cache", "kind": "memcached", "host": "cache", "port": 11211, "password_file": None},
            {"name": "broker", "kind": "rabbitmq", "host": "broker", "port": 5672,
             "password_file": "/run/secrets/broker_password"},
            {"name": "search", "kind": "image", "host": "search", "port": 7700, "password_file": None}]

    def test_the_passwords_are_generated_per_machine(self):
        files = render.secret_files(stack(ALL))
        assert len(files[Path("config/secrets/redis_password")].strip()) >= 40
        assert Path("config/secrets/cache_password") not in files

    def test_a_clusters_stack_runs_them_on_overlay_networks(self):
        parsed = stack(NODES, SWARM, ALL)
        swarm = yaml.safe_load(render.rendered(parsed)[render.stack_file("swarm")])
        redis = swarm["services"]["redis"]
        assert redis["networks"] == ["redis_network"] and "ports" not in redis
        assert redis["deploy"]["placement"] == {"constraints": ["node.role == manager"]}
        assert "placement" not in swarm["services"]["cache"]["deploy"]
        assert swarm["networks"]["redis_network"] == {"driver": "overlay", "attachable": True}
        assert "redis_network" in swarm["services"]["djangoapp"]["networks"]
        assert "redis_network" not in swarm["services"]["nginx"]["networks"]
        assert swarm["secrets"]["redis_password"] == {"name": "${PROJECT}_redis_password_${VERSION_redis_password}",
                                                      "file": "${STACK_CONFIG_DIR}/secrets/redis_password"}
        assert "redis_volume" in swarm["volumes"]


# --- the app's side: config/app/djangostack/env.py turns STACK_SERVICES into variables ---

from tests.test_djangostack import HELLO, run, stack_env, stackenv  # noqa: E402

SERVICE_PASSWORD = "p@ss/w:rd%" + "x" * 20


def services_env(tmp_path, entries=None, **extra):
    """The app container's environment with the stack's services (as render.django_environment
    gives it), each password a file."""
    folder = tmp_path / "service-secrets"
    folder.mkdir(exist_ok=True)
    for name in ("redis", "broker"):
        (folder / f"{name}_password").write_text(SERVICE_PASSWORD + "\n")
    entries = entries if entries is not None else [
        {"name": "redis", "kind": "redis", "host": "redis", "port": 6379,
         "password_file": str(folder / "redis_password")},
        {"name": "cache", "kind": "memcached", "host": "cache", "port": 11211, "password_file": None},
        {"name": "broker", "kind": "rabbitmq", "host": "broker", "port": 5672,
         "password_file": str(folder / "broker_password")}]
    return stack_env(tmp_path, "hello.settings.production", "hello.wsgi:application",
                     STACK_SERVICES=json.dumps(entries), **extra)


QUOTED = "p%40ss%2Fw%3Ard%25" + "x" * 20


class TestStackVariables:
    def test_every_service_has_its_url_the_conventional_way(self, tmp_path):
        found = stackenv.stack_variables(services_env(tmp_path))
        assert found["REDIS_URL"] == f"redis://:{QUOTED}@redis:6379/0"
        assert found["BROKER_URL"] == f"amqp://app:{QUOTED}@broker:5672//"
        assert found["CACHE_URL"] == "memcache://cache:11211"
        # The databases' are there as before.
        assert found["DATABASE_URL"].startswith("postgres://app:")

    def test_celery_takes_rabbitmq_first_then_redis(self, tmp_path):
        assert stackenv.stack_variables(services_env(tmp_path))["CELERY_BROKER_URL"] == (
            f"amqp://app:{QUOTED}@broker:5672//")
        redis_only = [{"name": "cache", "kind": "memcached", "host": "cache", "port": 11211, "password_file": None},
                      {"name": "queue", "kind": "valkey", "host": "queue", "port": 6379, "password_file": None}]
        assert stackenv.stack_variables(services_env(tmp_path, redis_only))["CELERY_BROKER_URL"] == (
            "redis://:@queue:6379/0")
        memcached_only = redis_only[:1]
        assert "CELERY_BROKER_URL" not in stackenv.stack_variables(services_env(tmp_path, memcached_only))

    def test_a_broker_the_environment_sets_is_kept(self, tmp_path):
        environ = services_env(tmp_path, CELERY_BROKER_URL="redis://elsewhere:6379/1")
        assert "CELERY_BROKER_URL" not in stackenv.stack_variables(environ)

    def test_a_service_of_another_image_has_no_url(self, tmp_path):
        entries = [{"name": "search", "kind": "image", "host": "search", "port": 7700, "password_file": None}]
        assert "SEARCH_URL" not in stackenv.stack_variables(services_env(tmp_path, entries))

    def test_app_env_maps_service_facts(self, tmp_path):
        mapping = {"BROKER": "redis.url", "RHOST": "redis.host", "RPORT": "redis.port", "RPW": "redis.password",
                   "RPW_FILE": "redis.password_file", "MEMCACHE": "cache.url"}
        found = stackenv.stack_variables(services_env(tmp_path, STACK_APP_ENV=json.dumps(mapping)))
        assert {name: found[name] for name in mapping} == {
            "BROKER": found["REDIS_URL"], "RHOST": "redis", "RPORT": "6379", "RPW": SERVICE_PASSWORD,
            "RPW_FILE": str(tmp_path / "service-secrets/redis_password"), "MEMCACHE": "memcache://cache:11211"}

    @pytest.mark.parametrize("entries, mapping, message", [
        (None, '{"PW": "cache.password"}', "STACK_APP_ENV: PW = 'cache.password': service 'cache' (memcached) has no password"),
        (None, '{"X": "queue.url"}', "STACK_APP_ENV: X = 'queue.url': 'queue' is not one of the stack's databases "
                                     "(DJANGO_DATABASES='database1,database2') nor of its services (redis,cache,broker)"),
        ('[{"name": "redis"}]', None, 'STACK_SERVICES is not a JSON list of {"name", "kind", "host", "port", '
                                      '"password_file"} ([[services]] in config/stack.toml): {"name": "redis"} is not'),
        ('{"name": "redis"}', None, "STACK_SERVICES is not a JSON list of"),
        ("redis", None, "STACK_SERVICES is not JSON: Expecting value"),
        ('[{"name": "redis", "kind": "redis", "host": "redis", "port": 6379, "password_file": "/nowhere/pw"}]', None,
         "STACK_SERVICES: the password file of redis ('/nowhere/pw') cannot be read: No such file or directory"),
    ], ids=["no-password", "unknown-service", "incomplete-entry", "not-a-list", "not-json", "missing-password-file"])
    def test_bad_input_is_refused_in_one_line(self, tmp_path, entries, mapping, message):
        from django.core.exceptions import ImproperlyConfigured

        environ = services_env(tmp_path, **({"STACK_APP_ENV": mapping} if mapping else {}))
        if entries is not None:
            environ["STACK_SERVICES"] = entries
        with pytest.raises(ImproperlyConfigured) as raised:
            stackenv.stack_variables(environ)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)

    def test_the_settings_put_them_in_the_apps_process_alone(self, tmp_path):
        script = ("import json, os, django; django.setup(); "
                  "print(json.dumps({k: os.environ.get(k) for k in ('REDIS_URL', 'CELERY_BROKER_URL')}))")
        environ = services_env(tmp_path)
        shown = json.loads(run(HELLO, ["-c", script], environ).stdout.strip().splitlines()[-1])
        assert shown == {"REDIS_URL": f"redis://:{QUOTED}@redis:6379/0",
                         "CELERY_BROKER_URL": f"amqp://app:{QUOTED}@broker:5672//"}
        assert "REDIS_URL" not in environ and SERVICE_PASSWORD not in json.dumps(environ)

    def test_the_old_name_still_answers(self, tmp_path):
        environ = services_env(tmp_path)
        assert stackenv.conventional_variables(environ) == stackenv.stack_variables(environ)


# --- inv service.add / remove: all or nothing, against the fake engine of tests/fakes.py ---

import shlex  # noqa: E402

from invoke import Result  # noqa: E402

from tasks import service as service_tasks  # noqa: E402
from tasks.errors import TaskError  # noqa: E402
from tasks.plans import compose as compose_plans  # noqa: E402
from tests.test_db_add_undo import PROJECT, SECRETS_INIT, files, runner  # noqa: E402
from tests.test_db_add_undo import tree  # noqa: E402,F401  (the fixture: a git copy of the project)
from testkit.projectcopy import git_status  # noqa: E402

add_service = service_tasks.add.body.__wrapped__
remove_service = service_tasks.remove.body.__wrapped__
COMPOSE = ["docker", "compose", "--project-name", PROJECT]
START = shlex.join([*COMPOSE, *compose_plans.up(["database1", "redis"], build=False, wait=False, no_deps=True)])
REDIS_VOLUME = f"docker volume inspect --format '{{{{.Name}}}}' {PROJECT}_redis_volume"
NO_IMAGE = Result(exited=1, stderr="Error response from daemon: manifest for local/redis:missing not found\n")


@pytest.mark.live_state
class TestAddTask:
    def test_without_up_it_writes_the_files_and_a_password(self, tree):
        r, conn = runner(tree, {})
        add_service(r, "redis", kind="redis", up=False, timeout=0)
        assert loads((tree / "config/stack.toml").read_text()).service("redis").kind == "redis"
        assert '"redis":' in (tree / "docker-compose.yml").read_text()
        secret = tree / "config/secrets/redis_password"
        assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) >= 40
        assert not any(" up " in c for c in conn.commands)

    def test_a_service_that_cannot_start_puts_every_file_back(self, tree):
        before = files(tree)
        r, conn = runner(tree, {START: NO_IMAGE, REDIS_VOLUME: Result(exited=1)})
        with pytest.raises(TaskError) as err:
            add_service(r, "redis", kind="redis", up=True, timeout=0)
        assert err.value.message.startswith("error: ")
        assert err.value.message.endswith(
            "; service redis was not added: put back config/stack.toml, docker-compose.yml; "
            "deleted the new config/secrets/redis_password; removed its container and new volume")
        assert files(tree) == before
        assert git_status(tree) == ""
        after = conn.commands[conn.commands.index(START) + 1:]
        assert after[:4] == [f"{shlex.join(COMPOSE)} rm --force --stop redis", f"docker network rm {PROJECT}_redis_network",
                             f"docker volume rm {PROJECT}_redis_volume", SECRETS_INIT]
        assert not any("--scale" in c for c in conn.commands)

    def test_a_service_without_data_removes_no_volume(self, tree):
        before = files(tree)
        start = START.replace(" redis", " cache")
        r, conn = runner(tree, {start: NO_IMAGE})
        with pytest.raises(TaskError) as err:
            add_service(r, "cache", kind="memcached", up=True, timeout=0)
        assert err.value.message.endswith("; service cache was not added: put back config/stack.toml, "
                                          "docker-compose.yml; removed its container")
        assert files(tree) == before
        # The volumes are listed before the databases start (a database's data moved to
        # another major?); none is made or removed.
        assert not any("volume" in c and not c.startswith("docker volume ls ") for c in conn.commands)

    def test_once_the_app_serves_with_it_the_service_is_kept_and_the_error_says_why(self, tree):
        r, conn = runner(tree, {})
        conn.databases = ("database1", "redis")
        with pytest.raises(TaskError) as err:
            add_service(r, "redis", kind="redis", up=True, timeout=0)
        assert err.value.message.endswith(
            "; the app already serves with redis, so it stays in config/stack.toml and docker-compose.yml: fix the "
            "cause and run `inv up`, or take it out with `inv service.remove redis`")
        assert START in conn.commands

    @pytest.mark.parametrize("name, kind, message", [
        ("Redis", "redis", "invalid service name 'Redis'"),
        ("database1", "redis", "service name 'database1' is the name of a database"),
        ("redis", "mongo", "service kind 'mongo' cannot be added so"),
    ])
    def test_bad_input_changes_nothing(self, tree, name, kind, message):
        before = files(tree)
        r, conn = runner(tree, {})
        with pytest.raises(StackError, match=message):
            add_service(r, name, kind=kind, up=True, timeout=0)
        assert files(tree) == before
        assert not any(" up " in c for c in conn.commands)


@pytest.mark.live_state
class TestRemoveTask:
    def test_it_stops_it_and_keeps_its_data_unless_purged(self, tree):
        r, _ = runner(tree, {})
        add_service(r, "redis", kind="redis", up=False, timeout=0)
        r, conn = runner(tree, {})
        remove_service(r, "redis")
        assert loads((tree / "config/stack.toml").read_text()).services == ()
        assert (tree / "config/secrets/redis_password").exists()
        assert not any("volume rm" in c for c in conn.commands)
        assert f"docker network rm {PROJECT}_redis_network" in conn.commands

    def test_a_running_app_is_rolled_out_without_it(self, tree):
        r, _ = runner(tree, {})
        add_service(r, "redis", kind="redis", up=False, timeout=0)
        running = shlex.join(compose_plans.running_services(PROJECT))
        r, conn = runner(tree, {running: Result("djangoapp\nnginx\nfront\ndatabase1\nredis\n")},
                         made_in="before")
        remove_service(r, "redis", timeout=0)
        rm = f"{shlex.join(COMPOSE)} rm --force --stop redis"
        assert conn.commands.index(rm) < conn.commands.index(SECRETS_INIT)
        # A new app container beside the old one, then the old one drained: no `up` of the whole stack.
        assert any("--scale" in c for c in conn.commands[conn.commands.index(SECRETS_INIT):])
        assert f"{PROJECT}-djangoapp-1" not in conn.app and conn.app[f"{PROJECT}-djangoapp-2"] == "running healthy"

    def test_purge_deletes_its_volume_and_password(self, tree):
        r, _ = runner(tree, {})
        add_service(r, "redis", kind="redis", up=False, timeout=0)
        r, conn = runner(tree, {})
        remove_service(r, "redis", purge=True, yes=True)
        assert f"docker volume rm {PROJECT}_redis_volume" in conn.commands
        assert not (tree / "config/secrets/redis_password").exists()

    def test_an_unknown_service_is_refused(self, tree):
        r, _ = runner(tree, {})
        with pytest.raises(StackError, match=r"no service named 'redis' in config/stack.toml \(known: none yet\)"):
            remove_service(r, "redis")


# --- backups say what they skip ----------------------------------------------------------

from tests.test_backup_service import PNG, programs, run_answers, script  # noqa: E402,F401


class TestBackups:
    def test_a_backup_run_names_each_service_it_skips_and_why(self, script, monkeypatch, capsys):
        (script.tmp_path / "backup/media/a.png").write_bytes(PNG)
        monkeypatch.setenv("BACKUP_SERVICES", "redis:redis,cache:memcached")
        fake = programs(script, monkeypatch, run_answers(script))
        assert script.main(["run"]) == 0
        out = capsys.readouterr().out
        assert ("skipping service redis (redis): a queue or cache holds jobs in flight and cached values, "
                "not records") in out
        assert "skipping service cache (memcached):" in out
        assert not any("redis" in word for argv in fake.argv for word in argv)

    def test_the_backup_service_is_told_the_services(self):
        backups = '\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/backups"\n'
        compose = compose_of(backups, ALL)
        assert compose["services"]["backup"]["environment"]["BACKUP_SERVICES"] == (
            "redis:redis,cache:memcached,broker:rabbitmq,search:image")
        assert "redis_network" not in compose["services"]["backup"]["networks"]
        assert "BACKUP_SERVICES" not in compose_of(backups)["services"]["backup"]["environment"]


# --- doctor: each service running and healthy ---------------------------------------------

from tasks import doctor  # noqa: E402
from tasks.execution.targets import HostTarget  # noqa: E402
from tasks.plans import rollout as rollout_plans  # noqa: E402
from tests.fakes import Recorder  # noqa: E402


def doctor_on_host(stack_text, containers, states, answers=None):
    parsed = loads(stack_text + '\n[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\n'
                                'project = "hello-prod"\n')
    listing = shlex.join(rollout_plans.service_containers("hello-prod"))
    ids = [line.split()[0] for line in containers.splitlines() if line.split()[1] in ("redis", "cache")]
    conn = Recorder({listing: Result(containers), shlex.join(rollout_plans.service_states(ids)): Result(states),
                     **(answers or {})})
    from tasks.execution.runner import Runner
    return doctor.check_services(Runner(HostTarget(conn, parsed.hosts["prod"], parsed, local_c=Recorder()))), conn


class TestDoctor:
    RUNNING = "a1 djangoapp\nb2 redis\nc3 cache\n"

    def test_healthy_services_pass(self):
        outcome, _ = doctor_on_host(COMMITTED + REDIS + service('name = "cache"', 'kind = "memcached"'),
                                    self.RUNNING, "redis\trunning\thealthy\ncache\trunning\thealthy\n")
        assert outcome == (True, "services running and healthy: redis, cache", None)

    def test_an_unhealthy_or_missing_service_fails_with_its_fix_for_that_host(self):
        outcome, _ = doctor_on_host(COMMITTED + REDIS + service('name = "cache"', 'kind = "memcached"'),
                                    "a1 djangoapp\nb2 redis\n", "redis\trunning\tunhealthy\n")
        assert outcome == [
            (False, "service redis is running (unhealthy) on prod", "`inv logs -s redis --host prod` says why"),
            (False, "service cache has no container on prod", "`inv up --host prod`")]

    def test_a_service_the_engine_still_calls_starting_is_asked_now(self):
        # The engine checks every 10 s: right after an up, its verdict may not be in yet.
        test = '{"Test":["CMD","sh","-c","redis-cli ping | grep -q PONG"]}'
        states = f"redis\trunning\tstarting\t/hello-prod-redis-1\t{test}\n"
        own_test = shlex.join(["docker", "exec", "hello-prod-redis-1", "sh", "-c", "redis-cli ping | grep -q PONG"])
        outcome, conn = doctor_on_host(COMMITTED + REDIS, "a1 djangoapp\nb2 redis\n", states)
        assert outcome == (True, "services running and healthy: redis", None)
        assert own_test in [command for _, command, _ in conn.calls]
        # Its test failing now leaves the engine's word: starting is not healthy.
        failing = {own_test: Result(exited=1)}
        outcome, _ = doctor_on_host(COMMITTED + REDIS, "a1 djangoapp\nb2 redis\n", states, failing)
        assert outcome == [(False, "service redis is running (starting) on prod",
                            "`inv logs -s redis --host prod` says why")]

    def test_a_stack_that_is_not_running_is_not_checked(self):
        outcome, _ = doctor_on_host(COMMITTED + REDIS, "", "")
        assert outcome == (True, "the stack is not running on prod: services not checked", None)

    def test_without_services_it_runs_nothing(self):
        outcome, conn = doctor_on_host(COMMITTED, self.RUNNING, "")
        assert outcome == (True, "no [[services]] in config/stack.toml", None) and conn.commands == []
        assert "services" in HostTarget.doctor_checks


# --- a cluster: the Swarm names a service makes are checked with the others ---------------

from tasks.source.stack import DIGEST, swarm_names  # noqa: E402


class TestSwarmNames:
    def test_the_names_checked_are_those_the_stack_file_gives_swarm(self):
        parsed = stack(NODES, SWARM, REDIS, service('name = "cache"', 'kind = "memcached"'))
        spec = yaml.safe_load(render.rendered(parsed)[render.stack_file("swarm")])
        checked = {(kind, name) for _, kind, name, _ in swarm_names("hello", parsed.databases, False, parsed.services)}
        assert {("service", "hello_redis"), ("service", "hello_cache"),
                ("secret", f"hello_redis_password_{DIGEST}")} <= checked
        made = {("service", f"hello_{name}") for name in spec["services"]}
        made |= {("secret", entry["name"].replace("${PROJECT}", "hello").replace("${VERSION_" + key + "}", DIGEST))
                 for key, entry in spec["secrets"].items()}
        assert made == {entry for entry in checked if entry[0] in ("service", "secret")}

    def test_a_service_name_too_long_for_swarm_is_refused_as_a_service(self):
        long_project = NODES.replace('[hosts.node1]\n', '[hosts.node1]\nproject = "a-rather-long-project"\n')
        with pytest.raises(StackError, match=r"\[clusters.swarm\]: service name 'r{30}' is too long for Swarm: the "
                                             r"secret a-rather-long-project_r{30}_password_<digest> would have 74 "
                                             r"characters \(at most 64\); use at most 20 characters"):
            stack(long_project, SWARM, service(f'name = "{"r" * 30}"', 'kind = "redis"'))


# --- doctor: each process as many containers as it should, running and healthy ------------

WORKERS = '\n[[processes]]\nname = "worker"\ncommand = ["celery", "-A", "hello", "worker"]\nreplicas = 2\nhealth = "celery"\n'


def doctor_processes(stack_text, containers, states):
    parsed = loads(stack_text + '\n[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\n'
                                'project = "hello-prod"\n')
    listing = shlex.join(rollout_plans.service_containers("hello-prod"))
    ids = [line.split()[0] for line in containers.splitlines() if line.split()[1] != "djangoapp"]
    conn = Recorder({listing: Result(containers), shlex.join(rollout_plans.service_states(ids)): Result(states)})
    from tasks.execution.runner import Runner
    return doctor.check_processes(Runner(HostTarget(conn, parsed.hosts["prod"], parsed, local_c=Recorder()))), conn


class TestDoctorProcesses:
    RUNNING = "a1 djangoapp\nw1 worker\nw2 worker\n"

    def test_workers_answering_pass(self):
        outcome, _ = doctor_processes(COMMITTED + REDIS + WORKERS, self.RUNNING,
                                      "worker\trunning\thealthy\nworker\trunning\thealthy\n")
        assert outcome == (True, "processes running and healthy: worker 2/2", None)

    def test_a_worker_not_answering_or_missing_fails_with_its_fix(self):
        outcome, _ = doctor_processes(COMMITTED + REDIS + WORKERS, "a1 djangoapp\nw1 worker\n",
                                      "worker\trunning\tunhealthy\n")
        assert outcome == [(False, "process worker: 0 of 2 running and healthy on prod; running (unhealthy)",
                            "`inv logs -s worker --host prod` says why; `inv up --host prod` starts what is missing")]

    def test_without_processes_it_runs_nothing(self):
        outcome, conn = doctor_processes(COMMITTED, "a1 djangoapp\n", "")
        assert outcome == (True, "no [[processes]] or [[schedules]] in config/stack.toml", None)
        assert conn.commands == [] and "processes" in HostTarget.doctor_checks
