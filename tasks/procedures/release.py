"""A deploy and a rollback: one flow for every kind of place (`run_deploy`, `run_rollback`:
the lock, "runs this code already", the named steps with one undo hook, the ledger, the
prune, the rollback check), and the host strategy (HostRelease); a Swarm cluster's is
SwarmRelease in procedures/cluster_release.py.

On a host no request is dropped on the way: the release phase (migrations, static files) runs in a
one-off container while the previous release serves, then the new app container starts
beside the old one and traffic moves by a reload of Nginx (procedures/rollout.py).

A failure, or Ctrl-C, at any step runs the same undo: if traffic may have moved, it moves
back to the previous release the same way; the new release's directory is deleted;
`current` is never switched before the new release serves. The deploy lock is released on
the way out in every case. The host-side shell comes from tasks/plans/release.py.
"""
from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import HostLost, TaskError, last_line, reason
from ..execution.runner import Runner
from ..plans import archives, compose, ledger
from ..plans import release as plans
from ..plans import rollout as rollout_plans
from ..source import render
from ..source.stack import ROOT
from . import server_front
from .building import build_app
from .images import ship_image
from .rollout import roll_out
from .serving import wait_until_served
from .site import secure as secure_site
from .starting import release_phase as run_release_phase
from .starting import start_backups, start_databases


class deploy_lock:
    """The first deploy takes the lock; a second one fails and says who holds it.
    Released on the way out, also after a failure or Ctrl-C; when the host cannot be reached
    to release it, the error says so and how to release it later."""

    def __init__(self, r: Runner):
        self.r = r
        self.directory = r.target.directory

    def __enter__(self):
        owner = (f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since "
                 f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        name = self.r.target.name
        taken = self.r.shell(plans.take_lock(self.directory, owner), check=False)
        if taken.exited == plans.LOCK_HELD:
            holder = self.r.shell(plans.lock_holder(self.directory), check=False).stdout.strip() or "unknown"
            raise TaskError(f"another deploy holds the lock on {name}: {holder}; if it is dead, "
                            f"release it with `inv deploy.unlock --host {name}`")
        if taken.failed:
            raise TaskError(f"taking the deploy lock on {name} failed: {last_line(taken.stderr, f'exit status {taken.exited}')}")
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.r.shell(plans.release_lock(self.directory), check=False)
        except HostLost as lost:
            name = self.r.target.name
            held = (f"the deploy lock on {name} is still held: once {name} answers, release it with "
                    f"`inv deploy.unlock --host {name}`")
            if isinstance(exc, TaskError):
                exc.message = f"{exc.message}; {held}"
                return False
            raise TaskError(f"{reason(lost)}; {held}") from None
        return False


def claim_directory(r: Runner) -> None:
    """The directory names this project from its first deploy on (a directory of an earlier
    version: once its releases said it is this project's)."""
    directory = r.target.directory
    result = r.shell(plans.claim_directory(directory, r.project), what=f"recording the project of {directory}")
    refusal = plans.owner_refusal(r.target.name, directory, r.project, result.stdout)
    if refusal:  # another project's first deploy there won
        raise TaskError(refusal)


def check_ports(r: Runner) -> None:
    """Refuse, before anything changes, a deploy whose front would find its ports taken (by
    another project's front, most often): it would fail at its very end, starting the front."""
    wanted = plans.published(r.target.site, r.target.http_port)
    printed = r.shell(plans.port_holders(sorted({port for _, port, _ in wanted})), check=False).stdout
    shared = server_front.plans.COMPOSE_PROJECT
    refusal = plans.port_refusal(r.target.name, r.project, wanted, printed, passing=(shared,))
    if refusal:
        raise TaskError(refusal)
    if plans.held_by(wanted, printed, shared):
        # A project moving back to its own front: the shared front hands the ports over, if
        # no other project is behind it.
        server_front.check_moving_off(r)


def current_release(r: Runner) -> str | None:
    name = r.shell(plans.current_release(r.target.directory), check=False).stdout.strip().rsplit("/", 1)[-1]
    return name or None


def releases(r: Runner) -> list[str]:
    names = r.shell(plans.list_releases(r.target.directory), check=False).stdout.split()
    return sorted(n for n in names if plans.RELEASE_PATTERN.match(n))


@dataclass
class Deploy:
    """What the steps share. R works in the new release on the machine that holds the
    releases (a host, a cluster's manager); HERE on this machine."""
    r: Runner
    here: Runner
    release: str
    previous: str | None
    image: str
    ship_image: bool
    timeout: int
    started: bool = False        # traffic may have moved to the new release: undo moves it back
    applied: dict | None = None  # per database, the migrations applied once the release phase ran

    @property
    def host(self):
        return self.r.target.host

    @property
    def release_dir(self):
        return self.r.target.root


def ship_code(d: Deploy) -> None:
    """rsync what ships into the release; files unchanged since the previous release are
    hard-linked, not sent."""
    link_dest = str(d.r.target.directory / "releases" / d.previous) if d.previous else None
    result = d.here.run(plans.rsync(ROOT, d.host, str(d.release_dir), link_dest, d.r.stack.app), hide=True, check=False)
    if result.failed:
        why = plans.rsync_error(result.stderr, result.exited)
        if why.startswith("exit status"):  # rsync said nothing: is the disk full?
            free = d.r.shell(plans.free_kib(d.release_dir.parent), check=False).stdout.strip()
            if free.isdigit() and int(free) < plans.NEARLY_FULL_KIB:
                why = f"No space left on device ({free} KiB free in {d.release_dir.parent}; {why})"
        raise TaskError(f"rsync to {d.host.name} failed: {why}")
    d.r.report(f"shipped {d.release}: {plans.bytes_sent(result.stdout)} bytes sent")


def prepare(d: Deploy) -> None:
    """The host's env files linked in, the files that depend on the host's site (its
    domains, ports and TLS) rendered for it, and the release's .env for compose."""
    d.r.target.ensure_secrets(d.r)
    for path, text in render.site_files(d.r.stack, d.r.target.site, d.r.target.backup_place).items():
        d.r.write(d.release_dir / path, text, mode=0o644)
    d.r.write(d.release_dir / ".env", plans.release_env(d.r.project, d.r.target.http_port, d.image,
                                                        d.r.target.config_dir, os.environ), mode=0o644)


def build_image(d: Deploy) -> None:
    if not d.ship_image:
        d.r.say(f"building on {d.host.name} ({d.image})")
        build_app(d.r, f"building on {d.host.name}")
        return
    here = d.here.here({"APP_IMAGE": d.image})
    d.r.say(f"building the image here ({d.image})")
    build_app(here, "building the image here")
    ship_image(d.r, here, d.image)


def move_to_shared_front(d: Deploy) -> None:
    """Behind the shared front (front = "shared"), a project whose own front still holds the
    ports moves now: the first compose command of the release phase would remove that
    front (an orphan of the new compose file) with nothing on the ports until the site
    is secured. Its Nginx joins the shared front first, then the own front hands over."""
    if d.r.target.site.shared and server_front.own_front_runs(d.r):
        secure_site(d.r, d.timeout)


def release_phase(d: Deploy) -> None:
    start_databases(d.r, d.timeout)
    run_release_phase(d.r)


def secure(d: Deploy) -> None:
    d.started = True  # the front's configuration may change: undo puts the previous one back
    secure_site(d.r, d.timeout)


def roll(d: Deploy) -> None:
    d.started = True
    d.r.say(f"moving traffic to {d.release}")
    roll_out(d.r, d.timeout)


def wait_healthy(d: Deploy) -> None:
    wait_until_served(d.r, d.timeout)


def schedule_backups(d: Deploy) -> None:
    start_backups(d.r)


def switch(d: Deploy) -> None:
    d.r.shell(plans.switch(d.r.target.directory, d.release), what=f"pointing current at {d.release}")


def write_ledger(d: Deploy, read_applied) -> None:
    """The release's ledger entry, wherever the releases live: what it is (commit, image)
    and what each database applied for it (READ_APPLIED(), kept in D)."""
    commit = d.here.probe(["git", "rev-parse", "HEAD"], anywhere=True).stdout.strip() or "unknown"
    if commit != "unknown" and d.here.probe(["git", "status", "--porcelain"], anywhere=True).stdout.strip():
        commit += "+changes"  # deployed from a tree with uncommitted changes
    image = d.r.probe(rollout_plans.image_id(d.image)).stdout.strip()
    entry = ledger.entry(d.release, commit, image, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         f"{getpass.getuser()}@{socket.gethostname()}", d.applied or read_applied())
    d.r.write(d.release_dir / ledger.LEDGER, entry, mode=0o644)


def record(d: Deploy) -> None:
    write_ledger(d, lambda: applied(d.r))


def applied(r: Runner) -> dict[str, list[str]]:
    """Per database, the migrations applied there now."""
    found = {}
    for db in r.stack.databases:
        result = r.compose(ledger.applied_migrations(db), hide=True, check=False)
        if result.failed and "does not exist" not in result.stderr:
            raise TaskError(f"reading the migrations of {db.name} failed: {last_line(result.stderr, 'no answer')}")
        found[db.name] = result.stdout.split() if result.ok else []
    return found


STEPS = (
    ("shipping the code", ship_code),
    ("preparing the release", prepare),
    ("building the image", build_image),
    ("moving onto the shared front", move_to_shared_front),
    ("running the release phase", release_phase),
    ("recording the release", record),
    ("securing the site", secure),
    ("moving traffic", roll),
    ("waiting for /healthz", wait_healthy),
    ("scheduling the backups", schedule_backups),
    ("switching current", switch),
)


def serve_release(r: Runner, timeout: float) -> None:
    """Move traffic back to the release of R's directory, whose image is still on the host:
    its static manifest first (its code reads its own), then its app container beside the
    running one. No migration runs: the database keeps what newer code applied."""
    if not r.exists(r.root / "config/nginx/front.conf"):
        raise TaskError(f"{r.target.release} was deployed by a version that replaced its containers in place; "
                        f"start it with `docker compose up -d` in {r.root}")
    run_release_phase(r, migrate=False, static=True)
    roll_out(r, timeout)


class HostRelease:
    """The host strategy of a release: the code shipped by rsync and built there (or built
    here and shipped), the release phase in a one-off container, a start-first roll behind
    Nginx; its undo moves traffic back the same way."""

    nodes_note = ""

    def __init__(self, r: Runner):
        self.r = self.home = r
        self.name = r.target.name
        self.steps = STEPS
        self.reserved: list[str] = []

    def ready(self) -> None:
        self.r.ensure_engine()  # before anything changes there
        self.r.target.ensure_own(self.r)
        if self.r.target.site.shared:
            server_front.preflight(self.r)  # a domain another project serves: refused now
        else:
            check_ports(self.r)  # the ports its own front would publish, held by another
        self.r.shell(plans.prepare_directories(self.r.target.directory), what="preparing the host's directory")
        claim_directory(self.r)
        if self.r.target.site.shared:
            # Under the server lock before any container is made; released if nothing is served.
            self.reserved = server_front.reserve(self.r)

    def abandon(self) -> None:
        """The deploy serves nothing new: the names it claimed anew are released."""
        if self.r.target.site.shared:
            server_front.abandon(self.r, self.reserved)

    def leftovers(self) -> None:
        directory = self.r.target.directory
        unfinished = self.r.shell(plans.unfinished_releases(directory), check=False).stdout.split()
        unfinished = [n for n in unfinished if plans.RELEASE_PATTERN.match(n)]
        if unfinished:
            self.r.say(f"removing what failed deploys left: {', '.join(unfinished)}")
            self.r.shell(plans.remove_trees([directory / "releases" / n for n in unfinished]), check=False)

    def undo(self, d: Deploy, step: str, where: str, code: int) -> None:
        host_undo(d, step, where, code)

    def settle(self, d: Deploy) -> None:
        """Behind the shared front, the domains this project no longer lists are released
        once the release serves."""
        if self.r.target.site.shared:
            server_front.release_dropped(self.r)

    def prune(self, keep: int, release: str, previous: str | None) -> None:
        prune_releases(self.r, keep, release, previous)

    def serving(self, d: Deploy) -> str:
        return f"{self.r.target.url} on the host"

    def check(self) -> None:
        """The directory is this project's; the lock and the ledger say the rest."""
        self.r.target.ensure_own(self.r)

    def applied(self) -> dict[str, list[str]]:
        return applied(self.r)

    def serve_again(self, target: str, timeout: int) -> None:
        back = self.r.in_release(target)
        server_front.check_release(back)  # made for the front the host has now
        if self.r.target.site.shared:
            server_front.reclaim(back)
        serve_release(back, timeout)
        wait_until_served(back, timeout)
        self.r.shell(plans.switch(self.r.target.directory, target), what=f"pointing current at {target}")


def run_steps(d: Deploy, place) -> None:
    """PLACE's steps in order; a failure or Ctrl-C in any runs PLACE's one undo, which raises
    the deploy's one-line error."""
    for name, step in place.steps:
        try:
            step(d)
        except BaseException as exc:
            where = f"deploy of {d.release} to {place.name} failed while {name} ({reason(exc)})"
            place.undo(d, name, where, 130 if isinstance(exc, KeyboardInterrupt) else 1)
            raise TaskError(f"{where}; nothing was switched", 130 if isinstance(exc, KeyboardInterrupt) else 1) \
                from None


def host_undo(d: Deploy, step: str, where: str, code: int) -> None:
    """The one way back from a failed or interrupted deploy on a host; raises its one-line error."""
    try:
        mismatch = server_front.front_mismatch(d.r.in_release(d.previous)) if d.started and d.previous else None
        if mismatch:
            # Made for the front the project has left: its compose file would take the ports
            # from the shared front (every project's), or have no front on them.
            raise TaskError(f"{where}; {d.previous} was {mismatch}: fix the failure and deploy again (see `inv ps "
                            f"--host {d.host.name}`; `current` still points at {d.previous})", code) from None
        if d.started and d.previous:
            d.r.say(f"{step} failed; moving traffic back to {d.previous}")
            try:
                back = d.r.in_release(d.previous)
                if d.r.target.site.shared:
                    server_front.reclaim(back)  # its names: refused if another project took one
                serve_release(back, d.timeout)
            except TaskError as back:
                if isinstance(back, HostLost):
                    raise
                raise TaskError(f"{where}; moving traffic back to {d.previous} failed too ({reason(back)}): "
                                f"see `inv ps --host {d.host.name}`; `current` still points at {d.previous}",
                                code) from None
            d.r.shell(plans.remove_trees([d.release_dir]), check=False)
            raise TaskError(f"{where}; rolled back to {d.previous}, which is serving again", code) from None
        d.r.shell(plans.remove_trees([d.release_dir]), check=False)
    except HostLost as lost:
        # Nothing more can be done there; `current` was not switched, and the next deploy
        # removes the unfinished release directory.
        serving = (f"the new release's containers may be running: check with `inv ps --host {d.host.name}`"
                   if d.started else f"`current` still points at {d.previous or 'nothing'}, untouched")
        raise TaskError(f"{where}; could not undo on {d.host.name} ({reason(lost)}): {serving}", code) from None


def deploy(r: Runner, ship_image: bool, keep: int, timeout: int) -> None:
    """Ship the code to the host as a new release, then run STEPS; keep KEEP releases."""
    run_deploy(HostRelease(r), keep, timeout, ship_image)


def run_deploy(place, keep: int, timeout: int, ship_image: bool = False) -> None:
    """A new release of this checkout's code to PLACE (a host's or a cluster's strategy),
    its steps run under the deploy lock with one undo; KEEP releases kept. Code that serves
    there already makes no new release (a rollback then goes to other code)."""
    started = time.monotonic()
    home = place.home
    digest = plans.code_digest(ROOT, home.stack.app)
    release = plans.release_name(archives.stamp(), digest)
    place.ready()
    served = False
    try:
        with deploy_lock(home):
            previous = current_release(home)
            if previous and previous.endswith(f"-{digest}"):  # a dry run reads no release
                home.report(f"{place.name} runs this code already ({previous}): nothing to deploy")
                return
            home.shell(plans.mark_served(home.target.directory), check=False)
            place.leftovers()
            home.say(f"deploying {release} to {place.name} ({place.nodes_note}previous: {previous or 'none'})")
            d = Deploy(home.in_release(release), home.here(), release, previous, plans.image(home.project, digest),
                       ship_image, timeout)
            run_steps(d, place)
            served = True
            place.settle(d)
            place.prune(keep, release, previous)
    finally:
        if not served:  # refused, failed and undone, interrupted, or nothing to deploy
            place.abandon()
    home.report(f"deployed {release} to {place.name} in {time.monotonic() - started:.1f}s ({place.serving(d)})")


def prune_releases(r: Runner, keep: int, release: str, previous: str | None) -> None:
    """The newest KEEP releases kept (RELEASE and PREVIOUS always), the others' directories
    removed, and their images too unless a kept release runs the same one."""
    directory = r.target.directory
    known = releases(r)
    old = known[:-keep] if keep > 0 else []
    old = [name for name in old if name not in (release, previous)]
    if old:
        r.shell(plans.remove_trees([directory / "releases" / n for n in old]), check=False)
        kept = {plans.digest_of(n) for n in known if n not in old} | {
            plans.digest_of(release), plans.digest_of(previous) if previous else ""}
        images = sorted({plans.image(r.project, plans.digest_of(n)) for n in old} -
                        {plans.image(r.project, k) for k in kept})
        if images:
            r.run(["docker", "image", "rm", *images], check=False, hide=True)


def ledgers(r: Runner) -> list[tuple[str, bool, dict | ledger.Invalid | None]]:
    """(release, served, its ledger, Invalid, or None) of every release on the host, oldest
    first."""
    text = r.shell(ledger.read_all(r.target.directory), check=False).stdout
    return [entry for entry in ledger.split_all(text) if plans.RELEASE_PATTERN.match(entry[0])]


def invalid_ledger(r: Runner, release: str, entry: ledger.Invalid) -> str:
    """RELEASE's ledger is not valid, and why: for a message."""
    return f"the ledger of {release} ({r.target.directory}/releases/{release}/{ledger.LEDGER}) is not valid: {entry.why}"


def list_releases(r: Runner) -> list[list[str]]:
    """Rows for `inv releases`: newest first, the live one marked."""
    r.target.ensure_own(r)
    current = current_release(r)
    rows = []
    for name, served, entry in reversed(ledgers(r)):
        notes = [] if served or name == current else ["never served"]
        if isinstance(entry, ledger.Invalid):
            # Nothing of it is shown: a value there may be anything.
            r.say(f"warning: {invalid_ledger(r, name, entry)}; its migrations are unknown")
            entry, notes = {}, ["ledger not valid", *notes]
        entry = entry or {}
        migrations = entry.get("migrations")
        rows.append(["*" if name == current else "", name, str(entry.get("commit", "-"))[:12],
                     str(entry.get("deployed_at", "-")), str(entry.get("deployed_by", "-")),
                     str(entry.get("image", "-")).removeprefix("sha256:")[:12],
                     ", ".join(f"{db} {len(names)}" for db, names in migrations.items()) if migrations else "-",
                     ", ".join(notes)])
    return rows


def rollback(r: Runner, timeout: int, to: str | None = None, force: bool = False) -> None:
    """Move traffic to the release before the current one, or to TO."""
    run_rollback(HostRelease(r), timeout, to, force)


def run_rollback(place, timeout: int, to: str | None = None, force: bool = False) -> None:
    """PLACE back on the release before the current one, or on TO, no migration run;
    refused when a database has applied migrations that release's code does not know,
    unless FORCE."""
    place.check()
    with deploy_lock(place.home):
        current, target, entry = rollback_target(place.home, to)
        check_migrations(place.home, target, entry, force, now=place.applied)
        place.serve_again(target, timeout)
    place.home.report(f"rolled {place.name} back from {current} to {target}")


def rollback_target(r: Runner, to: str | None) -> tuple[str | None, str, dict | ledger.Invalid | None]:
    """(current, the release to go back to, its ledger): TO, or the one served before the
    current one."""
    current = current_release(r)
    known = {name: entry for name, served, entry in ledgers(r) if served or name == current}
    order = sorted(known)
    if to is None:
        if current not in known or order.index(current) == 0:
            raise TaskError(f"no release before {current or 'the current one'} on {r.target.name} to roll back to")
        target = order[order.index(current) - 1]
    elif not plans.RELEASE_PATTERN.match(to) or to not in known:
        raise TaskError(f"no release {to!r} that served on {r.target.name}: see `inv releases{r.target.host_flag}`")
    elif to == current:
        raise TaskError(f"{to} is the live release on {r.target.name} already")
    else:
        target = to
    return current, target, known[target]


def check_migrations(r: Runner, target: str, entry: dict | ledger.Invalid | None, force: bool,
                     now=None) -> None:
    """Refuse (unless FORCE) to go back to code that lacks migrations a database has applied
    (read by NOW(), from R's databases unless given). A ledger that is not valid says nothing: its
    release's migrations are unknown, as without one (refused unless FORCE, which is the
    same override as for migrations the code lacks; a rollback in an emergency is not
    blocked by a damaged file, and nothing in that file is believed)."""
    if isinstance(entry, ledger.Invalid):
        if not force:
            raise TaskError(f"{invalid_ledger(r, target, entry)}; its migrations are unknown: add --force to roll "
                            "back to it anyway")
        r.say(f"{invalid_ledger(r, target, entry)}; its migrations are unknown (--force)")
        return
    if not entry:
        if not force:
            raise TaskError(f"{target} has no ledger (deployed by an earlier version): its migrations are unknown; "
                            "add --force to roll back to it anyway")
        r.say(f"{target} has no ledger: its migrations are unknown (--force)")
        return
    extra = ledger.ahead(applied(r) if now is None else now(), entry["migrations"])
    if not extra:
        r.say(f"every migration applied is known to {target}")
        return
    listed = "; ".join(f"{db}: {', '.join(names)}" for db, names in extra.items())
    if not force:
        raise TaskError(f"the databases have migrations that {target} does not know ({listed}); its code may fail "
                        "on them: add --force to roll back anyway (they stay applied)")
    r.say(f"rolling back with --force: these stay applied, unknown to {target}'s code: {listed}")


def _running_here(pid: int) -> bool:
    if pid <= 0:
        return False  # 0 and below name process groups, never a deploy
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive all the same
    return True


def unlock(r: Runner, force: bool = False) -> None:
    """Release the deploy lock of a deploy that is gone; refused while it still runs (and
    on a directory of another project: the lock is its deploys')."""
    r.target.ensure_own(r)
    result = r.shell(plans.lock_holder(r.target.directory), check=False)
    holder = result.stdout.strip() if result.ok else ""
    owner = plans.lock_owner(holder)
    here = socket.gethostname()
    alive = bool(owner and owner[0] == here and _running_here(owner[1]))
    refusal = plans.unlock_refusal(r.target.name, holder, here, alive, force)
    if refusal:
        raise TaskError(refusal)
    r.shell(plans.release_lock(r.target.directory), what="releasing the lock")
    r.report(f"released the deploy lock on {r.target.name}" + (f" (held by {holder})" if holder else " (it was not held)"))
