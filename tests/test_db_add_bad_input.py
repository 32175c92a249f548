"""`inv db.add` refuses bad names with one line, a non-zero exit, and nothing written.

Runs the real task in a throwaway git copy of the project and checks `git status`."""
import subprocess
import time

import pytest

from testkit.projectcopy import copy_project, git_status
from tasks.procedures.locks import WAIT
from testkit import INV

# A module-scoped copy of the checkout (copy_project reads its live files first).
pytestmark = pytest.mark.live_state


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"))


def snapshot(tree):
    return git_status(tree, ignored=True), sorted(str(p.relative_to(tree)) for p in (tree / "config").rglob("*"))


BAD = {
    "uppercase": ("Database2", "invalid database name 'Database2'"),
    "hyphen": ("data-base", "invalid database name 'data-base'"),
    "leading-digit": ("2database", "invalid database name '2database'"),
    "space": ("data base", "invalid database name 'data base'"),
    "single-quote": ("db'x", "invalid database name"),
    "double-quote": ('db"x', "invalid database name"),
    "empty": ("", "a database name cannot be empty"),
    "default": ("default", "database name 'default' is reserved"),
    "nginx": ("nginx", "database name 'nginx' is reserved"),
    "djangoapp": ("djangoapp", "database name 'djangoapp' is reserved"),
    "duplicate": ("database1", "database 'database1' already exists"),
    "over-long": ("d" * 31, "is too long (31 characters; at most 30)"),
}


@pytest.mark.parametrize("name, message", BAD.values(), ids=list(BAD))
def test_bad_name_is_refused_and_nothing_is_written(tree, name, message):
    before = snapshot(tree)
    result = subprocess.run([*INV, "db.add", name], cwd=tree,
                            capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert result.stdout == ""
    assert snapshot(tree) == before


def test_removing_the_default_database_is_refused(tree):
    before = snapshot(tree)
    result = subprocess.run([*INV, "db.remove", "database1"], cwd=tree,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "is the default database" in result.stderr
    assert snapshot(tree) == before


def test_a_good_name_writes_every_file_and_a_secret(tree):
    result = subprocess.run([*INV, "db.add", "database2"], cwd=tree,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    changed = git_status(tree)
    assert " M config/stack.toml" in changed and " M docker-compose.yml" in changed
    secret = tree / "config/secrets/database2_password"
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.parent.stat().st_mode & 0o777 == 0o700
    assert "config/secrets" not in changed  # git-ignored
    password = secret.read_text().strip()
    assert len(password) >= 40 and password not in result.stdout
    # A second add of the same name is a duplicate now; the secret stays as it was.
    again = subprocess.run([*INV, "db.add", "database2"], cwd=tree,
                           capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert password in secret.read_text()


def test_concurrent_adds_both_land(tree):
    """Two `inv db.add` at once: the project lock makes the second wait for the first, so
    both databases end up in config/stack.toml (without it, one was lost in 3 runs of 5)."""
    for round_ in range(3):
        names = [f"race{round_}a", f"race{round_}b"]
        runs = [subprocess.Popen([*INV, "db.add", name], cwd=tree,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names]
        outs = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outs
        stack_text = (tree / "config/stack.toml").read_text()
        for name in names:
            assert f'name = "{name}"' in stack_text and f'  "{name}":' in (tree / "docker-compose.yml").read_text()


def test_a_held_project_lock_is_named_after_a_short_wait(tree):
    import os
    import socket

    lock = tree / ".locks/project"
    lock.mkdir(parents=True)
    (lock / "owner").write_text(f"inv db.remove by someone@{socket.gethostname()} pid {os.getpid()} since then\n")
    try:
        before = snapshot(tree)
        result = subprocess.run([*INV, "db.add", "lockedout"], cwd=tree,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: the project lock is held by inv db.remove by someone@{socket.gethostname()} pid {os.getpid()} "
            f"since then (waited 10s); try again once it is done, or if it died elsewhere, remove {lock}")
        assert snapshot(tree) == before
    finally:
        (lock / "owner").unlink()
        lock.rmdir()


def test_a_lock_left_by_a_dead_task_is_taken_over(tree):
    import socket

    dead = subprocess.Popen(["true"])  # a pid that was this machine's and is gone
    dead.wait()
    lock = tree / ".locks/project"
    lock.mkdir(parents=True)
    (lock / "owner").write_text(f"inv db.add by someone@{socket.gethostname()} pid {dead.pid} since then\n")
    started = time.monotonic()
    result = subprocess.run([*INV, "db.add", "takenover"], cwd=tree,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "was left by a task that is gone" in result.stdout and not lock.exists()
    # At once: not after the wait for a live holder (10 s here, 120 s for a volume's lock).
    assert time.monotonic() - started < WAIT / 2


def test_a_name_too_long_for_a_clusters_swarm_is_refused_and_nothing_is_written(tmp_path):
    """With a cluster and [backups], a database's backup secret is `hello_backup_NAME_password_`
    and a 12-character digest: Swarm takes 64 characters, so 29 for NAME."""
    tree = copy_project(tmp_path)
    with open(tree / "config/stack.toml", "a") as handle:
        handle.write('\n[hosts.node1]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\n\n[clusters.prod]\n'
                     'manager = "node1"\n\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/backups"\n')
    assert subprocess.run([*INV, "render"], cwd=tree, capture_output=True, text=True).returncode == 0
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "cluster"],
                   cwd=tree, check=True)
    before = snapshot(tree)
    result = subprocess.run([*INV, "db.add", "d" * 30], cwd=tree, capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("error: config/stack.toml: [clusters.prod]: database name '" + "d" * 30 + "' is too long "
                             "for Swarm: the secret hello_backup_" + "d" * 30 + "_password_<digest> would have 65 "
                             "characters (at most 64); use at most 29 characters for it with project 'hello' and "
                             "[backups]\n")
    assert snapshot(tree) == before
    assert subprocess.run([*INV, "db.add", "d" * 29], cwd=tree, capture_output=True, text=True).returncode == 0
