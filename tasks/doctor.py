"""`inv doctor`: check what the stack needs, one line per check with a fix when it fails."""
from __future__ import annotations

from .cli import stack_task
from .execution.runner import compose_problem, engine_problem
from .plans import compose
from .procedures.site import certificate, describe
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


CHECKS = {"engine": check_engine, "certificate": check_certificate, "compose": check_compose, "builder": check_builder, "port": check_port,
          "env_files": check_env_files, "rendered": check_rendered}
NEEDS_ENGINE = {"port", "builder", "certificate"}


@stack_task(help={"dry": "Print the checks' commands instead of running them."})
def doctor(r):
    """Check the engine, Compose, buildx, env and secret files, generated files, port, certificate.

    Here: everything but the certificate. On a host (--host): the engine, Compose, buildx
    and the certificate the front serves (names, issuer, days left; under 14 days warns)."""
    results, engine_ok = [], True
    for name in r.target.doctor_checks:  # the target says which checks make sense there
        if name in NEEDS_ENGINE and not engine_ok:
            continue
        ok, message, hint = CHECKS[name](r)
        engine_ok = engine_ok and (ok or name not in ("engine", "compose"))
        results.append((ok, message, hint))
    for ok, message, hint in results:
        r.report(f"{'ok  ' if ok else 'FAIL'} {message}")
        if hint and not ok:
            r.report(f"     fix: {hint}")
    failed = [message for ok, message, _ in results if not ok]
    r.require(not failed, f"{len(failed)} check(s) failed")
    r.report("all checks passed")
