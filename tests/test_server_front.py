"""The server's shared front (front = "shared"): the host setting and its refusals, what a
project renders behind it, the front's own files (golden), the names it routes (no client
string makes a path outside its folders) and the claims' plans."""
import os
import re
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from tasks.errors import StackError
from tasks.plans import server_front as plans
from tasks.plans import site as site_plans
from tasks.source import render
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED

GOLDEN = Path(__file__).resolve().parent / "golden" / "stackfront"
HOST = '[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\nproject = "hello-prod"\n'
SHARED = 'domains = ["example.com", "www.example.com"]\nfront = "shared"\n'
FOLDER = plans.Folder.of("/srv/stackfront")


def stack_of(extra: str):
    return loads(COMMITTED + HOST + extra)


def files_of(extra: str):
    stack = stack_of(extra)
    return render.site_files(stack, stack.hosts["prod"].site)


class TestTheSetting:
    def test_a_host_has_its_own_front_unless_it_says_shared(self):
        site = stack_of('domains = ["example.com"]\n').hosts["prod"].site
        assert (site.front, site.shared) == ("own", False)
        shared = stack_of(SHARED).hosts["prod"].site
        assert (shared.front, shared.shared, shared.front_directory) == ("shared", True, "/srv/stackfront")

    def test_the_fronts_folder_may_be_another(self):
        site = stack_of(SHARED + 'front_directory = "/home/deploy/stackfront"\n').hosts["prod"].site
        assert site.front_directory == "/home/deploy/stackfront"

    @pytest.mark.parametrize("extra, message", [
        ('domains = ["example.com"]\nfront = "kamal"\n', "front 'kamal' is not valid: one of own, shared"),
        ('front = "shared"\n', 'front = "shared" needs domains and tls = "acme" or "files"'),
        ('domains = ["example.com"]\ntls = "off"\nfront = "shared"\n', 'front = "shared" needs domains'),
        ('domains = ["example.com"]\nfront_directory = "/srv/stackfront"\n', 'front_directory is for front = "shared"'),
        (SHARED + 'front_directory = "srv/../etc"\n', "front_directory 'srv/../etc' is not valid"),
        (SHARED + 'front_directory = ["/srv"]\n', "front_directory"),
    ], ids=["unknown", "without-domains", "tls-off", "folder-with-own", "relative-folder", "not-text"])
    def test_bad_values_are_refused_in_one_line(self, extra, message):
        with pytest.raises(StackError) as caught:
            stack_of(extra)
        assert message in str(caught.value) and "\n" not in str(caught.value)
        assert "[hosts.prod]" in str(caught.value)


class TestAProjectBehindTheSharedFront:
    def test_it_has_no_front_and_publishes_no_port(self):
        compose = yaml.safe_load(files_of(SHARED)[render.COMPOSE_FILE])
        assert "front" not in compose["services"]
        assert not any("ports" in service for service in compose["services"].values())

    def test_its_nginx_answers_to_each_domain_on_its_front_network_only(self):
        nginx = yaml.safe_load(files_of(SHARED)[render.COMPOSE_FILE])["services"]["nginx"]
        assert nginx["networks"] == {"nginx_network": None, "front_network": {
            "aliases": ["example.com.site.internal", "www.example.com.site.internal"]}}
        assert "acme_webroot:/var/www/acme:ro" in nginx["volumes"]

    def test_its_certbot_publishes_into_the_fronts_folder_of_its_project(self):
        certbot = yaml.safe_load(files_of(SHARED)[render.COMPOSE_FILE])["services"]["certbot"]
        assert "/srv/stackfront/certs/${COMPOSE_PROJECT_NAME}:/etc/hello/published" in certbot["volumes"]
        assert certbot["cap_drop"] == ["ALL"] and certbot["cap_add"] == ["CHOWN"]

    def test_its_nginx_answers_the_challenges_and_sets_hsts_and_the_headers_in_every_location(self):
        conf = files_of(SHARED + "hsts_max_age = 31536000\nhsts_include_subdomains = true\n")[render.NGINX_CONF]
        assert "location ^~ /.well-known/acme-challenge/ {\n        root /var/www/acme;" in conf
        hsts = 'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;'
        # static, media and the app: a location with add_header of its own inherits none.
        assert conf.count(hsts) == 3 and conf.count("add_header X-Frame-Options DENY always;") == 3
        assert "proxy_hide_header Strict-Transport-Security;" in conf

    def test_with_its_own_front_nothing_changes(self):
        own = files_of('domains = ["example.com", "www.example.com"]\n')
        assert render.NGINX_CONF not in own
        assert "front" in yaml.safe_load(own[render.COMPOSE_FILE])["services"]

    def test_its_renewals_keep_the_key(self):
        assert site_plans.renew(True, same_key=True)[-3:] == ["renew", "--force", "--same-key"]
        assert site_plans.renew(True)[-2:] == ["renew", "--force"]


VALUES = plans.values(FOLDER, "0.0.0.0", 80, 443, "nginx:1.27", 8192, 17408)


@pytest.mark.parametrize("path", list(render.STACKFRONT_FILES), ids=["compose", "nginx"])
def test_golden_front(path):
    text = render.stackfront_files(VALUES)[path]
    golden = GOLDEN / path.name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_fronts_files_are_the_same_for_any_set_of_projects():
    """Nothing of a project is in them: adding one reloads and recreates nothing."""
    files = render.stackfront_files(VALUES)
    compose = yaml.safe_load(files[Path("compose.yml")])
    front = compose["services"]["front"]
    assert compose["name"] == "stackfront" and "networks" not in front
    assert front["ports"] == ["0.0.0.0:80:80", "0.0.0.0:443:443"]
    assert all(volume.endswith(":ro") for volume in front["volumes"])
    assert "example" not in files[Path("conf/nginx.conf")]


def test_the_fronts_maps_use_the_name_pattern():
    conf = render.stackfront_files(VALUES)[Path("conf/nginx.conf")]
    assert conf.count(f'"~^{plans.NAME_PATTERN}$"') == 2


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=80) | st.from_regex(plans.NAME_PATTERN, fullmatch=True))
def test_no_client_string_names_a_path_outside_the_fronts_folders(text):
    if plans.is_name(text):
        assert "/" not in text and ".." not in text and not text.startswith(".") and text == text.lower()
        assert PurePosixPath("/etc/stackfront/names", text).parent == PurePosixPath("/etc/stackfront/names")


@pytest.mark.parametrize("text", ["", "_", "localhost", "../etc/passwd", "a..b", ".a.b", "a.b.", "A.b", "a/b.c",
                                  "a.b:443", "-a.b", "a-.b", "a b.c", "x" * 64 + ".com"])
def test_what_is_not_a_dns_name_is_refused(text):
    assert not plans.is_name(text)


class TestClaims:
    def test_another_projects_domain_is_refused_in_one_line(self):
        claims = {"shop.test": plans.Claim("shop-b", "/srv/shop"), "hello.test": plans.Claim("hello-a", "/srv/hello")}
        assert plans.refusal(claims, "hello-a", "/srv/hello", ["hello.test"]) is None
        assert plans.refusal(claims, "hello-c", "/srv/c", ["new.test", "shop.test"]) == \
            "shop.test is served by project shop-b on this server"

    def test_another_copy_of_the_project_in_another_directory_is_refused_too(self):
        claims = {"hello.test": plans.Claim("hello-a", "/srv/hello")}
        assert plans.refusal(claims, "hello-a", "/srv/hello-staging", ["hello.test"]) == \
            "hello.test is served by project hello-a from /srv/hello on this server"
        assert plans.held_by(claims, "hello-a", "/srv/hello-staging") == []
        assert plans.held_by(claims, "hello-a", "/srv/hello") == ["hello.test"]

    def test_a_claim_written_before_claims_named_a_directory_is_its_projects(self):
        claims = plans.parse_claims("hello.test hello-a \n")
        assert claims == {"hello.test": plans.Claim("hello-a", "")}
        assert plans.refusal(claims, "hello-a", "/srv/hello", ["hello.test"]) is None
        assert plans.refusal(claims, "shop-b", "/srv/shop", ["hello.test"]) == \
            "hello.test is served by project hello-a on this server"

    def test_claims_are_read_as_domain_and_project_and_nothing_else(self):
        assert plans.parse_claims("hello.test hello-a /srv/hello\nshop.test shop-b /srv/my shop\n.x.tmp y\n"
                                  "bad line here\n") == \
            {"hello.test": plans.Claim("hello-a", "/srv/hello"), "shop.test": plans.Claim("shop-b", "/srv/my shop")}

    def test_a_claim_and_its_certificate_link_are_written_by_rename(self):
        assert plans.claim(FOLDER, "hello-a", "/srv/hello", ["hello.test"]) == (
            "set -e\n"
            "printf '%s\\n%s\\n' hello-a /srv/hello > /srv/stackfront/names/.hello.test.tmp && chmod 644 "
            "/srv/stackfront/names/.hello.test.tmp && mv -f /srv/stackfront/names/.hello.test.tmp "
            "/srv/stackfront/names/hello.test\n"
            "ln -sfn hello-a/site.pem /srv/stackfront/certs/.hello.test.pem.tmp && mv -Tf "
            "/srv/stackfront/certs/.hello.test.pem.tmp /srv/stackfront/certs/hello.test.pem\n")

    def test_releasing_removes_the_claims_and_links(self):
        assert plans.unclaim(FOLDER, ["a.test"]) == \
            "rm -f -- /srv/stackfront/names/a.test /srv/stackfront/certs/a.test.pem"
        assert plans.unclaim(FOLDER, []) == "true"

    def test_the_front_joins_and_leaves_a_projects_front_network(self):
        assert plans.connect("hello-a") == ["docker", "network", "connect", "hello-a_front_network",
                                            "stackfront-front-1"]
        assert plans.disconnect("hello-a") == ["docker", "network", "disconnect", "hello-a_front_network",
                                               "stackfront-front-1"]

    def test_the_front_is_its_own_compose_project(self):
        assert plans.up(FOLDER) == ["docker", "compose", "--project-name", "stackfront", "--file",
                                    "/srv/stackfront/compose.yml", "up", "--detach", "--no-build", "--remove-orphans"]

    def test_its_state_is_read_from_the_engine(self):
        state = plans.parse_inspect("running\tnginx:1.27\t/srv/stackfront/conf\tbridge hello-a_front_network \n")
        assert state == plans.State("running", "nginx:1.27", "/srv/stackfront", ("bridge", "hello-a_front_network"))
        assert plans.parse_inspect("") is None


class TestADeployBehindTheSharedFront:
    """HostRelease.ready, the deploy's first step on the host, with a recording connection."""

    def ready(self, claims: str, front: str = ""):
        """FRONT: the running front's inspect line ("" for none)."""
        import shlex

        from invoke import Result

        from tasks.execution.runner import Runner
        from tasks.execution.targets import HostTarget
        from tasks.plans import compose
        from tasks.procedures import release
        from tests.fakes import Recorder

        stack = stack_of(SHARED)
        engine = {shlex.join(argv): Result(stdout="28.2.2\n") for argv in (compose.engine_version(),
                                                                         compose.compose_version())}
        conn = Recorder({**engine, f"bash -c {shlex.quote(plans.read_claims(FOLDER))}": Result(stdout=claims),
                         shlex.join(plans.inspect()): Result(stdout=front) if front else Result(exited=1)})
        release.HostRelease(Runner(HostTarget(conn, stack.hosts["prod"], stack))).ready()
        return conn.commands

    def test_a_host_entry_naming_other_ports_than_the_front_publishes_is_refused(self):
        from tasks.errors import TaskError

        front = "running\tnginx:1.27\t/srv/stackfront/conf\t\t0.0.0.0:8080 0.0.0.0:8443 \n"
        with pytest.raises(TaskError) as caught:
            self.ready("", front)
        assert str(caught.value) == (
            "the shared front on prod publishes ports 8080 and 8443, not 80 and 443 as [hosts.prod] says: set "
            "http_port and https_port to match, or move the front with `inv server.front --host prod`: nothing was "
            "changed")
        # Its own ports go on (and an older front, whose ports inspect does not say).
        self.ready("", front.replace("8080", "80").replace("8443", "443"))
        self.ready("", "running\tnginx:1.27\t/srv/stackfront/conf\t\n")

    def test_a_domain_another_project_serves_is_refused_before_anything_changes(self):
        from tasks.errors import TaskError

        with pytest.raises(TaskError) as caught:
            self.ready("www.example.com shop\n")
        assert str(caught.value) == \
            "www.example.com is served by project shop on this server: nothing was changed"

    def test_a_domain_another_copy_of_the_project_serves_is_refused_before_anything_changes(self):
        """The same compose project deployed from another directory (a staging copy)."""
        from tasks.errors import TaskError

        with pytest.raises(TaskError) as caught:
            self.ready("www.example.com hello-prod /srv/hello-staging\n")
        assert str(caught.value) == ("www.example.com is served by project hello-prod from /srv/hello-staging "
                                     "on this server: nothing was changed")

    def test_its_own_claims_and_free_names_go_on(self):
        commands = self.ready("example.com hello-prod /srv/hello\nother.example shop /srv/shop\n")
        assert any("mkdir -p -m 755 /srv/hello/releases" in command for command in commands)


class TestARollbackBehindTheSharedFront:
    def test_a_release_deployed_with_the_projects_own_front_is_refused(self):
        import shlex

        from invoke import Result

        from tasks.errors import TaskError
        from tasks.execution.runner import Runner
        from tasks.execution.targets import HostTarget
        from tasks.procedures import server_front
        from tests.fakes import Recorder

        stack = stack_of(SHARED)
        old = "20261120T000000Z-0123456789ab"
        check = f"bash -c {shlex.quote(plans.release_front(f'/srv/hello/releases/{old}/docker-compose.yml'))}"
        conn = Recorder({check: Result(stdout="own\n")})
        with pytest.raises(TaskError) as caught:
            server_front.check_release(Runner(HostTarget(conn, stack.hosts["prod"], stack, release=old)))
        assert str(caught.value) == (f"{old} was deployed with the project's own front and is not served again "
                                     "behind the shared front: deploy its code again instead")
        assert conn.commands == [check]
        # One deployed behind it goes on; one without a compose file fails on its own later.
        for made_for in ("shared\n", ""):
            server_front.check_release(Runner(HostTarget(Recorder({check: Result(stdout=made_for)}),
                                                         stack.hosts["prod"], stack, release=old)))

    def test_back_on_its_own_front_a_release_deployed_behind_the_shared_one_is_refused(self):
        from tasks.errors import TaskError
        from tasks.execution.runner import Runner
        from tasks.execution.targets import HostTarget
        from tasks.procedures import server_front
        from tests.fakes import Recorder

        import shlex

        from invoke import Result

        stack = stack_of('domains = ["example.com", "www.example.com"]\n')
        old = "20261120T000000Z-0123456789ab"
        check = f"bash -c {shlex.quote(plans.release_front(f'/srv/hello/releases/{old}/docker-compose.yml'))}"
        conn = Recorder({check: Result(stdout="shared\n")})
        with pytest.raises(TaskError) as caught:
            server_front.check_release(Runner(HostTarget(conn, stack.hosts["prod"], stack, release=old)))
        assert str(caught.value) == (f"{old} was deployed behind the shared front and is not served again by the "
                                     "project's own front: deploy its code again instead")

    @pytest.mark.parametrize("front", ["own", "shared"])
    def test_which_front_a_release_was_deployed_for_is_read_from_its_compose_file(self, tmp_path, front):
        """Both kinds give Nginx the aliases (moving never recreates it): the front service tells."""
        import subprocess

        extra = SHARED if front == "shared" else 'domains = ["example.com", "www.example.com"]\n'
        stack = stack_of(extra)
        compose = render.site_files(stack, stack.hosts["prod"].site)[render.COMPOSE_FILE]
        path = tmp_path / "docker-compose.yml"
        path.write_text(compose)
        assert "www.example.com.site.internal" in compose
        found = subprocess.run(["sh", "-c", plans.release_front(path)], capture_output=True, text=True).stdout
        assert found == f"{front}\n"
        # A release older than either kind (no front service, no publishing) is taken for neither.
        old = tmp_path / "old.yml"
        old.write_text("services:\n  nginx:\n    image: nginx\n")
        assert subprocess.run(["sh", "-c", plans.release_front(old)], capture_output=True, text=True).stdout == ""
        # A release without its compose file is not taken for either.
        missing = subprocess.run(["sh", "-c", plans.release_front(tmp_path / "missing.yml")], capture_output=True, text=True)
        assert (missing.returncode, missing.stdout) == (0, "")


class TestReleasingDroppedNames:
    def test_another_copy_of_the_projects_claims_are_never_released(self):
        """A staging copy (same project, another directory) that lists fewer names leaves
        the names of the copy that holds them alone."""
        import shlex

        from invoke import Result

        from tasks.execution.runner import Runner
        from tasks.execution.targets import HostTarget
        from tasks.procedures import server_front
        from tests.fakes import Recorder

        stack = stack_of(SHARED)
        claims = "example.com hello-prod /srv/hello\nold.example hello-prod /srv/hello\nshop.example hello-prod /srv/prod\n"
        conn = Recorder({f"bash -c {shlex.quote(plans.read_claims(FOLDER))}": Result(stdout=claims)})
        server_front.release_dropped(Runner(HostTarget(conn, stack.hosts["prod"], stack)))
        released = [c for c in conn.commands if "rm -f --" in c]
        assert released == [f"bash -c {shlex.quote(plans.unclaim(FOLDER, ['old.example']))}"], conn.commands


class Claiming(Recorder):
    """A host whose claims folder changes as the commands run: CLAIMS is {domain: 'project directory'}."""

    def __init__(self, claims: dict[str, str], answers=None):
        import shlex

        super().__init__(answers)
        self.claims = dict(claims)
        self.read = f"bash -c {shlex.quote(plans.read_claims(FOLDER))}"

    def run(self, command, **kwargs):
        import shlex

        from invoke import Result

        if command == self.read:
            self.answers[command] = Result(stdout="".join(f"{d} {o}\n" for d, o in sorted(self.claims.items())))
        result = super().run(command, **kwargs)
        if command.startswith("bash -c "):
            script = shlex.split(command)[2]
            for project, directory, domain in re.findall(
                    r"printf '%s\\n%s\\n' (\S+) (\S+) > /srv/stackfront/names/\.(\S+)\.tmp", script):
                self.claims[domain] = f"{project} {directory}"
            if script.startswith("rm -f -- "):
                for path in script.split()[3:]:
                    self.claims.pop(path.removeprefix("/srv/stackfront/names/"), None)
        return result


def host_runner(conn, release=None):
    from tasks.execution.runner import Runner
    from tasks.execution.targets import HostTarget

    stack = stack_of(SHARED)
    return Runner(HostTarget(conn, stack.hosts["prod"], stack, release=release))


def engine_answers():
    import shlex

    from invoke import Result

    from tasks.plans import compose
    return {shlex.join(argv): Result(stdout="28.2.2\n") for argv in (compose.engine_version(), compose.compose_version())}


@pytest.mark.live_state
class TestReservingTheNames:
    """A deploy claims its new names under the server lock before any container is made,
    and gives them back when it serves nothing new."""

    def test_the_new_names_are_claimed_under_the_server_lock_in_the_first_step(self):
        from tasks.procedures import release

        conn = Claiming({"example.com": "hello-prod /srv/hello", "shop.example": "shop /srv/shop"}, engine_answers())
        place = release.HostRelease(host_runner(conn))
        place.ready()
        assert place.reserved == ["www.example.com"]
        assert conn.claims["www.example.com"] == "hello-prod /srv/hello"
        claimed = next(i for i, c in enumerate(conn.commands) if "names/.www.example.com.tmp" in c)
        locked = [i for i, c in enumerate(conn.commands) if "mkdir /srv/stackfront/lock" in c]
        assert locked and locked[-1] < claimed, conn.commands
        # The front's folders exist before a claim is written there (a server without a front yet).
        assert conn.commands.index(f"bash -c {shlex_quote(plans.prepare(FOLDER))}") < claimed
        assert not any("docker compose" in c and " up " in c for c in conn.commands[:claimed])

    def test_a_failed_deploy_releases_the_names_it_claimed_and_no_other(self):
        from tasks.errors import TaskError
        from tasks.procedures import release

        conn = Claiming({"example.com": "hello-prod /srv/hello", "shop.example": "shop /srv/shop"}, engine_answers())
        place = release.HostRelease(host_runner(conn))

        def refused(d):
            raise TaskError("the ACME server refused www.example.com")

        place.steps = (("securing the site", refused),)
        with pytest.raises(TaskError) as caught:
            release.run_deploy(place, keep=3, timeout=5)
        assert "failed while securing the site (the ACME server refused www.example.com)" in str(caught.value)
        assert conn.claims == {"example.com": "hello-prod /srv/hello", "shop.example": "shop /srv/shop"}
        assert f"bash -c {shlex_quote(plans.unclaim(FOLDER, ['www.example.com']))}" in conn.commands

    def test_a_deploy_that_claims_nothing_new_releases_nothing(self):
        from tasks.errors import TaskError
        from tasks.procedures import release

        claims = {"example.com": "hello-prod /srv/hello", "www.example.com": "hello-prod /srv/hello"}
        conn = Claiming(claims, engine_answers())
        place = release.HostRelease(host_runner(conn))

        def refused(d):
            raise TaskError("no")

        place.steps = (("securing the site", refused),)
        with pytest.raises(TaskError):
            release.run_deploy(place, keep=3, timeout=5)
        assert conn.claims == claims and not any("rm -f -- /srv/stackfront" in c for c in conn.commands)


class TestLeaving:
    """`inv down --host` of a project behind the shared front."""

    def test_its_claims_go_first_and_its_published_key_only_with_its_volumes(self):
        from tasks.procedures import server_front

        for forget in (False, True):
            conn = Claiming({"example.com": "hello-prod /srv/hello", "shop.example": "shop /srv/shop"},
                            engine_answers())
            server_front.leave(host_runner(conn), forget=forget)
            assert conn.claims == {"shop.example": "shop /srv/shop"}
            unclaimed = conn.commands.index(f"bash -c {shlex_quote(plans.unclaim(FOLDER, ['example.com']))}")
            deleted = [i for i, c in enumerate(conn.commands) if " run --rm --no-deps -T --entrypoint find certbot "
                       "/etc/hello/published -mindepth 1 -delete" in c]
            assert len(deleted) == forget and all(i > unclaimed for i in deleted), conn.commands


def shlex_quote(text):
    import shlex
    return shlex.quote(text)


def shlex_join(argv):
    import shlex

    return shlex.join(argv)


class TestServingAReleaseAgain:
    """A rollback (or an undo) to a release whose names differ from the current config's."""

    OLD = "20261120T000000Z-0123456789ab"

    def conn(self, claims):
        from invoke import Result

        names = plans.release_names(f"/srv/hello/releases/{self.OLD}/docker-compose.yml")
        return Claiming(claims, {f"bash -c {shlex_quote(names)}": Result(
            stdout='"example.com.site.internal"\n"old.example.site.internal"\n')})

    def test_its_names_another_project_holds_refuse_it_in_one_line(self):
        from tasks.errors import TaskError
        from tasks.procedures import server_front

        conn = self.conn({"example.com": "hello-prod /srv/hello", "old.example": "shop /srv/shop"})
        with pytest.raises(TaskError) as caught:
            server_front.reclaim(host_runner(conn, self.OLD))
        assert str(caught.value) == (f"old.example is served by project shop on this server: {self.OLD} serves it "
                                     "too; nothing was changed")
        assert conn.claims["old.example"] == "shop /srv/shop"

    def test_its_free_names_are_claimed_again(self):
        from tasks.procedures import server_front

        conn = self.conn({"example.com": "hello-prod /srv/hello"})
        server_front.reclaim(host_runner(conn, self.OLD))
        assert conn.claims == {"example.com": "hello-prod /srv/hello", "old.example": "hello-prod /srv/hello"}

    def test_a_rollback_claims_before_it_serves(self):
        from tasks.errors import TaskError
        from tasks.procedures import release

        conn = self.conn({"example.com": "hello-prod /srv/hello", "old.example": "shop /srv/shop"})
        with pytest.raises(TaskError):
            release.HostRelease(host_runner(conn)).serve_again(self.OLD, 5)
        assert not any("docker compose" in c for c in conn.commands), conn.commands


class TestTheServerLock:
    def test_a_first_install_pulls_the_fronts_image_before_it_takes_the_server_lock(self):
        import shlex

        from invoke import Result

        from tasks.procedures import server_front

        conn = Recorder({shlex.join(plans.inspect()): Result(exited=1, stderr="No such object")})
        server_front.join(host_runner(conn))
        pulled = conn.commands.index(f"bash -c {shlex_quote(plans.pull(server_front.image(host_runner(conn))))}")
        locked = next(i for i, c in enumerate(conn.commands) if "mkdir /srv/stackfront/lock" in c)
        assert pulled < locked, conn.commands

    def test_another_deploy_waits_for_it_as_long_as_for_a_volume(self):
        from tasks.procedures import locks, server_front

        assert server_front.server_lock(host_runner(Recorder())).wait == locks.VOLUME_WAIT == 120
        assert plans.pull("nginx:1.27") == \
            "docker image inspect nginx:1.27 >/dev/null 2>&1 || docker pull --quiet nginx:1.27 >/dev/null"


class TestMovingFromTheOwnFront:
    OWN = shlex_quote("docker inspect --format '{{.State.Status}}' hello-prod-front-1")

    def test_the_own_front_is_stopped_started_again_if_the_shared_one_does_not_start_and_removed_last(self):
        script = plans.hand_over("hello-prod-front-1", "stackfront-front-1", (80, 443), 443)
        assert ("docker stop hello-prod-front-1 >/dev/null && { docker start stackfront-front-1 >/dev/null || "
                "{ docker start hello-prod-front-1 >/dev/null; exit 1; }; } && {") in script
        assert script.endswith("docker rm --force hello-prod-front-1 >/dev/null; }")

    @staticmethod
    def run_hand_over(tmp_path, uid="0", shared_starts=True, accepts_after=2):
        """The hand-over's shell run by bash with fakes of docker, iptables, id, setsid and
        timeout first on its PATH, each logging its arguments: what ran, in order."""
        import subprocess

        log = tmp_path / "log"
        fakes = tmp_path / "bin"
        fakes.mkdir()
        tries = tmp_path / "tries"
        tools = {
            "docker": f'echo "docker $*" >> {log}; case "$*" in "start stackfront-front-1") exit {0 if shared_starts else 1};; '
                      'inspect*) echo "172.30.0.2 10.0.9.3 ";; esac',
            "iptables": f'echo "iptables $*" >> {log}',
            "id": f'echo {uid}',
            "setsid": f'echo "setsid $*" >> {log}',
            # The front accepts from the ACCEPTS_AFTERth try on.
            "timeout": f'echo "timeout $*" >> {log}; echo x >> {tries}; [ $(wc -l < {tries}) -ge {accepts_after} ]',
            "sleep": "true",
        }
        for name, body in tools.items():
            (fakes / name).write_text(f"#!/bin/sh\n{body}\n")
            (fakes / name).chmod(0o755)
        done = subprocess.run(["bash", "-c", plans.hand_over("hello-prod-front-1", "stackfront-front-1", (80, 443), 443)], capture_output=True, text=True,
                              env={"PATH": f"{fakes}:/usr/bin:/bin"})
        ran = log.read_text().splitlines() if log.exists() else []
        # The sleeper that removes the rules in any case runs in the background: whenever it
        # logs, it is apart from the sequence (there when root, waited for a little).
        if uid == "0":
            deadline = time.monotonic() + 5
            while not any(c.startswith("setsid ") for c in ran) and time.monotonic() < deadline:
                time.sleep(0.05)
                ran = log.read_text().splitlines()
        sleepers = [c for c in ran if c.startswith("setsid ")]
        return done.returncode, [c for c in ran if not c.startswith("setsid ")], sleepers

    def test_as_root_new_connections_are_held_until_the_shared_front_accepts(self, tmp_path):
        status, ran, sleepers = self.run_hand_over(tmp_path)
        assert status == 0, ran
        rule = ("-p tcp --syn -m addrtype --dst-type LOCAL -m multiport --dports 80,443 -m comment --comment "
                "stackfront-hand-over -j DROP")
        held = [f"iptables -w -t raw -I PREROUTING {rule}", f"iptables -w -t raw -I OUTPUT {rule}"]
        released = [f"iptables -w -t raw -D PREROUTING {rule}", f"iptables -w -t raw -D OUTPUT {rule}"]
        assert len(sleepers) == 1 and sleepers[0].startswith("setsid sh -c sleep 30; iptables -w -t raw -D PREROUTING")
        stop, start, rm = (ran.index(c) for c in ("docker stop hello-prod-front-1", "docker start stackfront-front-1",
                                                   "docker rm --force hello-prod-front-1"))
        assert ran.index(held[0]) < ran.index(held[1]) < stop < start
        # Asked on the container's own address until it accepts, then the rules go, then the own front.
        tries = [i for i, c in enumerate(ran) if c == 'timeout 1 bash -c exec 3<>/dev/tcp/172.30.0.2/443']
        assert len(tries) == 2 and start < tries[0] and tries[-1] < ran.index(released[0]) < rm
        assert all(c in ran for c in released)

    def test_the_rules_go_when_the_shared_front_does_not_start(self, tmp_path):
        status, ran, _ = self.run_hand_over(tmp_path, shared_starts=False)
        assert status == 1
        assert ran[-3:-2] == ["docker start hello-prod-front-1"] and ran[-2].startswith("iptables -w -t raw -D PREROUTING")
        assert ran[-1].startswith("iptables -w -t raw -D OUTPUT") and "docker rm --force hello-prod-front-1" not in ran

    def test_without_root_the_ports_are_handed_over_without_a_hold(self, tmp_path):
        status, ran, sleepers = self.run_hand_over(tmp_path, uid="1000")
        assert status == 0 and not sleepers
        assert not [c for c in ran if c.startswith(("iptables", "timeout"))], ran
        assert ran == ["docker stop hello-prod-front-1", "docker start stackfront-front-1",
                       "docker rm --force hello-prod-front-1"]

    @pytest.mark.parametrize("status", ["created", "exited"])
    def test_an_interrupted_move_is_taken_up_again(self, status):
        """The shared front was made (or stopped) but the own front still holds the ports."""
        import shlex

        from invoke import Result

        from tasks.procedures import server_front

        own = shlex.join(["docker", "inspect", "--format", "{{.State.Status}}", "hello-prod-front-1"])
        conn = Recorder({shlex.join(plans.inspect()): Result(stdout=f"{status}\tnginx:1.27\t/srv/stackfront/conf\t\n"),
                         own: Result(stdout="running\n")})
        server_front.join(host_runner(conn))
        assert f"bash -c {shlex_quote(plans.hand_over('hello-prod-front-1', 'stackfront-front-1', (80, 443), 443))}" in conn.commands

    def test_a_failed_deploy_does_not_serve_a_release_of_the_own_front_again_behind_the_shared_one(self):
        from invoke import Result

        from tasks.errors import TaskError
        from tasks.procedures import release

        old, new = "20261120T000000Z-0123456789ab", "20261121T000000Z-ba9876543210"
        check = f"bash -c {shlex_quote(plans.release_front(f'/srv/hello/releases/{old}/docker-compose.yml'))}"
        conn = Recorder({check: Result(stdout="own\n")})
        r = host_runner(conn)
        d = release.Deploy(r.in_release(new), r.here(), new, old, "hello-prod:x", False, 5, started=True)
        with pytest.raises(TaskError) as caught:
            release.host_undo(d, "moving traffic", "deploy of X failed while moving traffic (no)", 1)
        assert caught.value.message == (
            f"error: deploy of X failed while moving traffic (no); {old} was deployed with the project's own front and is "
            "not served again behind the shared front: fix the failure and deploy again (see `inv ps --host prod`; "
            f"`current` still points at {old})")
        assert not any("docker compose" in c for c in conn.commands), conn.commands


class TestUpgradingTheFront:
    """`inv server.front` on a server whose front runs an older version."""

    RUNNING = "running\tnginx:1.27\t/srv/stackfront/conf\thello-prod_front_network \n"
    CONF = PurePosixPath("/srv/stackfront/conf/nginx.conf")

    def answers(self, tested):
        import shlex

        from invoke import Result

        from tasks.procedures import server_front
        image = server_front.image(host_runner(Recorder()))
        return {shlex.join(plans.inspect()): Result(stdout=self.RUNNING),
                f"bash -c {shlex_quote(plans.stage_if_changed(self.CONF))}": Result(stdout="staged\n"),
                shlex.join(plans.nginx_test_staged(FOLDER, image, self.CONF)): tested}

    def test_a_configuration_nginx_refuses_is_not_installed_and_nothing_is_recreated(self):
        from invoke import Result

        from tasks.errors import TaskError
        from tasks.procedures import server_front

        conn = Recorder(self.answers(Result(exited=1, stderr="nginx: [emerg] unknown directive \"x\"\n")))
        with pytest.raises(TaskError) as caught:
            server_front.ensure(host_runner(conn), upgrade=True)
        assert caught.value.message == ("error: Nginx refused the shared front's new configuration (nginx: [emerg] "
                                        "unknown directive \"x\"): nothing was installed, the front runs as before")
        assert f"bash -c {shlex_quote(plans.staged_out(self.CONF))}" in conn.commands
        assert not any(self.CONF.name in c and "mv -f" in c for c in conn.commands)
        assert not any(c.startswith("docker compose") or "compose.yml" in c for c in conn.commands), conn.commands

    def test_a_configuration_nginx_accepts_is_renamed_in_then_reloaded(self):
        import shlex

        from invoke import Result

        from tasks.procedures import server_front

        conn = Recorder(self.answers(Result()))
        server_front.ensure(host_runner(conn), upgrade=True)
        order = [shlex.join(plans.nginx_test_staged(FOLDER, server_front.image(host_runner(conn)), self.CONF)),
                 f"bash -c {shlex_quote(plans.staged_in(self.CONF))}", shlex.join(plans.up(FOLDER)),
                 shlex.join(plans.nginx_reload())]
        found = [conn.commands.index(command) for command in order]
        assert found == sorted(found), conn.commands
        assert plans.nginx_test_staged(FOLDER, "nginx:1.27", self.CONF) == [
            "docker", "run", "--rm", "--network", "none", "--volume", "/srv/stackfront/conf:/etc/stackfront/conf:ro",
            "nginx:1.27", "nginx", "-t", "-q", "-c", "/etc/stackfront/conf/nginx.conf.new"]

    def test_a_project_network_it_cannot_rejoin_keeps_it_from_starting(self):
        import shlex

        from invoke import Result

        from tasks.errors import TaskError
        from tasks.procedures import server_front

        conn = Recorder({**self.answers(Result()),
                         f"bash -c {shlex_quote(plans.read_claims(FOLDER))}": Result(stdout="shop.example shop /srv/shop\n"),
                         shlex.join(plans.connect("shop")): Result(exited=1, stderr="network shop_front_network not found\n")})
        r = host_runner(conn)
        with pytest.raises(TaskError) as caught:
            server_front.reconnect(r)
        assert caught.value.message == (
            "error: connecting the shared front to shop_front_network failed: network shop_front_network not found: "
            "the shared front was not started; once shop is deployed again (or removed, `inv down --host`), run "
            "`inv server.front --host prod`")

    def test_the_help_says_a_new_definition_recreates_it(self):
        from tasks import server

        doc = " ".join(server.front.__doc__.split())
        assert "a new definition (its image, ports or limits) recreates the front" in doc


class TestJoining:
    def test_a_project_moving_from_its_own_front_hands_the_ports_over_to_a_front_that_routes_already(self):
        """Made, on the project's network and with its claims before the own front goes; started then."""
        import shlex

        from invoke import Result

        from tasks.execution.runner import Runner
        from tasks.execution.targets import HostTarget
        from tasks.procedures import server_front
        from tests.fakes import Recorder

        stack = stack_of(SHARED)
        own = shlex.join(["docker", "inspect", "--format", "{{.State.Status}}", "hello-prod-front-1"])
        conn = Recorder({shlex.join(plans.inspect()): Result(exited=1, stderr="No such object"),
                         own: Result(stdout="running\n")})
        server_front.join(Runner(HostTarget(conn, stack.hosts["prod"], stack)))
        order = [shlex.join(plans.create(FOLDER)), shlex.join(plans.connect("hello-prod")),
                 f"bash -c {shlex.quote(plans.claim(FOLDER, 'hello-prod', '/srv/hello', ['example.com', 'www.example.com']))}",
                 f"bash -c {shlex.quote(plans.hand_over('hello-prod-front-1', 'stackfront-front-1', (80, 443), 443))}", shlex.join(plans.up(FOLDER))]
        found = [conn.commands.index(command) for command in order]
        assert found == sorted(found), conn.commands


class TestTheFolder:
    """The folder made by `prepare`, run for real in a temporary directory."""

    def modes(self, root):
        import subprocess
        folder = plans.Folder.of(str(root / "stackfront"))
        subprocess.run(["sh", "-c", plans.prepare(folder)], check=True)
        return {p.name: p.stat().st_mode & 0o777 for p in (Path(str(folder.directory)),
                Path(str(folder.conf)), Path(str(folder.names)), Path(str(folder.certs)))}

    def test_a_new_folder_is_its_owners_alone_and_the_containers_folders_are_readable(self, tmp_path):
        # The keys inside are 0640 group 101, whoever that is on the server: the folder keeps them in.
        assert self.modes(tmp_path) == {"stackfront": 0o700, "conf": 0o755, "names": 0o755, "certs": 0o755}

    def test_an_existing_folder_keeps_its_mode(self, tmp_path):
        (tmp_path / "stackfront").mkdir(mode=0o750)
        (tmp_path / "stackfront").chmod(0o750)
        assert self.modes(tmp_path)["stackfront"] == 0o750


class TestMovingBackToItsOwnFront:
    """front = "own" again on a server whose shared front the project was behind."""

    OWN = 'domains = ["example.com", "www.example.com"]\ntls = "acme"\nacme_email = "ops@example.com"\n'

    def runner(self, front: str, claims: str):
        """A host runner with front = "own", a shared front in FRONT's state (inspect's
        output, or None for none) and CLAIMS (read_claims' output)."""
        import shlex

        from invoke import Result

        from tasks.execution.runner import Runner
        from tasks.execution.targets import HostTarget

        stack = stack_of(self.OWN)
        folder = plans.Folder.of("/opt/front")  # where the running front says it is
        answers = {shlex.join(plans.inspect()): Result(stdout=front) if front else Result(exited=1, stderr="No such object"),
                   f"bash -c {shlex_quote(plans.read_claims(folder))}": Result(stdout=claims)}
        conn = Recorder(answers)
        return conn, Runner(HostTarget(conn, stack.hosts["prod"], stack)), folder

    RUNNING = "running\tnginx:1.27\t/opt/front/conf\thello-prod_front_network \t0.0.0.0:80 0.0.0.0:443 \n"
    MINE = "example.com hello-prod /srv/hello\nwww.example.com hello-prod /srv/hello\n"

    def test_the_last_project_behind_it_takes_its_ports_then_the_shared_front_goes(self):
        from tasks.procedures import server_front

        conn, r, folder = self.runner(self.RUNNING, self.MINE)
        server_front.move_off(r)
        commands = conn.commands
        created = next(i for i, c in enumerate(commands) if c.endswith("up --no-start --no-build --no-deps front"))
        hand = commands.index(f"bash -c {shlex_quote(plans.hand_over('stackfront-front-1', 'hello-prod-front-1', (80, 443), 443))}")
        reload = next(i for i, c in enumerate(commands) if "exec" in c and "nginx -s reload" in c)
        unclaim = commands.index(f"bash -c {shlex_quote(plans.unclaim(folder, ['example.com', 'www.example.com']))}")
        leave = commands.index(shlex_join(plans.disconnect("hello-prod")))
        down = commands.index(shlex_join(plans.down(folder)))
        # Its Nginx configured for its own front before the front takes a request, the ports
        # handed over, then its names released and the front removed.
        assert reload < created < hand < unclaim < leave < down, commands

    def test_refused_while_another_project_is_behind_the_shared_front(self):
        from tasks.errors import TaskError
        from tasks.procedures import server_front

        conn, r, _ = self.runner(self.RUNNING, self.MINE + "shop.test shop-b /srv/shop\n")
        with pytest.raises(TaskError) as caught:
            server_front.check_moving_off(r)
        assert str(caught.value) == (
            "the shared front on prod holds its ports for other projects too (shop-b: shop.test (/srv/shop)): keep front = "
            "\"shared\" in [hosts.prod], or give this project another http_port and https_port: nothing was changed")
        assert not any(c.startswith(("docker stop", "docker compose")) or "unclaim" in c for c in conn.commands)
        with pytest.raises(TaskError):
            server_front.move_off(r)  # checked again under the server lock
        assert not any("hand-over" in c or "--no-start" in c or " down " in c for c in conn.commands), conn.commands

    def test_a_shared_front_on_other_ports_stays_and_only_the_projects_names_go(self):
        from tasks.procedures import server_front

        elsewhere = self.RUNNING.replace("0.0.0.0:80 0.0.0.0:443", "0.0.0.0:8080 0.0.0.0:8443")
        conn, r, folder = self.runner(elsewhere, self.MINE + "shop.test shop-b /srv/shop\n")
        server_front.move_off(r)
        assert f"bash -c {shlex_quote(plans.unclaim(folder, ['example.com', 'www.example.com']))}" in conn.commands
        assert shlex_join(plans.disconnect("hello-prod")) in conn.commands
        assert not any("hand-over" in c or "--no-start" in c for c in conn.commands)
        assert shlex_join(plans.down(folder)) not in conn.commands

    def test_a_shared_front_it_was_never_behind_is_not_its_to_take(self):
        """An empty front an admin installed on the project's ports: refused, nothing removed."""
        from tasks.errors import TaskError
        from tasks.procedures import server_front

        conn, r, folder = self.runner(self.RUNNING.replace("hello-prod_front_network ", ""), "")
        with pytest.raises(TaskError) as caught:
            server_front.move_off(r)
        assert str(caught.value) == (
            "the shared front on prod holds ports 80 and 443, and hello-prod was never behind it: put it behind it "
            "(front = \"shared\" in [hosts.prod]), give it other ports, or remove the front (`inv server.front "
            "--remove`, from a project that uses it)")
        assert not any("--no-start" in c or "hand-over" in c or c == shlex_join(plans.down(folder)) for c in conn.commands)

    def test_no_shared_front_nothing_to_do(self):
        import shlex

        from tasks.procedures import server_front

        conn, r, _ = self.runner(None, "")
        server_front.move_off(r)
        assert conn.commands == [shlex.join(plans.inspect())]

    def test_the_ports_a_front_publishes_are_read_from_inspect(self):
        state = plans.parse_inspect(self.RUNNING)
        assert state.published == (("0.0.0.0", 80), ("0.0.0.0", 443)) and state.holds(443) and not state.holds(8443)
        # An older front's four fields: none known.
        assert plans.parse_inspect("running\tnginx:1.27\t/srv/stackfront/conf\t\n").published == ()

    def test_the_deploys_port_check_lets_the_shared_front_pass_and_asks_who_is_behind_it(self):
        """The check before anything changes: ports held by the shared front are no refusal of
        their own; other projects behind it are."""
        from tasks.plans import release as release_plans

        wanted = [("0.0.0.0", 80, "http_port"), ("0.0.0.0", 443, "https_port")]
        printed = ("80 container stackfront-front-1 stackfront 0.0.0.0:80->80/tcp, 0.0.0.0:443->443/tcp\n"
                   "443 container stackfront-front-1 stackfront 0.0.0.0:80->80/tcp, 0.0.0.0:443->443/tcp\n")
        assert release_plans.port_refusal("prod", "hello-prod", wanted, printed, passing=("stackfront",)) is None
        assert release_plans.held_by(wanted, printed, "stackfront")
        assert not release_plans.held_by(wanted, printed.replace("stackfront ", "shop-b "), "stackfront")
        assert "taken by project shop-b" in release_plans.port_refusal(
            "prod", "hello-prod", wanted, printed.replace("stackfront ", "shop-b "), passing=("stackfront",))


def test_nginx_has_one_definition_whichever_front_is_before_it():
    """Moving between the project's own front and the shared one never recreates Nginx: the
    front serving at that moment holds its address (a recreated Nginx has a new one)."""
    acme = 'tls = "acme"\nacme_email = "ops@example.com"\n'
    own = yaml.safe_load(files_of('domains = ["example.com", "www.example.com"]\n' + acme)[render.COMPOSE_FILE])
    shared = yaml.safe_load(files_of(SHARED + acme)[render.COMPOSE_FILE])
    assert own["services"]["nginx"] == shared["services"]["nginx"]
    assert "front" in own["services"] and "front" not in shared["services"]


def test_a_project_that_was_never_behind_a_shared_front_on_other_ports_leaves_it_alone():
    import shlex

    from invoke import Result

    from tasks.execution.runner import Runner
    from tasks.execution.targets import HostTarget
    from tasks.procedures import server_front

    stack = stack_of('domains = ["example.com"]\nhttps_port = 8443\nhttp_port = 8080\n')
    folder = plans.Folder.of("/srv/stackfront")
    conn = Recorder({shlex.join(plans.inspect()): Result(
                        stdout="running\tnginx:1.27\t/srv/stackfront/conf\tshop-b_front_network \t0.0.0.0:80 0.0.0.0:443 \n"),
                     f"bash -c {shlex_quote(plans.read_claims(folder))}": Result(stdout="shop.test shop-b /srv/shop\n")})
    server_front.move_off(Runner(HostTarget(conn, stack.hosts["prod"], stack)))
    assert conn.commands == [shlex.join(plans.inspect()), f"bash -c {shlex_quote(plans.read_claims(folder))}"]
