"""[backups] in config/stack.toml: its defaults, its one-line refusals, the backup service it
renders, and the commands the backup tasks build (config/backup/backup.py's own logic is
tested where it runs, in tests/e2e/test_scheduled_backups.py)."""
import subprocess

import pytest
import yaml

from tasks.errors import StackError
from tasks.plans import backups as plans
from tasks.source import render
from tasks.source.stack import DRILLS, loads
from tasks.source.values import cron
from tests.stacks import COMMITTED

BASE = COMMITTED
# A host and a cluster of it, for the stack file.
CLUSTER = '\n[hosts.node1]\naddress = "10.0.0.1"\ndirectory = "/srv/hello"\n[clusters.prod]\nmanager = "node1"\n'
BACKUPS = '\n[backups]\nschedule = "15 3 * * *"\nrepository = "sftp:backup@vault.example.com:/srv/restic/hello"\n'


def stack_with(extra: str = "", backups: str = BACKUPS):
    return loads(BASE + backups + extra)


def test_defaults_keep_a_week_a_month_and_half_a_year_and_drill_weekly():
    backups = stack_with().backups
    assert backups.keep == (("daily", 7), ("weekly", 4), ("monthly", 6))
    assert backups.drill == DRILLS["weekly"] and backups.notify == () and not backups.local_repository


def test_the_issue_example_parses():
    backups = stack_with('keep = { daily = 7, weekly = 4, monthly = 6 }\ndrill = "monthly"\n'
                         'notify = "json://hooks.example.com/backup"\n').backups
    assert backups.drill == DRILLS["monthly"] and backups.notify == ("json://hooks.example.com/backup",)


@pytest.mark.parametrize("extra, message", [
    ('schedule = "61 3 * * *"\n', "the minute 61 is outside 0-59"),
    ('schedule = "* * *"\n', "five cron fields"),
    ('schedule = "@daily"\n', "five cron fields"),
    ('schedule = "15 3 * * * rm -rf /"\n', "five cron fields"),
    ('schedule = "15  3 * * *"\n', "five cron fields"),
    ('repository = "-oProxyCommand=sh"\n', "an absolute path on the host"),
    ('repository = "relative/dir"\n', "an absolute path on the host"),
    ('repository = "/srv/../etc"\n', "no '.' or '..'"),
    ('repository = "sftp:backup@host:/srv/x y"\n', "an absolute path on the host"),
    ('repository = "s3:http://minio/UPPER"\n', "an absolute path on the host"),
    ('keep = { daily = 0 }\n', "a whole number from 1"),
    ('keep = { fortnightly = 2 }\n', "keep must be a table of"),
    ('drill = "sometimes"\n', "drill (daily, weekly, monthly, off or cron fields)"),
    ('notify = "https://hooks.example.com/a b"\n', "an apprise URL"),
    ('notify = "json://hooks.example.com/${HOME}"\n', "an apprise URL"),
    ('schedule = "*/0 * * * *"\n', "a step of 0 in the minute"),
    ('notify = []\n', "must be an apprise URL or a list"),
    ('password = "hunter2"\n', "unknown setting(s) password (credentials never go here)"),
])
def test_bad_values_are_refused_in_one_line(extra, message):
    key = extra.split(" =")[0]
    text = "\n".join(line for line in BACKUPS.splitlines() if not line.startswith(key + " ")) + "\n" + extra
    with pytest.raises(StackError) as refused:
        loads(BASE + text)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_schedule_and_repository_are_required():
    with pytest.raises(StackError, match=r"\[backups\] needs repository"):
        loads(BASE + '\n[backups]\nschedule = "15 3 * * *"\n')


@pytest.mark.parametrize("expression", ["15 3 * * *", "*/5 * * * *", "0 0-6/2 1,15 * 1-5", "0 4 * 12 7"])
def test_cron_grammar_takes_the_usual_forms(expression):
    assert cron(expression, "schedule") == expression


def test_without_backups_nothing_changes_in_the_compose_file():
    plain = yaml.safe_load(render.rendered(loads(BASE))[render.COMPOSE_FILE])
    assert "backup" not in plain["services"] and "backup_state" not in plain["volumes"]


def test_the_backup_service_reads_as_the_app_role_with_no_socket_and_no_capability():
    stack = stack_with('notify = ["json://hooks.example.com/a", "mailto://ops@example.com"]\n')
    compose = yaml.safe_load(render.rendered(stack)[render.COMPOSE_FILE])
    service = compose["services"]["backup"]
    assert service["cap_drop"] == ["ALL"] and "ports" not in service
    assert not any("docker.sock" in (v if isinstance(v, str) else v.get("source", "")) for v in service["volumes"])
    assert "media_volume:/backup/media:ro" in service["volumes"]
    assert set(service["networks"]) == {"backup_network", "database1_network"}
    env = service["environment"]
    assert env["BACKUP_SCHEDULE"] == "15 3 * * *" and env["BACKUP_KEEP"] == "daily=7,weekly=4,monthly=6"
    assert env["BACKUP_REPOSITORY"] == "sftp:backup@vault.example.com:/srv/restic/hello"
    # No secret in the environment, notify URLs included (they hold tokens): they are files
    # of the service's own user, those set up on the host copied when present.
    assert not any("PASSWORD" in key and "FILE" not in key for key in env) and "BACKUP_NOTIFY" not in env
    assert "hooks.example.com" not in render.rendered(stack)[render.COMPOSE_FILE]
    init = compose["services"]["secrets-init"]
    assert "backup_secrets:/backup-out" in init["volumes"]
    script = init["entrypoint"][2]
    assert "chown 10002:10002" in script and "restic_password database1_password" in script
    assert ("backup_repository.env:repository.env backup_ssh_key:ssh_key backup_known_hosts:known_hosts "
            "backup_notify:notify") in script


@pytest.mark.parametrize("major, declared", [(15, "/var/lib/postgresql/data"), (18, "/var/lib/postgresql")])
def test_the_backup_service_keeps_no_anonymous_volume_where_postgres_declares_one(major, declared):
    """Its image is the newest database's PostgreSQL, whose VOLUME (a server's data, one folder
    up from 18 on) would be an anonymous volume at every run: a small tmpfs takes its place."""
    second = f'\n[[databases]]\nname = "database2"\npostgres = {major}\n'
    stack = loads(BASE + second + BACKUPS)
    for spec in (yaml.safe_load(render.rendered(stack)[render.COMPOSE_FILE]),
                 yaml.safe_load(render.rendered(loads(BASE + second + CLUSTER + BACKUPS))[render.stack_file("prod")])):
        mounts = [v for v in spec["services"]["backup"]["volumes"] if isinstance(v, dict)]
        assert mounts == [{"type": "tmpfs", "target": declared, "tmpfs": {"size": 65536}}]


def test_a_local_repository_is_bind_mounted_and_the_secret_files_include_its_password():
    stack = stack_with(backups='\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic/hello"\n')
    service = yaml.safe_load(render.rendered(stack)[render.COMPOSE_FILE])["services"]["backup"]
    assert "/srv/restic/hello:/repository" in service["volumes"]
    assert service["environment"]["BACKUP_REPOSITORY"] == "/repository"
    files = {str(path) for path in render.secret_files(stack)}
    assert "config/secrets/restic_password" in files
    assert "config/secrets/restic_password" not in {str(p) for p in render.secret_files(loads(BASE))}


def test_the_backup_service_takes_the_certificates_of_an_https_site():
    stack = stack_with('[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\n'
                       'domains = ["example.com"]\n')
    compose = yaml.safe_load(render.rendered(stack, stack.hosts["prod"].site)[render.COMPOSE_FILE])
    assert "certs:/backup/certs:ro" in compose["services"]["backup"]["volumes"]
    assert compose["services"]["backup"]["group_add"] == ["101"]  # site.pem is 0640, group 101


def test_one_off_runs_share_the_service_and_snapshots_are_checked():
    assert plans.script("drill", "latest") == ["run", "--rm", "-T", "backup", "drill", "latest"]
    for good in ("latest", "0123abcd", "a" * 64):
        assert plans.SNAPSHOT.fullmatch(good)
    for bad in ("--help", "0123ABCD", "latest;rm", "abc"):
        assert not plans.SNAPSHOT.fullmatch(bad)


def test_credentials_are_key_value_lines_and_nothing_else():
    assert plans.credentials("# s3\nAWS_ACCESS_KEY_ID=abc\n\nAWS_SECRET_ACCESS_KEY=x/y+z\n") == \
        "AWS_ACCESS_KEY_ID=abc\nAWS_SECRET_ACCESS_KEY=x/y+z\n"
    for bad in ("", "aws_key=1\n", "AWS_KEY\n", "export AWS_KEY=1\n", "AWS_KEY=a\x1bb\n", "RESTIC_REPOSITORY=/x\n",
                "LD_PRELOAD=/tmp/x.so\n"):
        with pytest.raises(ValueError):
            plans.credentials(bad)


def test_a_local_repository_folder_is_made_through_the_engine_for_the_service_user():
    argv = plans.own_repository("hello-backup:latest", "/srv/restic/hello")
    assert argv[:3] == ["docker", "run", "--rm"] and "--network" in argv and "none" in argv
    assert "/srv/restic/hello:/repository" in argv and argv[-1].endswith(f"chown {plans.UID}:{plans.UID} /repository "
                                                                         "&& chmod 700 /repository")
    # A folder that holds someone else's files is refused, never taken over.
    assert f'!= {plans.UID} ]; then' in argv[-1] and "exit 1" in argv[-1]


def test_an_sftp_repository_names_its_ssh_server():
    assert stack_with().backups.sftp_host == "vault.example.com"
    assert stack_with(backups='\n[backups]\nschedule = "15 3 * * *"\nrepository = "sftp:10.0.0.5:/r"\n'
                      ).backups.sftp_host == "10.0.0.5"
    assert stack_with(backups='\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/r"\n').backups.sftp_host is None


def test_the_service_ssh_key_is_an_openssh_key_pair_and_fingerprints_match_ssh_keygen(tmp_path):
    import subprocess

    private, public = plans.new_ssh_key("hello-backup@prod")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and public.endswith(" hello-backup@prod\n")
    (tmp_path / "key").write_text(private)
    (tmp_path / "key").chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "key")], capture_output=True, text=True,
                             check=True).stdout.split()
    assert derived[:2] == public.split()[:2]
    assert plans.new_ssh_key("x")[1] != public  # a fresh key each time
    (tmp_path / "key.pub").write_text(public)
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "key.pub")], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert plans.fingerprint(public) == printed and plans.FINGERPRINT.fullmatch(printed)
    assert plans.fingerprint(f"vault.example.com {public.split()[0]} {public.split()[1]}") == printed
    # A host whose name looks like a key type is still a host.
    assert plans.fingerprint(f"ssh-vault.example.com {public.split()[0]} {public.split()[1]}") == printed


def test_host_keys_are_keyscan_lines_and_nothing_else():
    good = ("vault.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDr\n"
            "# vault.example.com:22 SSH-2.0-OpenSSH_9.2\n10.0.0.5 ecdsa-sha2-nistp256 AAAAE2VjZHNh==\n")
    assert plans.host_keys(good) == ["vault.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDr",
                                     "10.0.0.5 ecdsa-sha2-nistp256 AAAAE2VjZHNh=="]
    for bad in ("", "# only a comment\n", "vault ssh-dss AAAA\n", "vault ssh-ed25519 AAAA; rm -rf /\n",
                "@cert-authority * ssh-ed25519 AAAA\n"):
        with pytest.raises(ValueError):
            plans.host_keys(bad)


def test_secrets_init_leaves_the_backup_service_the_passwords_of_the_stack_s_databases_alone(tmp_path):
    """The rendered script run for real (sh, as root): a purged database's password, left
    in the backup service's secrets by an earlier start, is removed; the others are kept."""
    stack = stack_with(backups='\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic/hello"\n')
    script = yaml.safe_load(render.rendered(stack)[render.COMPOSE_FILE])["services"]["secrets-init"]["entrypoint"][2]
    folders = {name: tmp_path / name for name in ("in", "out", "backup-out")}
    for folder in folders.values():
        folder.mkdir()
    for name in ("django_secret_key", "database1_password", "restic_password", "backup_notify"):
        (folders["in"] / name).write_text("secret\n")
    (folders["backup-out"] / "database9_password").write_text("a purged database's\n")
    (folders["backup-out"] / "known_hosts").write_text("no longer set up\n")
    script = script.replace("$$", "$").replace("/backup-out", str(folders["backup-out"]))
    script = script.replace("/out", str(folders["out"])).replace("/in/", f"{folders['in']}/")
    subprocess.run(["sh", "-ec", script], check=True, capture_output=True)
    assert sorted(p.name for p in folders["backup-out"].iterdir()) == ["database1_password", "notify", "restic_password"]


def backup_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("backup_script", "config/backup/backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOOD_MANIFEST = {"databases": {"database1": {"file": "database1.dump", "sha256": "a" * 64, "tables": {"public.t": 3}}},
                 "media": {"uploads/a.png": "b" * 64}}


@pytest.mark.parametrize("change", [
    lambda m: m["databases"].update({"-h evil": m["databases"]["database1"]}),
    lambda m: m["databases"]["database1"].update(file="../../run/secrets/backup/restic_password"),
    lambda m: m["databases"]["database1"].update(sha256=None),
    lambda m: m["databases"]["database1"]["tables"].update({"public.t": "3"}),
    lambda m: m["media"].update({"../outside": "b" * 64}),
    lambda m: m["media"].update({"/etc/passwd": "b" * 64}),
    lambda m: m.update(databases=[]),
    lambda m: m.pop("media"),
], ids=["option-like-name", "file-outside", "no-sha256", "count-not-int", "media-dotdot", "media-absolute",
        "databases-a-list", "no-media"])
def test_a_snapshot_manifest_is_checked_before_anything_in_it_is_used(change):
    import copy
    import json

    script = backup_script()
    assert script.checked_manifest(json.dumps(GOOD_MANIFEST), "abc") == GOOD_MANIFEST
    forged = copy.deepcopy(GOOD_MANIFEST)
    change(forged)
    with pytest.raises(script.Failed, match="the manifest of snapshot abc is not one a backup run writes"):
        script.checked_manifest(json.dumps(forged), "abc")


def test_a_run_waits_for_the_drills_and_restores_of_its_place_and_they_for_it(tmp_path, monkeypatch):
    """A run removes its place's stale restic locks: none of this place's readers may hold
    one then (restic would take a one-off container's live lock for a killed run's)."""
    import fcntl

    script = backup_script()
    monkeypatch.setattr(script, "USE_FILE", str(tmp_path / "use.lock"))

    def can(mode):
        with open(script.USE_FILE, "a") as other:
            try:
                fcntl.flock(other, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

    with script.using():
        assert can(fcntl.LOCK_SH) and not can(fcntl.LOCK_EX)  # readers together, a run waits
    with script.using(exclusive=True):
        assert not can(fcntl.LOCK_SH)  # readers wait for the run
    assert can(fcntl.LOCK_EX)
