"""`inv bench`: every benchmark in one run, in one throwaway copy of the project, each against
a baseline measured in the same run; a table of medians and ratios on stdout and in
bench/RESULTS.md with the machine's description."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tasks.execution.files import write_atomic

from . import backup_throughput, build, deploy, deploy_load, jobs, scheduled_backups, serving, start
from tasks.errors import StackError
from tasks.source import values

from .harness import PROJECT, ROOT, BenchError, log, machine, sandbox

SECTIONS = ("build", "start", "serving", "backups", "scheduled", "deploy", "load", "jobs")
RESULTS = ROOT / "bench" / "RESULTS.md"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"Comma-separated sections to run; they run in this order: {','.join(SECTIONS)} (default: all).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per measurement; medians are kept (default: 3).")
    parser.add_argument("--duration", type=int, default=5, help="Seconds per wrk run (default: 5).")
    parser.add_argument("--backup-mib", type=int, default=1024, help="MiB of table data for the backup runs (default: 1024).")
    parser.add_argument("--quick", action="store_true",
                        help="A smoke run of the harness: 1 run, 1 s wrk runs, 16 MiB backups, the hand-written "
                             "deploy's image gzipped at level 1; "
                             "nothing is written unless --output is given.")
    parser.add_argument("--output", help=f"Where to write the results (default: {RESULTS.relative_to(ROOT)}; "
                                         "none with --quick).")
    parser.add_argument("--project", default=PROJECT,
                        help=f"Compose project and name prefix of the throwaway copy (default: {PROJECT}).")
    args = parser.parse_args(argv)
    try:
        values.project(args.project)
    except StackError as exc:
        parser.error(str(exc))
    asked = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in asked if name not in SECTIONS]
    args.only = [name for name in SECTIONS if name in asked]  # each once, in the order above
    if unknown or not args.only:
        parser.error(f"unknown section(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(SECTIONS)}")
    if args.quick:
        args.repeat, args.duration, args.backup_mib = 1, 1, 16
    if args.repeat < 1 or args.duration <= 0 or args.backup_mib < 1:
        parser.error("--repeat, --duration and --backup-mib must be positive")
    if args.output is None and not args.quick:
        args.output = str(RESULTS)
    return args


def measure(name: str, env, args):
    if name == "build":
        return build.measure(env, args.repeat)
    if name == "start":
        return start.measure(env, args.repeat, cli_repeat=3 if args.quick else 10)
    if name == "serving":
        # A smoke run holds the 2,000 connections 3 s: that they are all answered is its check.
        return serving.measure(env, args.repeat, args.duration,
                               **({"capacity_seconds": 3} if args.quick else {}))
    if name == "backups":
        return backup_throughput.measure(env, args.backup_mib, args.repeat)
    if name == "scheduled":
        return scheduled_backups.measure(env, args.backup_mib, args.repeat)
    if name == "jobs":
        return jobs.measure(env, args.repeat, quick=args.quick)
    if name == "load":
        return deploy_load.measure(env, 1 if args.quick else args.repeat, quick=args.quick)
    return deploy.measure(env, args.repeat, quick=args.quick)


def preflight(sections) -> None:
    """Say in one line what is missing before anything starts."""
    try:
        engine = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        engine = None
    if engine is None or engine.returncode != 0:
        raise BenchError("no Docker engine is reachable: start it (`inv doctor` says more)")
    needs = {"serving": [("wrk", "wrk")], "deploy": [("sshd", "openssh-server"), ("rsync", "rsync")],
             "load": [("sshd", "openssh-server"), ("rsync", "rsync"), ("wrk", "wrk")]}
    missing = sorted({package for name in sections for program, package in needs.get(name, [])
                      if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists()})
    if missing:
        raise BenchError(f"missing programs: apt-get install {' '.join(missing)}")
    if "deploy" in sections or "load" in sections:
        from testkit.testhost import missing_tools

        lacking = missing_tools()
        if lacking:
            raise BenchError(f"the deploy section makes servers of its own, which needs {', '.join(lacking)} "
                             "(see testkit/testhost.py)")


def revision() -> str:
    result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def document(args, env, sections, elapsed: float) -> str:
    command = "inv bench" + (f" --only {','.join(args.only)}" if args.only != list(SECTIONS) else "") + \
        (" --quick" if args.quick else "")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at revision "
        f"`{revision()}`, in {elapsed / 60:.1f} minutes. Every figure is a median over the runs "
        "of this one run, and every ratio compares with a baseline measured in the same run. "
        "How each is measured: the docstrings in `bench/`.",
        "",
        "Machine:",
        "",
        *[f"- {fact}" for fact in machine(env)],
    ]
    for section in sections:
        lines += ["", section.markdown()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    sections, failed = [], []
    try:
        preflight(args.only)
        with sandbox(args.project) as env:
            for name in args.only:
                log(f"{name}: measuring")
                try:
                    section = measure(name, env, args)
                except Exception as exc:  # noqa: BLE001 - one broken section must not cost the others
                    failed.append(name)
                    detail = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
                    print(f"bench: {name} failed: {detail}", file=sys.stderr)
                    continue
                sections.append(section)
                print(section.markdown() + "\n", flush=True)
            text = document(args, env, sections, time.monotonic() - started)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    if failed:
        print(f"bench: {', '.join(failed)} failed; {args.output or 'no file'} left as it was", file=sys.stderr)
        return 1
    if args.output:
        write_atomic(ROOT / args.output, text)  # an absolute --output stays as it is
        log(f"wrote {args.output}")
    return 0
