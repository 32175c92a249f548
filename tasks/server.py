"""`inv server.front --host NAME [--remove]`: the server's shared front, which every project
deployed there with front = "shared" sits behind (procedures/server_front.py)."""
from __future__ import annotations

from invoke import Collection

from .cli import stack_task
from .errors import TaskError
from .procedures import server_front


@stack_task(hosts="one", help={
    "host": "The server (a name from config/stack.toml whose entry has front = \"shared\").",
    "remove": "Stop and remove the front instead; refused while projects use it (default: off).",
})
def front(r, remove=False):
    """Install or upgrade a server's shared front.

    It owns the server's ports 80 and 443 and routes each name to its project's Nginx.
    Idempotent: the same files recreate nothing. A new configuration is tested before it is
    installed, then reloaded (no request dropped); a new definition (its image, ports or
    limits) recreates the front: every site behind it is refused for the seconds that takes.
    A deploy with front = "shared" installs it when it is missing, and never upgrades it.
    Its folder is front_directory (default /srv/stackfront); `inv doctor --host` shows it."""
    if not r.target.site.shared:
        raise TaskError(f"{r.target.name} has front = \"own\": set front = \"shared\" in [hosts.{r.target.name}] "
                        "to put its projects behind the server's front")
    if remove:
        server_front.remove(r)
    else:
        r.ensure_engine()
        server_front.pull(r)
        with server_front.server_lock(r):
            server_front.ensure(r, upgrade=True)


ns = Collection("server")
ns.add_task(front)
