"""`inv doctor`: check what the stack needs, one line per check with a fix when it fails."""
from __future__ import annotations

import json
import re
import shlex

from .cli import stack_task
from .errors import TaskError, last_line
from .execution.files import unfinished_in
from .execution.runner import compose_problem, engine_problem
from .plans import archives, compose
from .plans import release as release_plans
from .plans import rollout as rollout_plans
from .plans import schedules as schedule_plans
from .procedures import cluster_release, cluster_tasks, places, rollout, server_front
from .procedures.backups import _age, _size
from .procedures.dumps import loads_left
from .procedures.site import certificate, describe
from .procedures.volume_copy import existing_volumes, image_here
from .source import render
from .source.stack import STACK_FILE


def check_engine(r):
    result = r.run(compose.engine_version(), check=False, hide=True)
    problem = engine_problem(result)
    return (False, *problem) if problem else (True, f"Docker engine {result.stdout.strip()} is reachable", None)


def check_compose(r):
    result = r.run(compose.compose_version(), check=False, hide=True)
    problem = compose_problem(result)
    return (False, *problem) if problem else (True, f"Docker Compose v2 ({result.stdout.strip()})", None)


def check_builder(r):
    """Compose builds through buildx (Bake); without it every build warns and falls back."""
    result = r.run(compose.buildx_version(), check=False, hide=True)
    if result.ok:
        return True, f"buildx {result.stdout.split()[1] if len(result.stdout.split()) > 1 else ''} builds the images", None
    return (False, "buildx is not installed: every build warns and falls back to Compose's own builder",
            "install the buildx plugin (docker-buildx-plugin from Docker's repository, docker-buildx on Debian 13)")


OLDEST_ENGINE = (20, 10)  # the oldest Docker Engine the stack is tested on (CI runs 20.10 and 28)
STORAGE_UNSUPPORTED = {"devicemapper": "removed from Docker Engine 25", "aufs": "removed from Docker Engine 24",
                       "overlay": "removed from Docker Engine 24"}
DISK_FAIL, DISK_WARN = 2 * 1024**3, 10 * 1024**3  # the base images and one app image take about 2 GiB


def engine_report(info: dict, df: str, on: str = "") -> list[tuple[bool | None, str, str | None]]:
    """What `docker info` (INFO) and df of its data root (DF) say: one line of facts, then a
    FAIL (False) for what the stack cannot run on and a warning (None) for what it runs on
    badly."""
    version = info.get("ServerVersion", "?")
    driver, status = info.get("Driver", "?"), dict(map(tuple, info.get("DriverStatus") or []))
    containerd = status.get("driver-type") == "io.containerd.snapshotter.v1"
    store = (f"containerd image store ({driver} snapshotter)" if containerd
             else f"{driver} storage driver (classic image store)")
    root = info.get("DockerRootDir", "?")
    lines = df.strip().splitlines()
    fields = lines[-1].split() if lines else []
    free = int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None
    found = [(True, f"Docker Engine {version}{on}: {store}, cgroup v{info.get('CgroupVersion', '?')} "
                    f"({info.get('CgroupDriver', '?')} driver), log driver {info.get('LoggingDriver', '?')}, "
                    + (f"{_size(free)} free under {root}" if free is not None else f"free space under {root} unknown"),
              None)]
    number = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if info.get("OSType", "linux") != "linux":
        found.append((False, f"the engine{on} runs {info['OSType']} containers: the stack's images are Linux ones",
                      "switch the engine to Linux containers"))
    if len(number) == 2 and number < OLDEST_ENGINE:
        found.append((False, f"Docker Engine {version}{on} is older than 20.10, the oldest the stack is tested on",
                      "upgrade Docker Engine (28 or later)"))
    elif number == OLDEST_ENGINE:
        found.append((None, f"Docker Engine {version}{on} is past its end of life (2023); the stack is tested on it "
                            "and on 28", "upgrade Docker Engine (28 or later)"))
    if driver in STORAGE_UNSUPPORTED:
        found.append((False, f"storage driver {driver}{on} is {STORAGE_UNSUPPORTED[driver]}",
                      "move the engine to overlay2 or the containerd image store"))
    elif driver == "vfs":
        found.append((None, f"storage driver vfs{on} copies every layer in full: builds and disk use grow "
                            "many times", "move the engine to overlay2 or the containerd image store"))
    if free is not None and free < DISK_WARN:
        found.append((None if free >= DISK_FAIL else False,
                      f"only {_size(free)} free under {root}{on}: a build or a deploy needs about 2 GiB",
                      "`docker system prune` removes unused images and build cache; or grow the disk"))
    if info.get("LoggingDriver") == "none":
        found.append((None, f"the engine's default log driver{on} is none: `inv logs` shows nothing of a "
                            "container that keeps it", "set log-driver in the engine's daemon.json"))
    return found


def check_engine_report(r):
    """The engine's version, image store, cgroup version, log driver and the free space of
    its data root, with what the stack does not run on (or runs on badly)."""
    result = r.probe(compose.engine_info(), anywhere=True)
    try:
        info = json.loads(result.stdout) if result.ok else None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        return False, f"could not read the engine's facts{r.target.on} ({last_line(result.stderr, 'no answer')})", None
    space = r.probe(compose.free_space(info.get("DockerRootDir", "/")), anywhere=True)
    return engine_report(info, space.stdout if space.ok else "", r.target.on)


def check_env_files(r):
    """The app's settings file and every secret file exist, not empty, readable by their
    owner alone; no secret is left in an env file of an earlier version."""
    missing, loose = [], []
    for path in render.secret_files(r.stack):
        file = r.root / path
        if not file.is_file() or file.stat().st_size == 0:
            missing.append(str(path))
        elif file.stat().st_mode & 0o077:
            loose.append(str(path))
    legacy = [db.legacy_env_file for db in r.stack.databases if (r.root / db.legacy_env_file).exists()]
    if missing:
        return False, f"missing: {', '.join(missing)}", "`inv up` (or `inv build`) creates them with generated secrets"
    if loose:
        return False, f"readable by others: {', '.join(loose)}", f"chmod 600 {' '.join(loose)}"
    if legacy:
        return False, f"secrets still in env files of an earlier version: {', '.join(legacy)}", \
            "`inv up` moves them into config/secrets/"
    return True, "settings and secret files present, mode 0600", None


def check_rendered(r):
    stale = render.drift(r.stack, r.root)
    if not stale:
        return True, f"generated files match {STACK_FILE}", None
    return False, f"out of date: {', '.join(map(str, stale))}", "run `inv render`"


def check_port(r):
    port = r.target.http_port
    state = r.target.port_state(r)
    if state == "busy":
        return False, f"port {port} on 127.0.0.1 is in use by another program", \
            f"stop it, or change http_port in {STACK_FILE}"
    return True, (f"port {port} is served by this stack's Nginx" if state == "ours" else f"port {port} is free"), None


def check_certificate(r):
    """The certificate the front serves: names, issuer, days left; under 14 days is a warning."""
    site = r.target.site
    if not site.https:
        return True, f"no certificate served here (tls = \"{site.tls}\")", None
    fine, line = describe(certificate(r))
    fix = (f"`inv certs.renew{r.target.host_flag}` (certbot renews by itself within 30 days of the end)"
           if site.tls == "acme" else f"install a new one (certificate in {STACK_FILE}) and deploy")
    return fine, line, fix


def check_shared_front(r):
    """Behind the server's shared front: its state, the projects and names it routes, this
    project's names and certificate there (nothing for a project with its own front)."""
    return server_front.report(r) if r.target.site.shared else []


def check_interrupted_restores(r):
    """A volume holding what a killed restore leaves (archives.SETTLE): one line each."""
    volumes = existing_volumes(r)
    if not volumes:
        return True, "no volume yet: no interrupted restore", None
    image = image_here(r, volumes)
    if image is None:
        return False, "could not look into the volumes for interrupted restores: none of their images is here", \
            "`inv build`, then `inv doctor` again"
    result = r.probe(archives.restore_leftovers({info.short: info.name for info in volumes}, image, r.project))
    if result.failed:
        return False, f"could not look into the volumes for interrupted restores ({result.stderr.strip()})", None
    found = []
    for short, names in sorted(archives.leftovers_by_volume(result.stdout).items()):
        outcome = ("it was verified: that deletes its safety copy" if archives.DISCARD in names else
                   "it was never verified: that puts back the content from before it")
        found.append((False, f"{r.project}_{short} holds {', '.join(names)}, left by an interrupted restore",
                      f"`inv volume.archive --volume {short}{r.target.host_flag}` settles it first ({outcome})"))
    return found or (True, "no volume holds what an interrupted restore leaves", None)


def check_interrupted_loads(r):
    """A database server holding the copies a killed load leaves (NAME__load_*, NAME__old_*)."""
    running = r.running_services()
    found, checked = [], []
    for db in r.stack.databases:
        if db.name not in running:
            continue
        names = loads_left(r, db, archives.in_compose_service(r.compose_argv([]), db.name))
        if names is None:
            found.append((False, f"could not list the databases of {db.name}'s server",
                          f"`inv logs {db.name}{r.target.host_flag}`"))
            continue
        checked.append(db.name)
        for leftover, what, _ in archives.settle_loads(db.name, names):
            found.append((False, f"{leftover} in {db.name}'s server, left by an interrupted load",
                          f"`inv db.dump {db.name}{r.target.host_flag}` settles it first ({what})"))
    return found or (True, f"no interrupted load in {', '.join(checked) or 'a running database'}", None)


def check_unfinished_files(r):
    """Temporary files whose writer is gone: a backup, a dump, a secret or a generated file
    a killed task was writing."""
    places = {r.backups: "the next task that writes a backup or a dump deletes it"}
    for path in (STACK_FILE, *render.rendered(r.stack), *render.secret_files(r.stack)):
        places.setdefault((r.root / path).parent, "`inv db.add` or `inv db.remove` deletes it, or delete it yourself")
    found = [(False, f"{leftover.relative_to(r.root)}: a file a killed task was writing", fix)
             for folder, fix in places.items() for leftover in unfinished_in(folder)]
    return found or (True, "no file left unfinished by a killed task", None)


def check_unfinished_backups(r):
    """On a host: the files its backups folder holds half-written (`*.tmp`: a backup, or its
    transfer, that was interrupted), with their size and age. Whether their writer still
    runs cannot be told from here: the fix waits for none to run."""
    result = r.probe(archives.unfinished_transfers(str(r.backups)), anywhere=True)
    try:
        found = archives.read_unfinished(result.stdout) if result.ok else None
    except ValueError:
        found = None
    if found is None:
        return False, f"could not look into {r.backups}{r.target.on} ({last_line(result.stderr, 'no answer')})", None
    return [(False, f"{r.backups / name}{r.target.on} ({_size(size)}, last written {_age(age)} ago): "
                    "left by an interrupted backup or transfer",
             f"once no backup, dump or restore runs there, remove it there: `rm -f -- {shlex.quote(str(r.backups / name))}`")
            for name, size, age in found] or (True, f"no unfinished file in {r.backups}", None)


def check_services(r):
    """Each [[services]] container running and healthy, where the stack runs (the app's
    container up): a broker or cache down is not seen by a site whose library swallows
    connection errors."""
    names = [service.name for service in r.stack.services]
    if not names:
        return True, f"no [[services]] in {STACK_FILE}", None
    found = [line.split() for line in r.probe(rollout_plans.service_containers(r.project)).stdout.splitlines()]
    ids = {fields[1]: fields[0] for fields in found if len(fields) == 2}
    if compose.APP not in ids:
        return True, f"the stack is not running{r.target.on}: services not checked", None
    present = [ids[name] for name in names if name in ids]
    states = {service: (state, health) for service, state, health in rollout.service_states(r, present)}
    failed = []
    for name in names:
        state = states.get(name)
        if state is None:
            failed.append((False, f"service {name} has no container{r.target.on}", f"`inv up{r.target.host_flag}`"))
        elif state != ("running", "healthy"):
            failed.append((False, f"service {name} is {state[0]} ({state[1]}){r.target.on}",
                           f"`inv logs -s {name}{r.target.host_flag}` says why"))
    return failed or (True, f"services running and healthy: {', '.join(names)}", None)


def check_processes(r):
    """Each process ([[processes]], the scheduler) runs as many containers as it should, each
    running and healthy: a worker's health test is the age of the file its event heartbeats
    touch, so healthy means its main loop runs, connected to the broker."""
    wanted = {p.name: p.replicas for p in r.stack.all_processes}
    if not wanted:
        return True, f"no [[processes]] or [[schedules]] in {STACK_FILE}", None
    found = [line.split() for line in r.probe(rollout_plans.service_containers(r.project)).stdout.splitlines()]
    found = [fields for fields in found if len(fields) == 2]
    if compose.APP not in {service for _, service in found}:
        return True, f"the stack is not running{r.target.on}: processes not checked", None
    ids = [container for container, service in found if service in wanted]
    states = {name: [] for name in wanted}
    for service, state, health in rollout.service_states(r, ids):
        if service in states:
            states[service].append((state, health))
    failed, shown = [], []
    for name, count in wanted.items():
        good = sum(state in (("running", "healthy"), ("running", "none")) for state in states[name])
        shown.append(f"{name} {good}/{count}")
        if good != count or len(states[name]) != count:
            others = ", ".join(f"{s} ({h})" for s, h in states[name] if (s, h) not in (("running", "healthy"),
                                                                                        ("running", "none")))
            failed.append((False, f"process {name}: {good} of {count} running and healthy{r.target.on}"
                                  + (f"; {others}" if others else ""),
                           f"`inv logs -s {name}{r.target.host_flag}` says why; `inv up{r.target.host_flag}` starts "
                           "what is missing"))
    return failed or (True, f"processes running and healthy: {', '.join(shown)}", None)


def check_swarm(s):
    """On a cluster: every node a member of the manager's swarm."""
    try:
        cluster_release.check_swarm(s)
    except TaskError as exc:
        return False, str(exc), None
    return True, f"{len(s.cluster.nodes)} node(s) in the swarm of cluster {s.cluster.name}", None


def check_cluster_processes(s):
    """On a cluster: the app and each process ([[processes]], the scheduler) run as many
    tasks as they should, each running and healthy."""
    wanted = {compose.APP: s.cluster.replicas, **{p.name: p.replicas for p in s.stack.all_processes}}
    found = cluster_tasks.running_tasks(s, wanted)
    failed = [(False, f"process {name}: {found[name][0]} of {count} running and healthy{s.target.on}"
                      + (f" ({found[name][1] - found[name][0]} starting or failing)" if found[name][1] > found[name][0]
                         else ""),
               f"`inv logs -s {name}{s.target.host_flag}` says why; `inv deploy{s.target.host_flag}` starts what "
               "is missing") for name, count in wanted.items() if found[name] != (count, count)]
    shown = ", ".join(f"{name} {found[name][0]}/{count}" for name, count in wanted.items())
    return failed or (True, f"processes running and healthy: {shown}", None)


def check_schedules(r):
    """The scheduler's own word ([[schedules]]): running, and no schedule failing or overdue."""
    if not r.stack.schedules:
        return True, f"no [[schedules]] in {STACK_FILE}", None
    fix = f"`inv schedule.status{r.target.host_flag}` and `inv logs -s scheduler{r.target.host_flag}` say more"
    try:
        document = places.of(r).scheduler_status()
    except TaskError as exc:
        return False, str(exc), fix
    if document is None:  # a dry run
        return True, "the schedules are not read in a dry run", None
    fine, rows, problems = schedule_plans.report(r.stack.schedules, document)
    if not fine:
        return [(False, f"schedule {line}{r.target.on}", fix) for line in problems]
    return True, "schedules: " + ", ".join(f"{row[0]} {row[-1]}" for row in rows[1:]), None


def check_app_python(r):
    """[app] python, the app image's Python and the app's own virtualenv's (each that is
    here) agree: a lock made for one Python installs another set on the next (or none)."""
    wanted = r.stack.app.python
    image = release_plans.image(r.project, "latest")  # what `inv build` and `inv up` make here
    found = {}
    if r.probe(["docker", "image", "inspect", image]).ok:
        found[f"the image {image}"] = r.probe(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python",
                                               image, "-c", PYTHON_VERSION]).stdout.strip()
    venv = r.root / ".venv-app/bin/python"
    if venv.exists():
        found[".venv-app"] = r.probe([str(venv), "-c", PYTHON_VERSION]).stdout.strip()
    differ = [f"{where} has Python {version or '(none)'}" for where, version in found.items() if version != wanted]
    if differ:
        return (False, f"[app] python = \"{wanted}\" but {' and '.join(differ)}",
                "`inv build` makes the image again with [app] python, `inv venv` the virtualenv")
    return True, f"Python {wanted} ([app] python) in {' and '.join(found) or 'what is built so far (nothing yet)'}", None


CHECKS = {"shared_front": check_shared_front, "engine": check_engine, "engine_report": check_engine_report, "certificate": check_certificate, "compose": check_compose, "builder": check_builder, "port": check_port,
          "env_files": check_env_files, "rendered": check_rendered,
          "interrupted_restores": check_interrupted_restores, "interrupted_loads": check_interrupted_loads,
          "unfinished_files": check_unfinished_files, "unfinished_backups": check_unfinished_backups,
          "app_python": check_app_python, "services": check_services,
          "processes": check_processes, "swarm": check_swarm, "cluster_processes": check_cluster_processes,
          "schedules": check_schedules}
NEEDS_ENGINE = {"shared_front", "engine_report", "port", "builder", "certificate", "interrupted_restores", "interrupted_loads", "app_python",
                "services", "processes"}
PYTHON_VERSION = "import sys; print('%d.%d' % sys.version_info[:2])"


@stack_task(hosts="many-or-cluster")
def doctor(r):
    """Check what the stack needs, one line per check.

    The engine (version, image store, cgroup version, log driver, free space under its data
    root), Compose, buildx, env and secret files, generated files, port, certificate and
    leftovers; a failing check says how to fix it, a warning (what the stack runs on badly)
    too, without failing.

    Here: everything but the certificate, that [app] python is the image's and the app
    virtualenv's Python, and what a killed task left (a restore's safety
    copy in a volume, a load's copies of a database, an unfinished file). On a host (--host): the engine, Compose, buildx,
    the certificate the front serves (names, issuer, days left; under 14 days warns), the
    server's shared front when the host has front = "shared" (running, its image and folder,
    the projects and names it routes, this project's names and certificate there), and what
    a killed task left in the volumes and databases there, and in its backups folder (each
    unfinished file with its size and age). On a cluster (--cluster): every node in the
    swarm, the app and each process running and healthy as many times as they should, and
    the scheduler's word on the schedules."""
    results, engine_ok = [], True
    for name in r.target.doctor_checks:  # the target says which checks make sense there
        if name in NEEDS_ENGINE and not engine_ok:
            continue
        outcome = CHECKS[name](r)  # one line, or one for each thing found
        for ok, message, hint in outcome if isinstance(outcome, list) else [outcome]:
            engine_ok = engine_ok and (ok or name not in ("engine", "compose"))
            results.append((ok, message, hint))
    for ok, message, hint in results:  # ok None: a warning, which does not fail the doctor
        r.report(f"{'ok  ' if ok else 'warn' if ok is None else 'FAIL'} {message}")
        if hint and not ok:
            r.report(f"     fix: {hint}")
    failed = [message for ok, message, _ in results if ok is False]
    r.require(not failed, f"{len(failed)} check(s) failed")
    r.report("all checks passed")
