"""`inv deploy --host NAME`, `inv rollback --host NAME`, `inv deploy.unlock --host NAME`, `inv releases --host NAME`:
releases on a host over SSH (the steps are in tasks/procedures/release.py)."""
from __future__ import annotations

from invoke import Collection

from .cli import print_table, stack_task
from .procedures import places, release


@stack_task(hosts="one-or-cluster", configured={"keep": "keep_releases"}, help={
    "host": "The host to deploy to, a name from config/stack.toml (default: none; this or --cluster).",
    "cluster": "Or the cluster to deploy to ([clusters] in config/stack.toml): a rolling update on Docker Swarm "
               "(default: none).",
    "ship_image": "Build the image here and send it over SSH instead of building on the host (default: off).",
    "keep": "Releases to keep on the host",
    "timeout": "Seconds to wait for the new release to be healthy",
})
def deploy(r, ship_image=False, keep=None, timeout=None):
    """Ship the code to a host or cluster as a new release.

    On a host: build, migrate, start, switch; roll back on failure. With --cluster: every
    node builds it, migrations run as a Swarm job, then a rolling update (a new replica
    healthy before an old one stops; Swarm rolls back a failure)."""
    places.of(r).deploy(ship_image, keep, timeout)


@stack_task(hosts="one-or-cluster", help={
    "host": "The host to roll back, a name from config/stack.toml (default: none; this or --cluster).",
    "cluster": "Or the cluster to roll back: a rolling update to that release's image (default: none).",
    "to": "The release to go back to (a name from `inv releases`; default: the one before the live one).",
    "force": "Go back even to code that lacks migrations the databases have applied (they stay applied; "
             "default: off).",
    "timeout": "Seconds to wait for the release to be healthy",
})
def rollback(r, to=None, force=False, timeout=None):
    """Move traffic back to an earlier release.

    On a host or a cluster, without dropping a request. Refused when a database has applied
    migrations that release's code does not know (see --force)."""
    places.of(r).rollback(timeout, to, force)


@stack_task(hosts="one-or-cluster", help={"host": "The host whose releases to list (default: none; this or --cluster).",
                                           "cluster": "Or the cluster, whose manager holds them (default: none)."})
def releases(r):
    """List a host's or cluster's releases, newest first.

    The live one marked *: commit, when, by whom, image, and the migrations each database had
    applied once it was deployed."""
    r = places.of(r).home  # where the releases live: the host, or the cluster's manager
    rows = release.list_releases(r)
    if rows:
        print_table([["", "release", "commit", "deployed at", "by", "image", "migrations", ""], *rows])
    else:
        r.report(f"no releases on {r.target.name} yet")


@stack_task(hosts="one", help={"host": "The host whose deploy lock to release.",
                                "force": "Release a lock held from another machine, whose deploy this one cannot "
                                         "see (default: off; a deploy still running here is never unlocked)."})
def unlock(r, force=False):
    """Release the deploy lock of a deploy that died.

    Refused while that deploy runs."""
    release.unlock(r, force=force)


ns = Collection("deploy")
ns.add_task(deploy, default=True)
ns.add_task(unlock)
