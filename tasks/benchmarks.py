"""`inv bench`: the benchmarks of bench/, in one run (see bench/README.md)."""
from __future__ import annotations

import sys

from invoke import Exit, task

from .cli import StackTask
from .source.stack import ROOT


@task(name="bench", klass=StackTask, help={
    "only": "Comma-separated sections to run: build,start,serving,backups,scheduled,deploy,load,jobs (default: all).",
    "repeat": "Runs per measurement; medians are kept (default: 3).",
    "duration": "Seconds per wrk run in the serving section (default: 5).",
    "backup_mib": "MiB of table data for the backup runs (default: 1024).",
    "quick": "A smoke run: 1 run, 1 s wrk runs, 16 MiB backups; writes nothing unless --output (default: off).",
    "output": "Where to write the results (default: bench/RESULTS.md; none with --quick).",
    "project": "Compose project (and prefix of every name) of the throwaway copy (default: hello-bench); "
               "two runs side by side need two.",
})
def bench(c, only="", repeat=3, duration=5, backup_mib=1024, quick=False, output=None, project=None):
    """Benchmark the stack against baselines run alongside.

    Measures build, start, serving, backups, scheduled backups, deploy, deploy under load and
    background jobs;
    writes bench/RESULTS.md. Runs in a throwaway copy of the project (compose project hello-bench, free ports on
    127.0.0.1), which it removes at the end; about 15 minutes with the defaults."""
    # bench/ sits beside tasks/, and `inv` puts only tasks/ itself on sys.path. Imported late:
    # `inv --list` stays fast.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.run import main

    argv = ["--repeat", str(repeat), "--duration", str(duration), "--backup-mib", str(backup_mib)]
    argv += ["--only", only] if only else []
    argv += ["--quick"] if quick else []
    argv += ["--output", output] if output else []
    argv += ["--project", project] if project else []
    status = main(argv)
    if status:
        raise Exit(code=status)
