"""config/stack.toml with a value of the wrong type anywhere: one line naming the key and what
it takes, never a traceback. The known cases one by one, then the whole document fuzzed:
valid documents with values replaced, removed or added at any level (hosts, their sites,
groups, clusters, backups), of any TOML type; loading and rendering either succeed or raise
the project's own one-line StackError."""
import re
import tomllib

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings, strategies as st

from tasks.errors import StackError
from tasks.source import render, values
from tasks.source.stack import Logs, loads, parse
from tests.stacks import COMMITTED

BASE = COMMITTED
HOST = '\n[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\ndomains = ["example.com"]\n'
BACKUPS = '\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/backups"\n'


@pytest.mark.parametrize("text, message", [
    ('hosts = ""\n' + BASE, "hosts '' is not valid: a table of [hosts.NAME] tables"),
    ("groups = 5\n" + BASE, "groups 5 is not valid: a table of lists of [hosts] names"),
    ("clusters = []\n" + BASE, "clusters [] is not valid: a table of [clusters.NAME] tables"),
    ("databases = 5\n" + BASE.split("[[databases]]")[0],
     "databases 5 is not valid: [[databases]] tables, each with name = \"...\""),
    (BASE + BACKUPS + "drill = []\n",
     "[backups] drill [] is not valid: daily, weekly, monthly, off or five cron fields"),
    (BASE + HOST + "acme_server = []\n", "[hosts.prod]: acme_server [] is not valid: an https:// ACME directory URL"),
    ("backups = 1\n" + BASE, "backups 1 is not valid: a table"),
    ('project = "hello"\n' + BASE.replace("[project]", "[old]"), "project 'hello' is not valid: a [project] table"),
    (BASE.replace('name = "hello"', ""), '[project] needs name = "..."'),
    (BASE + "[[databases]]\nname = 5\n", "database name 5 is not valid: a string"),
    ("databases = [5]\n" + BASE.split("[[databases]]")[0],
     "[[databases]] entry 1 5 is not valid: a table"),
    (BASE + HOST + "tls = []\n", "[hosts.prod]: tls [] is not valid: one of acme, files, off"),
    (BASE + '\n[hosts.node1]\naddress = "n1"\ndirectory = "/srv/hello"\n[clusters.prod]\nmanager = "node1"\n'
     "publish_mode = {}\n", "[clusters.prod] publish_mode {} is not valid: one of ingress, host"),
], ids=["hosts", "groups", "clusters", "databases", "drill", "acme_server", "backups", "project", "project-name",
        "database-name", "database-entry", "tls", "publish_mode"])
def test_a_value_of_the_wrong_type_is_named_in_one_line(text, message):
    with pytest.raises(StackError) as caught:
        loads(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("config/stack.toml: ")


@pytest.mark.parametrize("address", ["-d@example.com", ".ops@example.com", "ops.@example.com", "o..ps@example.com",
                                     "ops@-example.com", "ops@example-.com", "ops@example.com\n", "ops@example",
                                     "ops@@example.com", "ops@example.com -d x", "o" * 65 + "@example.com",
                                     "ops@" + "a" * 250 + ".com", 5, ["ops@example.com"]])
def test_an_acme_email_that_certbot_could_read_as_an_option_or_garble_is_refused(address):
    with pytest.raises(StackError, match="acme_email .* is not valid: an e-mail address"):
        values.email(address, "acme_email")
    with pytest.raises(StackError, match=r"\[hosts.prod\]: acme_email"):
        loads(BASE + HOST + "acme_email = " + tomlkit.item(address).as_string() + "\n")


@pytest.mark.parametrize("address", ["ops@example.com", "first.last+certs@mail.example.co.uk", "a_b%c@x-y.example"])
def test_email_addresses_people_use_are_accepted(address):
    assert values.email(address, "acme_email") == address
    assert loads(BASE + HOST + f'acme_email = "{address}"\n').hosts["prod"].site.acme_email == address


# Any TOML value: what a hand edit could put anywhere.
WORDS = st.sampled_from(["", "-x", "..", "/", "prod", "node1", "database1", "production", "off", "weekly", "files",
                         "acme", "example.com", "/srv/x", "0.0.0.0", "15 3 * * *", "* * * * * *", "a" * 70])
SCALARS = st.one_of(WORDS, st.text(max_size=12), st.integers(-2, 70000) | st.integers(), st.floats(), st.booleans(),
                    st.datetimes(), st.dates(), st.times())
ANYTHING = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) |
                        st.dictionaries(st.text(max_size=6) | WORDS, inner, max_size=3), max_leaves=6)

HOSTS = ("prod", "node1", "node2")


def optional(**keys):
    return st.fixed_dictionaries({}, optional=keys)


@st.composite
def sites(draw):
    """A host's site keys, consistent with the TLS mode drawn."""
    tls = draw(st.sampled_from(["acme", "files", "off", None]))
    site = {} if tls is None else {"domains": draw(st.sampled_from([["example.com"], ["example.com", "www.example.com"]])),
                                   "tls": tls}
    if tls == "acme":
        site.update(draw(optional(acme_email=st.just("ops@example.com"), acme_ca_bundle=st.just("tests/ca.pem"),
                                  acme_server=st.sampled_from(["production", "staging", "https://ca.example:14000/d"]))))
    elif tls == "files":
        site.update(certificate="/etc/ssl/site.pem", certificate_key="/etc/ssl/site.key")
    elif tls == "off":
        site.update(draw(optional(trusted_proxies=st.just(["10.0.0.0/8", "192.0.2.7"]))))
    site.update(draw(optional(bind=st.sampled_from(["0.0.0.0", "::", "203.0.113.10"]), https_port=st.just(8443),
                              hsts_max_age=st.integers(0, 63072000), hsts_include_subdomains=st.booleans(),
                              hsts_preload=st.booleans())))
    return site


@st.composite
def valid_documents(draw):
    """A document `inv` takes: the project, databases, and maybe hosts with their sites,
    groups, clusters of those hosts, backups and logs."""
    databases = draw(st.lists(st.sampled_from(["database1", "reports", "d" * 20]), min_size=1, max_size=3, unique=True))
    document = {"project": {"name": draw(st.sampled_from(["hello", "hello-prod"])),
                            **draw(optional(http_port=st.integers(1024, 65535),
                                            client_max_body_size=st.sampled_from(["20m", "1g", "512k"])))},
                "databases": [{"name": name} for name in databases]}
    hosts = draw(st.lists(st.sampled_from(HOSTS), max_size=3, unique=True))
    if hosts:
        document["hosts"] = {name: {"address": draw(st.sampled_from(["203.0.113.10", "node1.example", "::1"])),
                                    "directory": "/srv/hello",
                                    **draw(optional(user=st.just("deploy"), port=st.integers(1, 65535),
                                                    identity_file=st.just("~/.ssh/id"), http_port=st.integers(1024, 9000),
                                                    project=st.just("hello-prod"))),
                                    **draw(sites())} for name in hosts}
        if draw(st.booleans()):
            document["groups"] = {"web": draw(st.lists(st.sampled_from(hosts), max_size=3, unique=True))}
        if draw(st.booleans()):
            manager, *workers = hosts
            document["clusters"] = {"prod": {"manager": manager, "workers": workers, **draw(optional(
                replicas=st.integers(1, 5), databases=st.just({databases[0]: hosts[-1]}),
                endpoint_mode=st.sampled_from(["vip", "dnsrr"]), publish_mode=st.sampled_from(["ingress", "host"])))}}
    if draw(st.booleans()):
        document["app"] = draw(optional(
            path=st.sampled_from(["hello", "mysite"]), settings=st.sampled_from(["mysite.settings", "a.b.production"]),
            wsgi=st.just("mysite.wsgi:application"), python=st.sampled_from(["3.10", "3.12", "3.14"]),
            python_image=st.sampled_from(["python:3.12-slim", "local/python:3.13-slim"]),
            requirements=st.sampled_from(["requirements.txt", "mysite/Pipfile.lock", "uv.lock",
                                          "requirements/production.txt"]),
            build_packages=st.just(["build-essential"]), packages=st.just(["libpq5"]),
            env=st.just({"DB_HOST": f"{databases[0]}.host", "SECRET": "secret_key"})))
    if draw(st.booleans()):
        document["databases"][-1]["apps"] = ["notes"]
    if draw(st.booleans()):
        document["backups"] = {
            "schedule": draw(st.sampled_from(["15 3 * * *", "*/30 * * * 1-5"])),
            "repository": draw(st.sampled_from(["/srv/backups", "sftp:backup@vault.example:/b",
                                                "s3:https://s3.example/bk/p"])),
            **draw(optional(keep=st.dictionaries(st.sampled_from(["daily", "weekly", "yearly"]), st.integers(1, 30),
                                                 min_size=1),
                            drill=st.sampled_from(["daily", "off", "0 5 * * 0"]),
                            notify=st.sampled_from(["json://hooks.example/b", ["mailto://u:p@example.com"]])))}
    if draw(st.booleans()):
        document["logs"] = draw(optional(driver=st.sampled_from(["json-file", "local"]),
                                         max_size=st.sampled_from(["10m", "512k", "1g"]), max_file=st.integers(1, 100)))
    return document


def places(value, path=()):
    """Every (container, key) in VALUE: where a value can be replaced or removed, and a new
    key added beside the others of a table."""
    if isinstance(value, dict):
        yield value, "extra"
        for key, inner in value.items():
            yield value, key
            yield from places(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield value, index
            yield from places(inner, (*path, index))


@st.composite
def documents(draw):
    """A valid-looking document, then up to three edits anywhere in it."""
    document = draw(valid_documents())
    for _ in range(draw(st.integers(0, 3))):
        container, key = draw(st.sampled_from(list(places(document))))
        if isinstance(container, dict) and key in container and draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(ANYTHING)
    return document


def as_toml(document) -> dict | None:
    """DOCUMENT written as TOML and read back as `inv` reads it; None where TOML cannot hold it
    (a key in a list, say), or reads it back otherwise."""
    try:
        data = tomllib.loads(tomlkit.dumps(document))
    except Exception:
        return None
    return data


def load_and_render(data) -> None:
    stack = parse(data)
    render.rendered(stack)
    for host in stack.hosts.values():
        render.site_files(stack, host.site)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_document_loads_and_renders_or_is_refused_in_one_line(document):
    for data in (document, as_toml(document)):
        if data is None:
            continue
        try:
            load_and_render(data)
        except StackError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("config/stack.toml: ")


@pytest.mark.parametrize("table", ["project", "databases", "hosts", "backups", "top"])
def test_a_setting_whose_name_breaks_the_line_is_named_quoted(table):
    """Found by the fuzz above: a key of a line break or nothing at all, named as it is,
    made the error two lines."""
    data = {"project": {"name": "hello"}, "databases": [{"name": "database1"}],
            "hosts": {"extra": {"address": "a.example", "user": "u", "directory": "/srv/x"}},
            "backups": {"schedule": "15 3 * * *", "repository": "/srv/restic"}}
    where = {"project": data["project"], "databases": data["databases"][0], "hosts": data["hosts"]["extra"],
             "backups": data["backups"], "top": data}[table]
    where.update({"\n": 1, "": 2})
    with pytest.raises(StackError) as refused:
        parse(data)
    assert "\n" not in str(refused.value) and "unknown setting(s) '', '\\n'" in str(refused.value)


def test_the_documents_fuzzed_are_valid_before_their_edits():
    """The generator is not vacuous: the documents it edits load and render as they are,
    hosts, clusters and backups included."""
    loaded = {"clusters": 0, "hosts": 0, "backups": 0, "app": 0, "logs": 0}

    @settings(max_examples=60, deadline=None, database=None)
    @given(valid_documents())
    def count(document):
        stack = parse(document)
        load_and_render(document)
        loaded["clusters"] += bool(stack.clusters)
        loaded["hosts"] += bool(stack.hosts)
        loaded["backups"] += bool(stack.backups)
        loaded["app"] += "app" in document
        loaded["logs"] += stack.logs != Logs()

    count()
    assert all(loaded.values()), loaded


@pytest.mark.parametrize("extra, message", [
    ('\n[backup]\nschedule = "15 3 * * *"\n', "unknown setting(s) backup (known: app, backups, clusters, databases, "
                                                "groups, hosts, logs, processes, project, schedules, "
                                                "services)"),
    ("\n[[databases]]\nname = \"database2\"\nport = 5433\n", "[[databases]]: unknown setting(s) port (known: apps, name, postgres)"),
], ids=["a-misspelt-table", "a-database-setting"])
def test_a_setting_the_stack_does_not_know_is_named_not_ignored(extra, message):
    with pytest.raises(StackError, match=re.escape(message)):
        loads(BASE + extra)
    with pytest.raises(StackError, match=re.escape("[project]: unknown setting(s) http_prot")):
        loads(BASE.replace("http_port = 8000", "http_prot = 8000"))
