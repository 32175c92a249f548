"""`inv db.*` on a real engine, in a copy of the project: add a database, use it, check
the networks keep it apart, remove it with its data kept."""
import pytest

from testkit.projectcopy import git_status
from testkit import INV

pytestmark = pytest.mark.e2e


def tables(s, db):
    out = s.compose("exec", "-T", db, "psql", "-U", db, "-d", db, "-Atc",
                    "select tablename from pg_tables where schemaname = 'public' order by 1").stdout
    return set(out.split())


def reaches(s, service, host, port=5432):
    """Whether SERVICE's container opens a TCP connection to HOST:PORT (bash's /dev/tcp,
    present in the nginx, postgres and python images alike)."""
    probe = f"exec 3<>/dev/tcp/{host}/{port}"
    result = s.compose("exec", "-T", service, "timeout", "3", "bash", "-c", probe, check=False)
    return result.returncode == 0


def address(s, service, network):
    container = s.compose("ps", "-q", service).stdout.strip()
    fmt = f'{{{{(index .NetworkSettings.Networks "{s.project}_{network}").IPAddress}}}}'
    return s.docker("inspect", "--format", fmt, container).stdout.strip()


@pytest.fixture(scope="module")
def s(copied_stack):
    copied_stack.inv("up")
    copied_stack.tables_before = tables(copied_stack, "database1")
    return copied_stack


def test_db_add_up_serves_both_databases(s):
    result = s.inv("db.add", "database2", "--up")
    assert "Database database2 is up and migrated." in result.stdout
    assert s.health_inside() == (200, {"status": "ok", "databases": {"database1": "ok", "database2": "ok"}})
    assert 'DJANGO_DATABASES: "database1,database2"' in (s.root / "docker-compose.yml").read_text()
    assert (s.root / "config/secrets/database2_password").stat().st_mode & 0o777 == 0o600


def test_migrate_database2_creates_tables_there_only(s):
    s.inv("migrate", "--database", "database2")
    assert tables(s, "database2") == {"django_migrations", "notes_note", "notes_wordcount", "notes_tick"}
    assert tables(s, "database1") == s.tables_before


def test_the_router_sends_notes_to_database2(s):
    code = "from notes.models import Note; n = Note.objects.create(text='kept apart'); print('db', n._state.db)"
    assert "db database2" in s.inv("manage", "--", "shell", "-c", code).stdout
    out = s.compose("exec", "-T", "database2", "psql", "-U", "database2", "-d", "database2", "-Atc",
                    "select text from notes_note").stdout
    assert out.strip() == "kept apart"


def test_db_list(s):
    out = s.inv("db.list").stdout.splitlines()
    assert out[0].split() == ["NAME", "ALIAS", "NETWORK", "VOLUME", "STATE"]
    assert out[1].split() == ["database1", "default", f"{s.project}_database1_network", f"{s.project}_database1_volume", "running"]
    assert out[2].split() == ["database2", "database2", f"{s.project}_database2_network", f"{s.project}_database2_volume", "running"]


def test_db_shell_takes_sql_on_stdin(s):
    import subprocess

    result = subprocess.run([*INV, "db.shell", "database2"], cwd=s.root, env=s.env,
                            input="select count(*) from notes_note;\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert " 1\n" in result.stdout


def networks(s, service) -> set[str]:
    container = s.compose("ps", "-q", service).stdout.strip()
    return set(s.docker("inspect", "--format", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
                        container).stdout.split())


def test_networks_keep_database2_apart(s):
    ip = address(s, "database2", "database2_network")
    assert ip
    # The app reaches it, by name and by address: the probe can succeed.
    assert reaches(s, "djangoapp", "database2") and reaches(s, "djangoapp", ip)
    # Nginx and database1 are on none of its networks, and can neither resolve its name nor
    # reach its address. The engine's isolation of one bridge from another is its firewall
    # rules, which Docker 20.10 takes out and puts back for a moment whenever any network is
    # made (other tests make some meanwhile): a connection that went through once is tried
    # again, and only one that goes through every time is a way in.
    assert networks(s, "database2") == {f"{s.project}_database2_network"}
    for service in ("nginx", "database1"):
        assert f"{s.project}_database2_network" not in networks(s, service)
        assert s.compose("exec", "-T", service, "getent", "hosts", "database2", check=False).returncode != 0
        assert not all(reaches(s, service, ip) for _ in range(3)), f"{service} reached database2 at {ip}"


def test_db_remove_returns_to_one_database_and_keeps_the_volume(s):
    result = s.inv("db.remove", "database2")
    assert f"its data stays in the volume {s.project}_database2_volume" in result.stdout
    assert s.health_inside() == (200, {"status": "ok", "databases": {"database1": "ok"}})
    assert "database2_volume" in s.volumes()
    assert "database2" not in s.compose("ps", "--services").stdout.split()
    assert git_status(s.root) == ""  # back to the committed one-database files


def test_db_add_again_finds_the_kept_data(s):
    s.inv("db.add", "database2", "--up")
    out = s.compose("exec", "-T", "database2", "psql", "-U", "database2", "-d", "database2", "-Atc",
                    "select text from notes_note").stdout
    assert out.strip() == "kept apart"
