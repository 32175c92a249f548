"""Scheduled backups (restic) against cookiecutter-django's way, on database1 holding about
--backup-mib MiB of table rows (the backups section's table, made the app's own).

  ours      with [backups] in config/stack.toml (a repository folder in the bench's
            temporary directory, no schedule firing during the run), timed end to end as a
            user runs them: `inv backup.now` (dump in an exported snapshot with row counts,
            restic backup, forget --prune, check), the same again with nothing changed
            (restic's own count of bytes added: deduplication), `inv backup.restore latest
            --database database1 --yes` (the dump's checksum, a fresh database, the swap) and
            `inv backup.drill` (restore into a throwaway PostgreSQL, every table counted).
  baseline  cookiecutter-django's backup and restore scripts: `pg_dump | gzip` to a file
            from the database's container; `dropdb`, `createdb`, `gunzip -c | psql`. The app
            is stopped around the baseline's restore, outside its clock (dropdb needs it gone).

Medians of --repeat runs; the order of ours and the baseline alternates.
"""
from __future__ import annotations

import json
import statistics

from .backup_throughput import SERVICE, fill_database, row_count
from .harness import MIB, BenchError, Env, Section, log, ratio, seconds, size, timed


def configure(env: Env, text: str) -> None:
    (env.copy / "config/stack.toml").write_text(text)
    env.inv("render")


def status(env: Env) -> dict:
    out = env.compose("run", "--rm", "-T", "backup", "status").stdout.strip().splitlines()
    return json.loads(out[-1])["backup"]


def repository_bytes(env: Env) -> int:
    repository = env.workdir / "restic"
    return sum(p.stat().st_size for p in repository.rglob("*") if p.is_file())


def baseline_backup(env: Env, path) -> None:
    env.run(["bash", "-o", "pipefail", "-c",
             f"docker compose --project-name {env.project} exec -T {SERVICE} pg_dump -U {SERVICE} {SERVICE} "
             f"| gzip > {path}"])


def baseline_restore(env: Env, path) -> None:
    prefix = f"docker compose --project-name {env.project} exec -T {SERVICE}"
    env.run(["bash", "-o", "pipefail", "-c",
             f"{prefix} dropdb -U {SERVICE} --force {SERVICE}_restored --if-exists && "
             f"{prefix} createdb -U {SERVICE} {SERVICE}_restored && "
             f"gunzip -c {path} | {prefix} psql -q -U {SERVICE} -d {SERVICE}_restored -v ON_ERROR_STOP=1"])


def measure(env: Env, size_mib: int, repeat: int) -> Section:
    env.timeout = max(env.timeout, size_mib * 3 // 10)
    original = (env.copy / "config/stack.toml").read_text()
    repository = env.workdir / "restic"
    configure(env, original + f'\n[backups]\nschedule = "0 3 1 1 *"\nrepository = "{repository}"\ndrill = "off"\n')
    samples = {name: [] for name in ("backup", "again", "restore", "drill", "added", "taken", "grown",
                                     "base_backup", "base_restore", "base_bytes")}
    try:
        env.inv("up")
        log(f"filling {SERVICE} with ~{size_mib} MiB")
        rows = fill_database(env, size_mib)
        env.psql(SERVICE, "ALTER TABLE bench OWNER TO app")  # as the app's own tables are
        dump = env.workdir / "baseline.sql.gz"
        for i in range(repeat):
            def ours():
                before = repository_bytes(env)
                samples["backup"].append(timed(env.inv, "backup.now"))
                samples["taken"].append(status(env)["bytes"])
                grown = repository_bytes(env)
                samples["again"].append(timed(env.inv, "backup.now"))
                samples["added"].append(status(env)["added"])
                samples["grown"].append(repository_bytes(env) - grown)
                samples["restore"].append(timed(env.inv, "backup.restore", "latest", "--database", SERVICE, "--yes"))
                if row_count(env) != rows:
                    raise BenchError(f"after the restore, bench has {row_count(env)} rows, expected {rows}")
                samples["drill"].append(timed(env.inv, "backup.drill"))
                log(f"  ours: backup {samples['backup'][-1]:.1f}s (repository +{(grown - before) / MIB:.1f} MiB), "
                    f"unchanged {samples['again'][-1]:.1f}s ({samples['added'][-1]:,} B added), "
                    f"restore {samples['restore'][-1]:.1f}s, drill {samples['drill'][-1]:.1f}s")

            def baseline():
                samples["base_backup"].append(timed(baseline_backup, env, dump))
                samples["base_bytes"].append(dump.stat().st_size)
                samples["base_restore"].append(timed(baseline_restore, env, dump))
                env.psql(SERVICE, f"DROP DATABASE {SERVICE}_restored", check=False)
                dump.unlink()
                log(f"  baseline: backup {samples['base_backup'][-1]:.1f}s, restore {samples['base_restore'][-1]:.1f}s")

            for step in ((ours, baseline) if i % 2 == 0 else (baseline, ours)):
                step()
    finally:
        env.psql(SERVICE, "DROP TABLE IF EXISTS bench", check=False)
        env.compose("rm", "--stop", "--force", "backup", check=False)
        configure(env, original)

    def med(name):
        return statistics.median(samples[name])

    taken = med("taken")
    return Section(
        title="Scheduled backups",
        header=["", "ours (restic)", "cookiecutter-django (pg_dump \\| gzip)", "theirs ÷ ours"],
        rows=[
            ["backup", seconds(med("backup")), seconds(med("base_backup")), ratio(med("base_backup") / med("backup"))],
            ["restore", seconds(med("restore")), seconds(med("base_restore")), ratio(med("base_restore") / med("restore"))],
            ["unchanged second run", f"{seconds(med('again'))}, {size(med('added'))} added "
                                     f"({med('added') / taken:.2%} of {size(taken)})",
             f"{seconds(med('base_backup'))}, a whole new {size(med('base_bytes'))} file", "—"],
            ["restore drill", seconds(med("drill")), "none", "—"],
        ],
        notes=[f"database1: table `bench`, {rows:,} rows ({size_mib} MiB asked for); median of {repeat} run(s), "
               "order alternating.",
               f"**Repository growth for an unchanged second run: {size(med('added'))} added by restic's count "
               f"({med('added') / taken:.2%} of the {size(taken)} the run takes); the folder grew "
               f"{size(med('grown'))} (indexes, the snapshot, and prune's repacking).**",
               "Ours is timed end to end as `inv` runs it; its backup also takes the media and forgets, prunes "
               "and checks the repository, its restore checks the dump's SHA-256 and swaps databases without "
               "stopping the app; the drill restores into a throwaway PostgreSQL and counts every table."],
    )
