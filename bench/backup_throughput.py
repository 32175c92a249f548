"""Benchmark `inv volume.backup` / `inv volume.restore` against Docker's documented recipe.

What is compared, on the same PostgreSQL data volume (database1_volume) filled with about
--size-mib MiB of table rows (half random-ish, half repetitive, so compression has realistic
work to do):

  ours      `python -m invoke volume.backup --volume database1_volume` and
            `python -m invoke volume.restore ARCHIVE --yes`, timed end to end as a user
            runs them: Invoke start-up, stopping and starting database1, tar + zstd (gzip
            when the host has no zstd), the SHA-256 and manifest; for the restore, the
            checksum verification, the safety copy of the volume, the extraction and the
            wait until the whole stack is healthy again.
  baseline  the "back up, restore, or migrate data volumes" recipe of Docker's
            documentation: `docker run --rm -v VOLUME:/data -v DIR:/backup IMAGE tar czf
            ...` and the matching `tar xzf` into an emptied volume. Only the `docker run`
            is timed; database1 is stopped before and started after, outside the clock
            (our task has to do that itself, inside its time).

So the ratio (baseline time / our time, > 1 means ours is faster) is conservative: our time
carries the safety and integrity work the recipe does not do. Throughput is the volume's
size (du -sb) divided by the time. Each measurement is repeated --repeat times and the
median kept; the order of ours and baseline alternates between repeats so that neither
always gets the warmer page cache.

Why: to know what the safety features cost (or save, with zstd) compared with what people
would otherwise copy from the documentation, on a volume of a realistic size.

Everything runs in a throwaway copy of the project (tests/projectcopy.py) under the compose
project `hello-bench` on a free port on 127.0.0.1, with its own app image tag, so the
developer's tree, stack and images are left alone; it is all removed at the end, whatever
happens. Run from the repository root: `pipenv run python bench/backup_throughput.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.projectcopy import copy_project  # noqa: E402

PROJECT = "hello-bench"
SERVICE = "database1"
VOLUME_SHORT = "database1_volume"
VOLUME = f"{PROJECT}_{VOLUME_SHORT}"
APP_IMAGE = f"{PROJECT}-djangoapp:latest"   # not the developer's hello-djangoapp:latest
MIB = 1024 * 1024
# Each row: md5 of its number (32 hex chars, unique) and a random md5 repeated REPEATS
# times: about 1/(REPEATS+1) of the text is fresh, the rest repeats within the row. Rows
# stay far below the 2 kB TOAST threshold, so PostgreSQL stores them uncompressed.
REPEATS = 4
BATCH_MIB = 64


class BenchError(Exception):
    pass


# Running things ------------------------------------------------------------------------------

@dataclass
class Env:
    copy: Path
    port: int
    timeout: int                                  # seconds for one long operation
    vars: dict = field(default_factory=dict)

    def run(self, argv, timeout=None, check=True, quiet=True) -> subprocess.CompletedProcess:
        """Run ARGV in the copy with the bench's environment; raise on failure or timeout."""
        try:
            result = subprocess.run([str(a) for a in argv], cwd=self.copy, env=self.vars, text=True,
                                    capture_output=quiet, stdin=subprocess.DEVNULL,
                                    timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"timed out after {timeout or self.timeout}s: {' '.join(map(str, argv))}") from None
        if check and result.returncode != 0:
            tail = "\n".join(((result.stdout or "") + (result.stderr or "")).splitlines()[-20:])
            raise BenchError(f"exit status {result.returncode}: {' '.join(map(str, argv))}\n{tail}")
        return result

    def inv(self, *args, timeout=None) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "invoke", *args], timeout=timeout)

    def compose(self, *args, timeout=None, check=True) -> subprocess.CompletedProcess:
        return self.run(["docker", "compose", "--project-name", PROJECT, *args], timeout=timeout, check=check)

    def psql(self, sql: str, timeout=None, check=True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", SERVICE, "psql", "-U", SERVICE, "-d", SERVICE,
                            "-v", "ON_ERROR_STOP=1", "-Atqc", sql, timeout=timeout, check=check)

    @property
    def postgres_image(self) -> str:
        return self.vars.get("POSTGRES_IMAGE") or "postgres:15"


def helper(env: Env, mounts, *command) -> list[str]:
    """`docker run --rm -v ... IMAGE COMMAND` as in Docker's recipe, with the database image.
    The command is the entrypoint: the official image's entrypoint passes other commands
    through, but a stand-in image's may always start PostgreSQL. No pull, no network."""
    argv = ["docker", "run", "--rm", "--pull", "never", "--network", "none"]
    for mount in mounts:
        argv += ["-v", mount]
    return argv + ["--entrypoint", command[0], env.postgres_image, *command[1:]]


def timed(func, *args) -> float:
    started = time.monotonic()
    func(*args)
    return time.monotonic() - started


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The stack and its data ------------------------------------------------------------------------

def fill_database(env: Env, size_mib: int) -> int:
    """Create table `bench` and insert rows until it holds SIZE_MIB MiB; return its row count."""
    row = f"md5(g::text) || repeat(md5(random()::text), {REPEATS})"
    env.psql("DROP TABLE IF EXISTS bench; CREATE TABLE bench (g bigint, payload text)")
    rows, per_row = 0, None
    target = size_mib * MIB
    while True:
        size = int(env.psql("SELECT pg_total_relation_size('bench')").stdout.strip() or 0)
        if size >= target:
            break
        batch = 10_000 if per_row is None else max(1, min(target - size, BATCH_MIB * MIB) // per_row + 1)
        env.psql(f"INSERT INTO bench SELECT g, {row} FROM generate_series({rows + 1}, {rows + batch}) AS g")
        rows += batch
        per_row = max(1, int(env.psql("SELECT pg_total_relation_size('bench')").stdout.strip()) // rows)
        log(f"  {rows} rows, {rows * per_row / MIB:.0f} MiB of {size_mib}")
    env.psql("CHECKPOINT")
    return row_count(env)


def row_count(env: Env, wait: int = 120) -> int:
    """Rows in `bench`, retrying while the database is still starting."""
    deadline = time.monotonic() + wait
    while True:
        result = env.psql("SELECT count(*) FROM bench", timeout=60, check=False)
        if result.returncode == 0:
            return int(result.stdout.strip())
        if time.monotonic() > deadline:
            raise BenchError(f"cannot count the rows of bench: {result.stderr.strip()}")
        time.sleep(1)


def volume_bytes(env: Env) -> int:
    result = env.run(helper(env, [f"{VOLUME}:/data:ro"], "du", "-sb", "/data"), timeout=300)
    return int(result.stdout.split()[0])


def healthz_status(port: int) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, no proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def verify(env: Env, expected_rows: int, what: str, check_http: bool) -> None:
    rows = row_count(env)
    if rows != expected_rows:
        raise BenchError(f"after {what}: bench has {rows} rows, expected {expected_rows}")
    if check_http:
        deadline = time.monotonic() + 30
        while (status := healthz_status(env.port)) != 200 and time.monotonic() < deadline:
            time.sleep(1)
        if status != 200:
            raise BenchError(f"after {what}: /healthz on 127.0.0.1:{env.port} answered {status}, expected 200")


# The two ways -----------------------------------------------------------------------------------

def archives(env: Env) -> set[Path]:
    directory = env.copy / "backups"
    found = set()
    for ext in (".tar.zst", ".tar.gz"):
        found |= set(directory.glob(f"*{VOLUME_SHORT}_*{ext}"))
    return found


def ours_backup(env: Env) -> Path:
    before = archives(env)
    env.inv("volume.backup", "--volume", VOLUME_SHORT)
    new = archives(env) - before
    if len(new) != 1:
        raise BenchError(f"expected one new archive in {env.copy / 'backups'}, found {sorted(new)}")
    return new.pop()


def ours_restore(env: Env, archive: Path) -> None:
    env.inv("volume.restore", archive, "--yes")


def baseline_backup(env: Env, directory: Path) -> None:
    env.run(helper(env, [f"{VOLUME}:/data", f"{directory}:/backup"],
                   "tar", "czf", "/backup/baseline.tar.gz", "-C", "/data", "."))


def baseline_restore(env: Env, directory: Path) -> None:
    env.run(helper(env, [f"{VOLUME}:/data", f"{directory}:/backup"],
                   "sh", "-c", "cd /data && find . -mindepth 1 -delete && tar xzf /backup/baseline.tar.gz"))


@dataclass
class Samples:
    backup: list = field(default_factory=list)
    restore: list = field(default_factory=list)
    archive_bytes: list = field(default_factory=list)
    compressor: str = ""


def run_ours(env: Env, rows: int, samples: Samples) -> None:
    started = time.monotonic()
    archive = ours_backup(env)
    samples.backup.append(time.monotonic() - started)
    manifest = json.loads(archive.with_name(archive.name + ".json").read_text())
    samples.compressor = manifest.get("compression", "?")
    samples.archive_bytes.append(archive.stat().st_size)
    samples.restore.append(timed(ours_restore, env, archive))
    verify(env, rows, "our restore", check_http=True)
    for leftover in archive.parent.glob(archive.name + "*"):   # keep the disk use of repeats flat
        leftover.unlink()
    log(f"  ours: backup {samples.backup[-1]:.1f}s, restore {samples.restore[-1]:.1f}s")


def run_baseline(env: Env, rows: int, directory: Path, samples: Samples) -> None:
    samples.compressor = "gzip (tar czf)"
    env.compose("stop", SERVICE)
    try:
        samples.backup.append(timed(baseline_backup, env, directory))
        samples.archive_bytes.append((directory / "baseline.tar.gz").stat().st_size)
        samples.restore.append(timed(baseline_restore, env, directory))
    finally:
        env.compose("start", SERVICE, check=False)
    verify(env, rows, "the baseline restore", check_http=False)
    (directory / "baseline.tar.gz").unlink()
    log(f"  baseline: backup {samples.backup[-1]:.1f}s, restore {samples.restore[-1]:.1f}s")


# Report -------------------------------------------------------------------------------------------

def table(volume: int, ours: Samples, base: Samples) -> str:
    def cell(seconds):
        return f"{seconds:8.2f} s {volume / MIB / seconds:8.1f} MiB/s"

    def size(values):
        value = statistics.median(values)
        return f"{value / MIB:.1f} MiB ({volume / value:.2f}x)"

    header = ("operation", "ours (s, MiB/s)", "baseline (s, MiB/s)", "ratio base/ours", "archive ours", "archive baseline")
    rows = [header]
    for name in ("backup", "restore"):
        mine, theirs = statistics.median(getattr(ours, name)), statistics.median(getattr(base, name))
        rows.append((name, cell(mine), cell(theirs), f"{theirs / mine:.2f}", size(ours.archive_bytes),
                     size(base.archive_bytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def report(args, volume: int, rows: int, ours: Samples, base: Samples) -> str:
    return "\n".join([
        f"volume {VOLUME}: {volume / MIB:.1f} MiB on disk (du -sb), table bench: {rows} rows "
        f"(asked for {args.size_mib} MiB); median of {args.repeat} run(s)",
        f"compressor: ours {ours.compressor}, baseline {base.compressor}",
        "",
        table(volume, ours, base),
        "",
        "ratio > 1: ours is faster. Ours is timed end to end (stop/start, checksums, safety copy,",
        "health wait); the baseline's docker run only, with database1 stopped outside the clock.",
        "Archive sizes: median, with the compression ratio (volume size / archive size).",
    ])


# Main ---------------------------------------------------------------------------------------------

def make_env(copy: Path, args) -> Env:
    port = free_port()
    variables = {**os.environ, "COMPOSE_PROJECT_NAME": PROJECT, "HTTP_PORT": str(port), "APP_IMAGE": APP_IMAGE}
    # One long operation may take 10 minutes, or longer on big volumes (down to ~3 MiB/s).
    return Env(copy=copy, port=port, timeout=max(600, args.size_mib * 3 // 10), vars=variables)


def benchmark(env: Env, args) -> str:
    log(f"starting the stack {PROJECT} on 127.0.0.1:{env.port} in {env.copy}")
    env.inv("up")
    log(f"filling {SERVICE} with ~{args.size_mib} MiB")
    rows = fill_database(env, args.size_mib)
    volume = volume_bytes(env)
    log(f"{rows} rows, volume {volume / MIB:.1f} MiB")
    baseline_dir = env.copy.parent / "baseline"
    baseline_dir.mkdir(mode=0o700)
    ours, base = Samples(), Samples()
    for i in range(args.repeat):
        log(f"run {i + 1} of {args.repeat}")
        steps = [lambda: run_ours(env, rows, ours), lambda: run_baseline(env, rows, baseline_dir, base)]
        for step in (steps if i % 2 == 0 else steps[::-1]):
            step()
    return report(args, volume, rows, ours, base)


def cleanup(env: Env | None, workdir: Path) -> None:
    if env is not None:
        log(f"cleaning up {PROJECT}")
        try:
            env.inv("down", "--volumes", "--yes", timeout=300)
        except BenchError as exc:
            log(f"inv down failed (going on): {exc}")
        names = env.run(["docker", "volume", "ls", "--quiet", "--filter", f"name={PROJECT}_"],
                        timeout=60, check=False).stdout.split()
        for name in (n for n in names if n.startswith(f"{PROJECT}_")):
            env.run(["docker", "volume", "rm", "--force", name], timeout=120, check=False)
        env.run(["docker", "image", "rm", APP_IMAGE], timeout=120, check=False)
    shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Time `inv volume.backup`/`volume.restore` against Docker's documented "
                    "tar czf/xzf recipe on a PostgreSQL volume, in a throwaway copy of the project.")
    parser.add_argument("--size-mib", type=int, default=1024,
                        help="Table data to put in database1, in MiB (default: 1024).")
    parser.add_argument("--repeat", type=int, default=3,
                        help="Measurements of each operation; the median is reported (default: 3).")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hello-bench-"))
    env = None
    try:
        copy = workdir / "project"
        copy.mkdir()
        copy_project(copy)
        env = make_env(copy, args)
        print(benchmark(env, args))
        return 0
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup(env, workdir)


if __name__ == "__main__":
    sys.exit(main())
