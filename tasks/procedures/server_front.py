"""The server's shared front (front = "shared"; plans in tasks/plans/server_front.py): one
Nginx on the server's ports 80 and 443 for every project deployed there that says so, each
project's own Nginx behind it, found by name.

Routing needs no reload. The front's configuration is the same for any set of projects; a
deploy changes only files in the front's folder (claims, certificate links) and the
networks it is on, so deploying, rolling back, renewing or removing one project never
touches the connections of another.

- `ensure`: the front runs (installed by `inv server.front`, or by the first deploy that
  needs it, as kamal-proxy boots with the first deploy); upgrading it is `inv server.front`
  only, never a deploy.
- `join`: a project's claims on its domains, under the server lock, refused in one line when
  another project holds one; then the front joins the project's front network.
- `leave`: the front leaves the project's network, and its claims and certificate links go;
  the other projects keep serving.
"""
from __future__ import annotations

import os

from ..errors import TaskError, last_line
from ..execution.runner import Runner
from ..plans import compose
from ..plans import server_front as plans
from ..source import render
from .locks import VOLUME_WAIT, held
from .rollout import reload_nginx

# The server lock is held while the front is made (a first install, an upgrade): a deploy
# of another project waits that long for it. Its image is pulled before the lock is taken.
SERVER_WAIT = VOLUME_WAIT


def folder(r: Runner, found: plans.State | None = None) -> plans.Folder:
    """The front's folder: the host entry's front_directory, or the folder the running front
    FOUND comes from (a host with front = "own" names none)."""
    if found and found.directory and not r.target.site.shared:
        return plans.Folder.of(found.directory)
    return plans.Folder.of(r.target.site.front_directory)


def server_lock(r: Runner, f: plans.Folder | None = None) -> held:
    """The server's lock: claims of every project there change under it alone."""
    return held(r, (f or folder(r)).lock, "the shared front's server lock", wait=SERVER_WAIT)


def pull(r: Runner) -> None:
    """The front's image on the server, before the server lock is taken: a pull can take
    minutes, which no other project's deploy should wait for."""
    r.shell(plans.pull(image(r)), what=f"pulling {image(r)} for the shared front")


def state(r: Runner) -> plans.State | None:
    """The front's container (None when there is none)."""
    result = r.probe(plans.inspect(), anywhere=True)
    return plans.parse_inspect(result.stdout) if result.ok else None


def check_folder(r: Runner, found: plans.State | None) -> None:
    """One front per server: a host entry naming another folder than the running front's
    would make a second one, which cannot have the ports."""
    f = folder(r)
    if found and found.directory and found.directory != str(f.directory):
        raise TaskError(f"the shared front on {r.target.name} runs from {found.directory}, not {f.directory}: "
                        f"set front_directory = \"{found.directory}\" in [hosts.{r.target.name}]")


def claims(r: Runner, f: plans.Folder | None = None) -> dict[str, plans.Claim]:
    """{domain: Claim} of every claim on the server."""
    return plans.parse_claims(r.shell(plans.read_claims(f or folder(r)), check=False).stdout)


def others(r: Runner, held_names: dict[str, plans.Claim]) -> dict[str, plans.Claim]:
    """The claims of other projects (and of other copies of this one) in HELD_NAMES."""
    return {d: c for d, c in held_names.items() if not c.holds(r.project, r.target.directory)}


def preflight(r: Runner) -> None:
    """Refuse, before anything changes, a project whose domain another project serves, or
    whose host entry names other ports than the running front publishes."""
    refusal = plans.refusal(claims(r), r.project, r.target.directory, r.target.site.domains)
    if refusal:
        raise TaskError(f"{refusal}: nothing was changed")
    found = state(r)
    check_folder(r, found)
    check_ports(r, found)


def check_ports(r: Runner, found: plans.State | None) -> None:
    """The front is the server's: its ports are the ones it was installed (or last upgraded,
    `inv server.front`) with. A host entry that names others would think its site is where
    it is not; a deploy never moves the front, so it is refused."""
    site = r.target.site
    if not found or not found.published or (found.holds(site.http_port) and found.holds(site.https_port)):
        return
    published = " and ".join(str(port) for port in sorted({port for _, port in found.published}))
    raise TaskError(f"the shared front on {r.target.name} publishes ports {published}, not {site.http_port} and "
                    f"{site.https_port} as [hosts.{r.target.name}] says: set http_port and https_port to match, or "
                    f"move the front with `inv server.front --host {r.target.name}`: nothing was changed")


def ensure(r: Runner, upgrade: bool = False) -> None:
    """The front runs. UPGRADE (`inv server.front`): its files brought to this version's, a
    reload when its configuration changed, recreated only when its definition did, and on
    the network of every project that claims a name before it takes a request."""
    f = folder(r)
    found = state(r)
    check_folder(r, found)
    if found and found.status == "running" and not upgrade:
        return
    changed = install_files(r)
    # Made (or recreated) first and on every claimed project's network before it starts.
    r.run(plans.create(f), anywhere=True, hide=True, what="creating the shared front")
    reconnect(r)
    r.run(plans.up(f), anywhere=True, hide=True, what="starting the shared front")
    if found and found.status == "running" and any(p.parts[0] == "conf" for p in changed):
        tested = r.run(plans.nginx_test(), anywhere=True, check=False, hide=True)
        if tested.failed:
            raise TaskError(f"the shared front refused its new configuration ({last_line(tested.stderr, 'no answer')}); "
                            "it still runs the previous one")
        r.run(plans.nginx_reload(), anywhere=True, hide=True, what="reloading the shared front")
        r.say("the shared front's configuration changed: reloaded it")
    r.report(f"the shared front runs on {r.target.name} ({f.directory}, {image(r)})")


def image(r: Runner) -> str:
    return os.environ.get("NGINX_IMAGE") or plans.NGINX_IMAGE


def install_files(r: Runner) -> list:
    """The front's folder and files, each written only when it changed; the paths written.
    A new configuration is tested first (staged beside the one in use), and a refused one
    is not installed: nothing is written then."""
    f, site = folder(r), r.target.site
    r.shell(plans.prepare(f), what=f"preparing {f.directory}")
    values = plans.values(f, site.bind, site.http_port, site.https_port, image(r),
                          render.NGINX_CONNECTIONS, render.NGINX_FILES)
    files = render.stackfront_files(values)
    staged = []
    for path in (p for p in files if p.parts[0] == "conf"):
        target = f.directory / path
        if "staged" in r.shell(plans.stage_if_changed(target), stdin_text=files[path], what=f"staging {path}").stdout:
            staged.append(target)
    for target in staged:
        tested = r.run(plans.nginx_test_staged(f, image(r), target), anywhere=True, check=False, hide=True)
        if tested.failed:
            for each in staged:
                r.shell(plans.staged_out(each), check=False)
            raise TaskError(f"Nginx refused the shared front's new configuration "
                            f"({last_line(tested.stderr, f'exit status {tested.exited}')}): nothing was installed, "
                            "the front runs as before")
    changed = []
    for target in staged:
        r.shell(plans.staged_in(target), what=f"installing {target.name}")
        changed.append(target.relative_to(f.directory))
    for path, text in files.items():
        if path.parts[0] == "conf":
            continue
        written = r.shell(plans.write_if_changed(f.directory / path), stdin_text=text, what=f"writing {path}")
        if "changed" in written.stdout:
            changed.append(path)
    return changed


def own_front_runs(r: Runner) -> bool:
    """Whether the project's own front (front = "own") runs: it holds the ports."""
    found = r.probe(["docker", "inspect", "--format", "{{.State.Status}}", plans.own_front(r.project)], anywhere=True)
    return found.ok and found.stdout.strip() == "running"


def connect(r: Runner, project: str) -> None:
    result = r.run(plans.connect(project), anywhere=True, check=False, hide=True)
    if result.failed and not plans.connected_already(result.stderr):
        raise TaskError(f"connecting the shared front to {plans.network(project)} failed: "
                        f"{last_line(result.stderr, f'exit status {result.exited}')}")


def reconnect(r: Runner) -> None:
    """The front on the network of every project that claims a name (after it was recreated),
    before it starts: one it cannot join would get 502 on each of its names, so the front
    is not started then (the error names the project)."""
    for project in sorted({owner.project for owner in claims(r).values()}):
        try:
            connect(r, project)
        except TaskError as exc:
            raise TaskError(f"{exc.message.removeprefix('error: ')}: the shared front was not started; once "
                            f"{project} is deployed again (or removed, `inv down --host`), run `inv server.front "
                            f"--host {r.target.name}`") from None


def front_mismatch(r: Runner) -> str | None:
    """How R's release was deployed, when for another front than its host has now (None when
    for the same): serving it would take the ports from the shared front (a release made for
    the project's own front) or leave none on them (one made for the shared front)."""
    made_for = r.shell(plans.release_front(r.root / "docker-compose.yml"), check=False).stdout.strip()
    if made_for not in plans.FRONTS or made_for == r.target.site.front:
        return None  # the same front (or no compose file: serving it fails on its own)
    if made_for == "shared":
        return "deployed behind the shared front and is not served again by the project's own front"
    return "deployed with the project's own front and is not served again behind the shared front"


def check_release(r: Runner) -> None:
    """Refuse to serve R's release (a rollback) when it was made for the other front."""
    mismatch = front_mismatch(r)
    if mismatch:
        raise TaskError(f"{r.target.release} was {mismatch}: deploy its code again instead")


def join(r: Runner) -> None:
    """This project's claims on its domains (refused when another project holds one), the
    front on this project's network, and started if missing: made first, on every
    claimed project's network and with this project's claims, so that it routes from its
    first request (a project moving from its own front hands the ports over only then)."""
    site, project = r.target.site, r.project
    if state(r) is None:
        pull(r)
    with server_lock(r):
        refusal = plans.refusal(claims(r), project, r.target.directory, site.domains)
        if refusal:
            raise TaskError(refusal)
        found = state(r)
        check_folder(r, found)
        if found is None:
            install_files(r)
            r.run(plans.create(folder(r)), anywhere=True, hide=True, what="creating the shared front")
            reconnect(r)
        connect(r, project)
        r.shell(plans.claim(folder(r), project, r.target.directory, site.domains), what="claiming the domains on the shared front")
        # Whenever the own front runs and the shared one does not: a move that was
        # interrupted is taken up again.
        if (found is None or found.status != "running") and own_front_runs(r):
            # The ports are free for the time it takes to start a container that exists.
            r.say(f"moving {project} from its own front to the shared front")
            reload_nginx(r)
            r.shell(plans.hand_over(plans.own_front(project), plans.CONTAINER, (site.http_port, site.https_port), 443),
                    what=f"handing the ports from {plans.own_front(project)} to the shared front")
        ensure(r)
    r.report(f"the shared front routes {', '.join(site.domains)} to {project}")


def moving_off_refusal(r: Runner, held_names: dict[str, plans.Claim]) -> str | None:
    """Why R's project cannot take the shared front's ports for its own front: other
    projects are behind it."""
    behind = others(r, held_names)
    if not behind:
        return None
    return (f"the shared front on {r.target.name} holds its ports for other projects too ({routes(behind)}): keep "
            f"front = \"shared\" in [hosts.{r.target.name}], or give this project another http_port and https_port")


def not_behind(r: Runner, found: plans.State) -> str:
    ports = " and ".join(str(port) for port in sorted({port for _, port in found.published}))
    return (f"the shared front on {r.target.name} holds ports {ports}, and {r.project} was never behind it: put it "
            f"behind it (front = \"shared\" in [hosts.{r.target.name}]), give it other ports, or remove the front "
            f"(`inv server.front --remove`, from a project that uses it)")


def check_moving_off(r: Runner) -> None:
    """A deploy with front = "own" on ports the shared front publishes is refused, before
    anything changes, while other projects are behind that front, or when this project
    never was."""
    found = state(r)
    held_names = claims(r, folder(r, found))
    if found and plans.network(r.project) not in found.networks and \
            not plans.held_by(held_names, r.project, r.target.directory):
        raise TaskError(f"{not_behind(r, found)}: nothing was changed")
    refusal = moving_off_refusal(r, held_names)
    if refusal:
        raise TaskError(f"{refusal}: nothing was changed")


def move_off(r: Runner) -> None:
    """front = "own" on a server with a shared front: when the front publishes this project's
    ports (a project moving back to its own front, the last one behind it), the project's
    own front is made and the ports handed to it (new connections held, as in the move onto
    the shared front), then the shared front goes. Either way this project's claims go, and
    the front leaves its network. Nothing when there is no shared front."""
    found = state(r)
    if found is None:
        return
    site, project = r.target.site, r.project
    f = folder(r, found)
    ports = (site.http_port, site.https_port)
    takes = found.status == "running" and any(found.holds(port) for port in ports[:2 if site.https else 1])
    behind = plans.network(project) in found.networks or bool(plans.held_by(claims(r, f), project, r.target.directory))
    if not behind:
        if takes:  # a front this project never was behind: not its to remove
            raise TaskError(not_behind(r, found))
        return  # a front of other projects, on other ports: nothing of this one's there
    with server_lock(r, f):
        held_names = claims(r, f)
        if takes:
            refusal = moving_off_refusal(r, held_names)
            if refusal:
                raise TaskError(refusal)
            r.say(f"moving {project} from the shared front to its own front")
            reload_nginx(r)
            r.compose(compose.create(["front"]), what="creating the project's front")
            r.shell(plans.hand_over(plans.CONTAINER, plans.own_front(project), ports, 443 if site.https else 80),
                    what=f"handing the ports from the shared front to {plans.own_front(project)}")
        leave_under_lock(r, f, plans.held_by(held_names, project, r.target.directory))
        if takes:
            # No project is behind it any more, and the ports are this project's.
            r.run(plans.down(f), anywhere=True, hide=True, what="removing the shared front")
            r.report(f"removed the shared front from {r.target.name}: {project}'s own front has its ports")


def reserve(r: Runner) -> list[str]:
    """This project's claims on its domains, under the server lock, before any of its
    containers is made: of two deploys claiming one new name, the second is refused here,
    in one line, with nothing of it made. The names it claimed anew (the undo releases them)."""
    site, project = r.target.site, r.project
    with server_lock(r):
        held_names = claims(r)
        refusal = plans.refusal(held_names, project, r.target.directory, site.domains)
        if refusal:
            raise TaskError(f"{refusal}: nothing was changed")
        added = [d for d in site.domains if d not in held_names]
        if added:
            # On a server without a front yet, its folders come first (the claims live there).
            r.shell(plans.prepare(folder(r)), what=f"preparing {folder(r).directory}")
            r.shell(plans.claim(folder(r), project, r.target.directory, added),
                    what="claiming the domains on the shared front")
    return added


def abandon(r: Runner, added: list[str]) -> None:
    """The names a deploy claimed anew (reserve) released, as it serves none of them: a claim
    left behind would answer 502 there and refuse them to other projects. Only those this
    project still holds from this directory; a failure here is a warning (the deploy's own
    error says what failed)."""
    if not added:
        return
    try:
        with server_lock(r):
            mine = [d for d in plans.held_by(claims(r), r.project, r.target.directory) if d in added]
            if mine:
                r.shell(plans.unclaim(folder(r), mine), what="releasing the domains on the shared front")
                r.say(f"released {', '.join(mine)} on the shared front")
    except TaskError as exc:
        r.say(f"warning: {exc}; `inv doctor --host {r.target.name}` lists the claims")


def reclaim(r: Runner) -> None:
    """Before R's release serves again (a rollback, an undo): its names are this project's,
    refused in one line when another project holds one; its free names claimed again."""
    names = plans.parse_release_names(r.shell(plans.release_names(r.root / "docker-compose.yml"), check=False).stdout)
    with server_lock(r):
        refusal = plans.refusal(claims(r), r.project, r.target.directory, names)
        if refusal:
            raise TaskError(f"{refusal}: {r.target.release} serves it too; nothing was changed")
        if names:
            r.shell(plans.claim(folder(r), r.project, r.target.directory, names),
                    what="claiming the release's domains on the shared front")


def release_dropped(r: Runner) -> None:
    """The claims this project (from this directory) holds on domains it no longer lists,
    released (after the switch); another copy's claims are never released here."""
    site, project = r.target.site, r.project
    with server_lock(r):
        dropped = [d for d in plans.held_by(claims(r), project, r.target.directory) if d not in site.domains]
        if dropped:
            r.shell(plans.unclaim(folder(r), dropped), what="releasing domains on the shared front")
            r.report(f"the shared front no longer routes {', '.join(dropped)} to {project}")


def leave(r: Runner, forget: bool = False) -> None:
    """This project off the front: its claims and certificate links removed, the front off
    its network; the other projects keep serving. FORGET (`down --volumes`): its published
    certificate and key deleted too, as its volumes are."""
    with server_lock(r):
        leave_under_lock(r, folder(r), plans.held_by(claims(r), r.project, r.target.directory))
    if forget:
        # No link points at it any more: nothing the front serves goes with it.
        r.compose(plans.forget_published(), what="deleting the certificate published to the shared front")


def leave_under_lock(r: Runner, f: plans.Folder, mine: list[str]) -> None:
    """MINE (this project's claims) removed and the front off this project's network."""
    project = r.project
    r.shell(plans.unclaim(f, mine), what="releasing the domains on the shared front")
    result = r.run(plans.disconnect(project), anywhere=True, check=False, hide=True)
    if result.failed and not plans.not_connected(result.stderr):
        raise TaskError(f"disconnecting the shared front from {plans.network(project)} failed: "
                        f"{last_line(result.stderr, f'exit status {result.exited}')}")
    if mine:
        r.report(f"the shared front no longer routes {', '.join(mine)} to {project}")


def remove(r: Runner) -> None:
    """The front stopped and removed; refused while a project claims a name (listed)."""
    with server_lock(r):
        held_names = claims(r)
        if held_names:
            listed = routes(held_names)
            raise TaskError(f"projects still use the shared front on {r.target.name} ({listed}): "
                            "remove them first (`inv down --host` in each)")
        r.run(plans.down(folder(r)), anywhere=True, hide=True, what="removing the shared front")
    r.report(f"removed the shared front from {r.target.name}")


def routes(held_names: dict[str, plans.Claim]) -> str:
    """`PROJECT: NAME, NAME (DIRECTORY); ...` of every claim."""
    owners = sorted(set(held_names.values()))
    return "; ".join(f"{o.project}: {', '.join(sorted(d for d, p in held_names.items() if p == o))}"
                     + (f" ({o.directory})" if o.directory else "") for o in owners)


def report(r: Runner) -> list[tuple[bool | None, str, str | None]]:
    """`inv doctor --host` lines: the front's state, the projects and names it routes, this
    project's names, their certificates."""
    f, site = folder(r), r.target.site
    found = state(r)
    fix = f"`inv server.front --host {r.target.name}` (or deploy)"
    if found is None:
        return [(False, f"no shared front on {r.target.name} ({f.directory})", fix)]
    lines = [(found.status == "running", f"shared front {found.status} ({found.image}, {found.directory or f.directory})",
              fix)]
    held_names = claims(r)
    lines.append((True, "it routes " + (routes(held_names) or "nothing"), None))
    mine = [d for d in site.domains if d in plans.held_by(held_names, r.project, r.target.directory)]
    missing = [d for d in site.domains if d not in mine]
    lines.append((not missing, f"{r.project}'s names claimed: {', '.join(mine) or 'none'}"
                  + (f"; not claimed: {', '.join(missing)}" if missing else ""), f"`inv deploy --host {r.target.name}`"))
    published = r.shell(plans.published(f, r.project), check=False).ok
    lines.append((published, f"{r.project}'s certificate " + ("published to the front" if published else "not published"),
                  f"`inv deploy --host {r.target.name}`"))
    connected = plans.network(r.project) in found.networks
    lines.append((connected, f"the front is {'on' if connected else 'not on'} {plans.network(r.project)}",
                  fix))
    return lines
