"""The one validation layer (tasks/source/values.py): each grammar matched in full, types
checked, one-line errors; the values a security probe got through are refused; and property
tests that whatever is accepted renders a compose file that parses and an Nginx config that
keeps one directive per value."""
import re

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from tasks.errors import StackError
from tasks.source import render, settings as stack_settings, values
from tasks.source.stack import loads, validate_database_name

from .stackinputs import INPUTS, accepted
from tests.stacks import COMMITTED

BASE = COMMITTED


def with_project(**changes) -> str:
    lines = []
    for line in BASE.splitlines():
        key = line.split("=")[0].strip()
        if key in changes:
            continue
        lines.append(line)
        if line.strip() == "[project]":
            lines += [f"{k} = {v}" for k, v in changes.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("changes, message", [
    ({"client_max_body_size": '"1m; location /leak/ {alias /etc/; autoindex on;} #"'}, "client_max_body_size '1m; location"),
    ({"http_port": "true"}, "http_port True is not a TCP port"),
    ({"http_port": "8000.9"}, "http_port 8000.9 is not a TCP port"),
    ({"http_port": "70000"}, "http_port 70000 is not a TCP port"),
    ({"name": '"hello\\n"'}, "project name 'hello\\n' is not valid"),
    ({"name": '"Hello"'}, "project name 'Hello' is not valid"),
], ids=["nginx-injection", "boolean-port", "float-port", "port-range", "newline-project", "uppercase-project"])
def test_project_values_are_refused_in_one_line(changes, message):
    with pytest.raises(StackError) as err:
        loads(with_project(**changes))
    assert message in str(err.value) and "\n" not in str(err.value).replace("\\n", "")


@pytest.mark.parametrize("name", ["database2\n", "database2 ", "Database2", "2db", "db-2", "", "x" * 31])
def test_database_names_match_in_full(name):
    with pytest.raises(StackError):
        validate_database_name(name)


@pytest.mark.parametrize("name", [
    "djangoapp", "nginx",
    "front",
])
def test_the_stacks_own_service_names_are_reserved(name):
    with pytest.raises(StackError, match="is reserved"):
        validate_database_name(name)


def test_environment_overrides_get_the_same_checks():
    stack = loads(BASE)
    for env, message in [({"HTTP_PORT": "8000; id"}, "HTTP_PORT (from the environment or .env) '8000; id' is not a TCP port"),
                         ({"COMPOSE_PROJECT_NAME": "x y"}, "COMPOSE_PROJECT_NAME (from the environment or .env) 'x y'")]:
        with pytest.raises(StackError, match=re.escape(message)):
            stack_settings.local_place(stack, render.ROOT, environ=env)
    assert stack_settings.local_place(stack, render.ROOT, environ={"HTTP_PORT": "8081"})[1] == 8081


@pytest.mark.parametrize("value", ["10.0.0.2", "prod.example.com", "::1", "fe80::1", "web-1"])
def test_addresses_people_use_are_accepted(value):
    assert values.address(value, "address") == value


@settings(max_examples=60, deadline=None)
@given(**INPUTS)
def test_whatever_is_accepted_renders_files_that_parse(name, port, size, databases):
    stack = accepted(name, port, size, databases)
    if stack is None:
        return
    files = render.rendered(stack)
    compose = yaml.safe_load(files[render.COMPOSE_FILE])
    assert compose["name"] == name
    assert set(compose["services"]) == {"djangoapp", "nginx", "front", "secrets-init", *databases}
    nginx = files[render.NGINX_CONF]
    assert nginx.count("client_max_body_size") == 1
    assert f"client_max_body_size {size};" in nginx
    assert nginx.count("{") == nginx.count("}")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_either_fits_a_grammar_in_full_or_is_refused(value):
    for check in (values.project, values.body_size, lambda v: values.address(v, "address"),
                  lambda v: values.user(v, "user"), lambda v: values.directory(v, "directory")):
        try:
            accepted = check(value)
        except StackError as exc:
            assert "\n" not in str(exc).replace("\\n", "")
            continue
        assert "\n" not in accepted and not accepted.startswith("-") and ";" not in accepted
