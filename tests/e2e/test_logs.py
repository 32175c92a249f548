"""Bounded logs, for real: a container of the stack logs fast (a bounded flood, many times
its log's bound) and the engine's files for it stay within [logs] max_size x max_file, while
`inv logs` still shows the newest lines. Each driver the stack takes (json-file, local) on a
database container of the stack, started alone from the rendered compose file. And the
volume helpers, whose output is data, keep no log at all."""
import subprocess
import time
from pathlib import Path

import pytest

from tasks.plans import archives
from tasks.source.stack import loads

from .conftest import BASE_IMAGES, PROJECT, Stack, free_port

pytestmark = pytest.mark.e2e

# A bound small enough for a flood of a few seconds to overrun it many times; the engine reads
# 1m as 1,000,000 bytes.
MAX_SIZE, MAX_FILE = 1_000_000, 2
LINES = 100_000
# Each warning about 280 bytes with its context line: ~28 MB of output, fourteen times the bound.
PAD = "x" * 180


@pytest.fixture(scope="module")
def logs_stack(tmp_path_factory):
    from testkit.projectcopy import copy_project

    s = Stack(f"{PROJECT}-logs", free_port(0), root=copy_project(tmp_path_factory.mktemp("project")))
    s.purge()
    # The database's password, as `inv up` would make it (0600 in a 0700 folder).
    secrets = s.root / "config" / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / "database1_password").write_text("not-a-real-password\n")
    (secrets / "database1_password").chmod(0o600)
    yield s
    s.purge()


def container_files(s: Stack, service: str) -> tuple[str, dict[str, int]]:
    """The container of SERVICE, and its log files on the engine's disk with their sizes."""
    container = s.compose("ps", "--all", "--quiet", service).stdout.split()[0]
    root = Path(s.docker("info", "--format", "{{.DockerRootDir}}").stdout.strip())
    folder = root / "containers" / s.docker("inspect", "--format", "{{.Id}}", container).stdout.strip()
    sizes = {}
    for path in [*folder.glob("*-json.log*"), *folder.glob("local-logs/container.log*")]:
        try:
            sizes[str(path.relative_to(folder))] = path.stat().st_size
        except FileNotFoundError:  # rotated away between the listing and this look
            pass
    return container, sizes


def settled_files(s: Stack, service: str) -> dict[str, int]:
    """The log files of SERVICE once the engine is done with them: the local driver compresses
    a rotated file in the background (container.log.1, then container.log.1.gz and the first
    removed), so a look while it works sees one file too many."""
    deadline = time.monotonic() + 30
    files = container_files(s, service)[1]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = container_files(s, service)[1]
        if again == files:
            break
        files = again
    return files


@pytest.mark.parametrize("driver", ["json-file", "local"])
def test_a_flooded_log_stays_within_its_bound_and_inv_logs_shows_the_tail(logs_stack, driver):
    s = logs_stack
    stack_file = s.root / "config" / "stack.toml"
    text = stack_file.read_text().split("\n[logs]\n")[0]
    stack_file.write_text(text + f'\n[logs]\ndriver = "{driver}"\nmax_size = "1m"\nmax_file = {MAX_FILE}\n')
    assert loads(stack_file.read_text()).logs.driver == driver
    s.inv("render")
    # The rendered file's own logging, as the engine got it: (re)created with it.
    s.compose("up", "--detach", "--no-deps", "--wait", "database1")
    container, before = container_files(s, "database1")
    config = s.docker("inspect", "--format", "{{json .HostConfig.LogConfig}}", container).stdout
    assert f'"Type":"{driver}"' in config and '"max-size":"1m"' in config and f'"max-file":"{MAX_FILE}"' in config

    # The flood: the database server itself logs fast (a warning per line of a loop), and the
    # client is told none of them.
    started = time.monotonic()
    flood = s.compose("exec", "-T", "database1", "psql", "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1",
                      "--username", "database1", "--dbname", "database1", "--command",
                      f"SET client_min_messages = error; DO $$ BEGIN FOR i IN 1..{LINES} LOOP "
                      f"RAISE WARNING 'flood % {PAD}', lpad(i::text, 6, '0'); END LOOP; END $$;")
    seconds = time.monotonic() - started
    assert flood.returncode == 0, flood.stderr
    # Each warning is two lines in the log: the message and its context.
    written = LINES * len(f"WARNING:  flood 000001 {PAD}\nCONTEXT:  PL/pgSQL function inline_code_block line 1 at RAISE\n")

    # The engine writes the lines asynchronously: wait until the last one is in the log.
    deadline = time.monotonic() + 60
    while True:
        shown = s.inv("logs", "--service", "database1", "--tail", "6").stdout
        if f"flood {LINES:06d}" in shown or time.monotonic() > deadline:
            break
        time.sleep(1)
    files = settled_files(s, "database1")
    print(f"\n{driver}: {written / 1e6:.1f} MB written in {seconds:.1f} s; log files {files} "
          f"(before: {before}); total {sum(files.values()) / 1e6:.2f} MB")
    # `inv logs` shows the newest lines, in order.
    assert f"flood {LINES:06d}" in shown and f"flood {LINES - 1:06d}" in shown, shown
    # At most MAX_FILE files, none much past MAX_SIZE: the engine rotates once a file passes
    # it, so one line's worth over is the most a file holds.
    assert 1 <= len(files) <= MAX_FILE, files
    assert all(size <= MAX_SIZE + 4096 for size in files.values()), files
    assert sum(files.values()) < written / 5, files
    # It did rotate (a bound never reached proves nothing).
    assert len(files) == MAX_FILE, files


def test_a_volume_helper_streams_its_output_whole_and_keeps_no_log(logs_stack):
    """A backup's helper writes a volume's archive to its standard output: with a log, the
    engine would keep a second copy of it, larger (a binary stream in JSON took 204 MB for
    50 MB), until the helper is removed. Kept (no --rm) here, to look at its folder."""
    s = logs_stack
    name = f"{s.project}-helper"
    argv = archives.helper(BASE_IMAGES[1], [], ["sh", "-c", "head -c 5000000 /dev/urandom"], s.project)
    argv = [word for word in argv if word != "--rm"]
    argv[2:2] = ["--name", name]
    s.docker("rm", "--force", "--volumes", name, check=False)
    try:
        streamed = subprocess.run(argv, capture_output=True, timeout=120)
        assert streamed.returncode == 0 and len(streamed.stdout) == 5_000_000, streamed.stderr
        assert s.docker("inspect", "--format", "{{.HostConfig.LogConfig.Type}}", name).stdout.strip() == "none"
        root = Path(s.docker("info", "--format", "{{.DockerRootDir}}").stdout.strip())
        folder = root / "containers" / s.docker("inspect", "--format", "{{.Id}}", name).stdout.strip()
        kept = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        assert not [*folder.glob("*-json.log*"), *folder.glob("local-logs/*")] and kept < 100_000, kept
    finally:
        s.docker("rm", "--force", "--volumes", name, check=False)
