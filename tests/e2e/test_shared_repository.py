"""Two hosts of one project backing up into one restic repository, with one password (an
S3 bucket or an sftp folder shared, as users do): each host writes, lists, restores and
forgets its own snapshots alone, refuses the other's, and their runs at the same moment
both complete (the repository's lock is waited for, never taken from the other host).

Two test hosts, each with its own engine and sshd; the repository is a folder of this
machine's that both bind-mount (the hosts share its filesystem), as a network share would.
"""
import os
import re
import secrets
import subprocess

import pytest

from testkit import INV
from testkit.projectcopy import copy_project

pytestmark = pytest.mark.e2e
PROJECT = "hello-e2e-share"


class Pair:
    def __init__(self, root, servers):
        self.root, self.servers = root, servers

    def inv(self, *args, check=True, timeout=900):
        result = subprocess.run([*INV, *args], cwd=self.root, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, env=os.environ)
        if check and result.returncode != 0:
            raise AssertionError(f"inv {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def users(self, host: str) -> set[str]:
        out = self.inv("manage", "--host", host, "--", "shell", "-c",
                       "from django.contrib.auth.models import User; "
                       "print('users', *User.objects.values_list('username', flat=True))").stdout
        return set(re.search(r"^users(.*)$", out, re.M)[1].split())

    def snapshots(self, host: str) -> list[str]:
        listed = self.inv("backup.snapshots", "--host", host).stdout
        return re.findall(r"^([0-9a-f]{8}) ", listed, re.M)


@pytest.fixture(scope="module")
def pair(servers, tmp_path_factory):
    web, web2 = servers("share-web"), servers("share-web2")
    work = tmp_path_factory.mktemp("shared")
    repository = work / "restic"
    root = copy_project(work / "project")
    with open(root / "config/stack.toml", "a") as handle:
        for name, server in (("web", web), ("web2", web2)):
            handle.write("\n" + server.hosts_entry(name, str(server.dir / "srv" / "hello"), http_port=8000,
                                                   project=PROJECT))
        handle.write(f'\n[backups]\nschedule = "0 3 1 1 *"\nrepository = "{repository}"\ndrill = "off"\n'
                     'keep = { daily = 1 }\n')
    p = Pair(root, servers)
    p.dirs = {"web": web.dir / "srv" / "hello", "web2": web2.dir / "srv" / "hello"}
    p.inv("render")
    # One repository, one password: each host is given it before its first deploy (which
    # keeps it); then both deploy at once, each building on its own engine.
    password = secrets.token_urlsafe(32) + "\n"
    for host in ("web", "web2"):
        folder = p.dirs[host] / "shared/config/secrets"
        folder.mkdir(parents=True, mode=0o700)
        (folder / "restic_password").touch(mode=0o600)
        (folder / "restic_password").write_text(password)
    deploys = {host: subprocess.Popen([*INV, "deploy", "--host", host], cwd=root, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
               for host in ("web", "web2")}
    for host, run in deploys.items():
        output = run.communicate(timeout=1800)[0]
        assert run.returncode == 0, f"inv deploy --host {host}:\n{output}"
    for host in ("web", "web2"):
        assert (p.dirs[host] / "shared/config/secrets/restic_password").read_text() == password
    for host in ("web", "web2"):
        p.inv("manage", "--host", host, "--", "shell", "-c",
              f"from django.contrib.auth.models import User; User.objects.create_user('only-on-{host}')")
    yield p


def test_two_hosts_back_up_at_once_and_each_lists_its_own_snapshots(pair):
    # The first run makes the repository (two `restic init` at once would make two).
    pair.inv("backup.now", "--host", "web")
    runs = {host: subprocess.Popen([*INV, "backup.now", "--host", host], cwd=pair.root, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
            for host in ("web", "web2")}
    for host, run in runs.items():
        output = run.communicate(timeout=900)[0]
        assert run.returncode == 0, f"{host}:\n{output}"
    web, web2 = pair.snapshots("web"), pair.snapshots("web2")
    assert len(web) == 1 and len(web2) == 1 and set(web).isdisjoint(web2), (web, web2)
    pair.web_first = web[0]


def test_a_restore_of_latest_takes_the_host_s_own_snapshot(pair):
    # web2 has the newest snapshot in the repository now.
    pair.inv("backup.now", "--host", "web2")
    pair.inv("manage", "--host", "web", "--", "shell", "-c",
             "from django.contrib.auth.models import User; User.objects.filter(username='only-on-web').delete()")
    pair.inv("backup.restore", "latest", "--host", "web", "--database", "database1", "--yes")
    users = pair.users("web")
    assert "only-on-web" in users and "only-on-web2" not in users, users


def test_forget_keeps_the_other_host_s_snapshots_and_its_ids_are_refused(pair):
    # keep daily = 1: web2's second run of the day forgot its first, and nothing of web's.
    assert pair.snapshots("web") == [pair.web_first]
    theirs = pair.snapshots("web2")
    assert len(theirs) == 1
    refused = pair.inv("backup.restore", theirs[0], "--host", "web", "--database", "database1", "--yes", check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and f"no snapshot {theirs[0]} of {PROJECT}@web" in output, output
    assert f"it is {PROJECT}@web2's" in output
    assert "only-on-web" in pair.users("web")
