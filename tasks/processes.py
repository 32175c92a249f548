"""`inv scale`: how many containers of each of the stack's processes ([[processes]] in
config/stack.toml: workers, beat, long-running commands) run.

The count is the source of truth's (`replicas`), so a later `inv up` or deploy keeps it:
the task writes it there (with the files made from it), then starts or stops containers
(on a cluster, `--cluster NAME`: Swarm scales the process's service).
"""
from __future__ import annotations

from .cli import stack_task
from .execution.files import write_all
from .procedures import places
from .source import render
from .source.processes import scale_request, with_replicas
from .source.stack import ROOT, STACK_FILE, loads


def changed_files(new_text: str) -> dict:
    """The checkout's files that change with NEW_TEXT as config/stack.toml: {path: (old, new)}."""
    files = {STACK_FILE: new_text, **render.rendered(loads(new_text))}
    changed = {}
    for path, text in files.items():
        target = ROOT / path
        old = target.read_text(encoding="utf-8") if target.exists() else None
        if old != text:
            changed[target] = (old, text)
    return changed


def put_back(changed: dict) -> None:
    """The files of CHANGED ({path: (old, new)}) as they were: rewritten, or deleted when new."""
    write_all({path: old for path, (old, _) in changed.items() if old is not None})
    for path, (old, _) in changed.items():
        if old is None:
            path.unlink(missing_ok=True)


@stack_task(hosts="many-or-cluster", help={
    "processes": "NAME=COUNT: the process and how many of its containers run (several: \"worker=3 beat=0\").",
    "timeout": "Seconds to wait for the new containers to be healthy",
})
def scale(r, processes, timeout=None):
    """Set how many containers of a process run.

    inv scale worker=3: writes replicas in config/stack.toml, then starts the missing
    containers (healthy before it returns) or stops the extra ones with their grace, the
    newest first. A count that does not start well is taken back. On a cluster: Swarm
    scales the process's service."""
    wanted = scale_request(processes)
    loads(with_replicas((ROOT / STACK_FILE).read_text(encoding="utf-8"), wanted))  # refused before the lock
    place = places.of(r)
    with place.lock():
        new_text = with_replicas((ROOT / STACK_FILE).read_text(encoding="utf-8"), wanted)
        changed = changed_files(new_text)
        if changed:
            place.home.do("write " + " and ".join(str(p.relative_to(ROOT)) for p in changed), write_all,
                          {path: text for path, (_, text) in changed.items()})
        try:
            place.scale(loads(new_text), wanted, timeout)
        except (Exception, KeyboardInterrupt):
            if changed:
                place.home.do("put back " + " and ".join(str(p.relative_to(ROOT)) for p in changed), put_back,
                              changed)
            raise
    r.report("; ".join(f"{name}: {count} running" for name, count in wanted.items()))
