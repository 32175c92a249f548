"""Benchmark `inv volume.archive` / `inv volume.restore` against Docker's documented recipe.

What is compared, on the same PostgreSQL data volume (database1_volume) filled with about
--size-mib MiB of table rows (half random-ish, half repetitive, so compression has realistic
work to do):

  ours      `python -m invoke volume.archive --volume database1_volume` and
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

Everything runs in a throwaway copy of the project (testkit/projectcopy.py) under the compose
project `hello-bench` on a free port on 127.0.0.1, with its own app image tag, so the
developer's tree, stack and images are left alone; it is all removed at the end, whatever
happens. `inv bench` runs it with the other benchmarks; alone, from the repository root:
`pipenv run python -m bench.backup_throughput`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .harness import (MIB, BenchError, Env, Section, log, ratio, sandbox, seconds, size, timed,
                      wait_for_200)

SERVICE = "database1"
VOLUME_SHORT = "database1_volume"
# Each row: md5 of its number (32 hex chars, unique) and a random md5 repeated REPEATS
# times: about 1/(REPEATS+1) of the text is fresh, the rest repeats within the row. Rows
# stay far below the 2 kB TOAST threshold, so PostgreSQL stores them uncompressed.
REPEATS = 4
BATCH_MIB = 64


def volume_name(env: Env) -> str:
    return f"{env.project}_{VOLUME_SHORT}"


def helper(env: Env, mounts, *command) -> list[str]:
    """`docker run --rm -v ... IMAGE COMMAND` as in Docker's recipe, with the database image.
    The command is the entrypoint: the official image's entrypoint passes other commands
    through, but a stand-in image's may always start PostgreSQL. No pull, no network."""
    argv = ["docker", "run", "--rm", "--pull", "never", "--network", "none"]
    for mount in mounts:
        argv += ["-v", mount]
    return argv + ["--entrypoint", command[0], env.postgres_image, *command[1:]]


# The stack and its data ------------------------------------------------------------------------

def fill_database(env: Env, size_mib: int) -> int:
    """Create table `bench` and insert rows until it holds SIZE_MIB MiB; return its row count."""
    row = f"md5(g::text) || repeat(md5(random()::text), {REPEATS})"
    env.psql(SERVICE, "DROP TABLE IF EXISTS bench; CREATE TABLE bench (g bigint, payload text)")
    rows, per_row = 0, None
    target = size_mib * MIB
    while True:
        current = int(env.psql(SERVICE, "SELECT pg_total_relation_size('bench')").stdout.strip() or 0)
        if current >= target:
            break
        batch = 10_000 if per_row is None else max(1, min(target - current, BATCH_MIB * MIB) // per_row + 1)
        env.psql(SERVICE, f"INSERT INTO bench SELECT g, {row} FROM generate_series({rows + 1}, {rows + batch}) AS g")
        rows += batch
        per_row = max(1, int(env.psql(SERVICE, "SELECT pg_total_relation_size('bench')").stdout.strip()) // rows)
        log(f"  {rows} rows, {rows * per_row / MIB:.0f} MiB of {size_mib}")
    env.psql(SERVICE, "CHECKPOINT")
    return row_count(env)


def row_count(env: Env, wait: int = 120) -> int:
    """Rows in `bench`, retrying while the database is still starting."""
    deadline = time.monotonic() + wait
    while True:
        result = env.psql(SERVICE, "SELECT count(*) FROM bench", timeout=60, check=False)
        if result.returncode == 0:
            return int(result.stdout.strip())
        if time.monotonic() > deadline:
            raise BenchError(f"cannot count the rows of bench: {result.stderr.strip()}")
        time.sleep(1)


def volume_bytes(env: Env) -> int:
    result = env.run(helper(env, [f"{volume_name(env)}:/data:ro"], "du", "-sb", "/data"), timeout=300)
    return int(result.stdout.split()[0])


def verify(env: Env, expected_rows: int, what: str, check_http: bool) -> None:
    rows = row_count(env)
    if rows != expected_rows:
        raise BenchError(f"after {what}: bench has {rows} rows, expected {expected_rows}")
    if check_http:
        wait_for_200(f"{env.url}/healthz", timeout=30)


# The two ways -----------------------------------------------------------------------------------

def archives(env: Env) -> set[Path]:
    directory = env.copy / "backups"
    found = set()
    for ext in (".tar.zst", ".tar.gz"):
        found |= set(directory.glob(f"*{VOLUME_SHORT}_*{ext}"))
    return found


def ours_backup(env: Env) -> Path:
    before = archives(env)
    env.inv("volume.archive", "--volume", VOLUME_SHORT)
    new = archives(env) - before
    if len(new) != 1:
        raise BenchError(f"expected one new archive in {env.copy / 'backups'}, found {sorted(new)}")
    return new.pop()


def ours_restore(env: Env, archive: Path) -> None:
    env.inv("volume.restore", archive, "--yes")


def baseline_backup(env: Env, directory: Path) -> None:
    env.run(helper(env, [f"{volume_name(env)}:/data", f"{directory}:/backup"],
                   "tar", "czf", "/backup/baseline.tar.gz", "-C", "/data", "."))


def baseline_restore(env: Env, directory: Path) -> None:
    env.run(helper(env, [f"{volume_name(env)}:/data", f"{directory}:/backup"],
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

def section(size_mib: int, repeat: int, volume: int, rows: int, ours: Samples, base: Samples) -> Section:
    def cell(value):
        return f"{seconds(value)} ({volume / MIB / value:.0f} MiB/s)"

    table_rows = []
    for name in ("backup", "restore"):
        mine, theirs = statistics.median(getattr(ours, name)), statistics.median(getattr(base, name))
        table_rows.append([name, cell(mine), cell(theirs), ratio(theirs / mine)])
    mine, theirs = statistics.median(ours.archive_bytes), statistics.median(base.archive_bytes)
    table_rows.append(["archive", f"{size(mine)} ({volume / mine:.2f}:1)", f"{size(theirs)} ({volume / theirs:.2f}:1)",
                       ratio(theirs / mine)])
    return Section(
        title="Backups",
        header=["", f"ours ({ours.compressor})", "Docker's recipe (tar czf / xzf)", "recipe ÷ ours"],
        rows=table_rows,
        notes=[f"database1_volume: {volume / MIB:.0f} MiB on disk (du -sb), table `bench`: {rows:,} rows "
               f"({size_mib} MiB asked for); median of {repeat} run(s), order alternating.",
               "Ours is timed end to end as a user runs it (`inv volume.archive`, `inv volume.restore "
               "--yes`): Invoke start-up, stopping and starting the services, checksum, manifest, safety "
               "copy and the wait until the stack is healthy. The recipe's `docker run` alone is timed, "
               "with database1 stopped outside the clock. A ratio above 1: ours is faster (or smaller)."],
    )


# Main ---------------------------------------------------------------------------------------------

def measure(env: Env, size_mib: int, repeat: int) -> Section:
    """Fill database1 with SIZE_MIB MiB, then back up and restore it REPEAT times both ways."""
    env.timeout = max(env.timeout, size_mib * 3 // 10)  # one long operation: down to ~3 MiB/s
    env.inv("up")
    log(f"filling {SERVICE} with ~{size_mib} MiB")
    rows = fill_database(env, size_mib)
    volume = volume_bytes(env)
    log(f"{rows} rows, volume {volume / MIB:.1f} MiB")
    baseline_dir = env.workdir / "baseline"
    baseline_dir.mkdir(mode=0o700, exist_ok=True)
    ours, base = Samples(), Samples()
    try:
        for i in range(repeat):
            log(f"  backups {i + 1}/{repeat}")
            steps = [lambda: run_ours(env, rows, ours), lambda: run_baseline(env, rows, baseline_dir, base)]
            for step in (steps if i % 2 == 0 else steps[::-1]):
                step()
    finally:
        env.psql(SERVICE, "DROP TABLE IF EXISTS bench", check=False)
    return section(size_mib, repeat, volume, rows, ours, base)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.backup_throughput",
        description="Time `inv volume.archive`/`volume.restore` against Docker's documented "
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
    try:
        with sandbox() as env:
            print(measure(env, args.size_mib, args.repeat).markdown())
        return 0
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
