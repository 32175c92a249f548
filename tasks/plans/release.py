"""Plans for releases on a host, as data: what ships, how a release is named, the rsync and
ssh command lines, and the host-side shell of a deploy (lock, secrets, switch, listing).

Layout on the host, under its `directory`:
  releases/STAMP-DIGEST/   one directory per release (the code, a .env, links to shared/);
                           SERVED marks one that became current (rollback goes to those only)
  current -> releases/...  the live release; switched only once a new one serves
  shared/config/           the host's own secrets, generated there on the first deploy
  shared/backups/          backups taken with --host
  .deploy-lock/            held during a deploy (who, since when)
  project                  the compose project whose releases these are (OWNER), written
                           by its first deploy: another project is refused there
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
from pathlib import Path, PurePosixPath

from ..source.stack import SECRETS_DIR, App, Site
from ..source.values import PROJECT
from . import locks
from .locks import HELD
from .shell import quote as _q

# What a host needs to build and run the stack besides the project ([app]); nothing else
# leaves this machine.
SHIP = ["Dockerfile", ".dockerignore", "docker-compose.yml", "config/"]
NEVER = ["/config/django.env", "/config/db/*.env", "/config/secrets/", "__pycache__/", "*.pyc"]
SECRET_TOKEN = "@@GENERATED_SECRET@@"
PASS_THROUGH = ("PYTHON_IMAGE", "POSTGRES_IMAGE", "NGINX_IMAGE", "CERTBOT_IMAGE", "REDIS_IMAGE", "VALKEY_IMAGE",
                "MEMCACHED_IMAGE", "RABBITMQ_IMAGE", "NGINX126_IMAGE", "POSTGRES16_IMAGE", "POSTGRES17_IMAGE",
                "POSTGRES18_IMAGE")


def ship(app: App) -> list[str]:
    """What ships: the stack's files, the project's folder, and its requirements when they
    live outside it (patterns, as the Dockerfile's builder copies them)."""
    return [*SHIP, f"{app.path}/", *(app.build_inputs if app.requirements_outside else ())]


def never(app: App) -> list[str]:
    """What never ships: secrets, bytecode, and the project's local state."""
    return [*NEVER, *(f"/{path}" for path in app.local_state)]


def shipped_files(root: Path, app: App) -> list[Path]:
    """Every file that ships, in a stable order (the same filter rsync applies)."""
    files, rules = [], never(app)
    for entry in ship(app):
        path = root / entry
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if entry.endswith("/") else \
            sorted(p for p in root.glob(entry) if p.is_file())
        for file in candidates:
            rel = "/" + file.relative_to(root).as_posix()
            if any(_matches(rel, rule) for rule in rules):
                continue
            files.append(file)
    return files


def _matches(rel: str, rule: str) -> bool:
    if rule.endswith("/"):
        name = rule.strip("/")
        return f"/{name}/" in rel + "/" if not rule.startswith("/") else rel.startswith(rule)
    if rule.startswith("/"):
        return fnmatch.fnmatch(rel, rule)
    return fnmatch.fnmatch(rel.rsplit("/", 1)[-1], rule)


def code_digest(root: Path, app: App) -> str:
    """A short hash of what ships: the image tag, so that unchanged code means the same
    image (nothing rebuilt, shipped or recreated)."""
    digest = hashlib.sha256()
    for file in shipped_files(root, app):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def release_name(stamp: str, digest: str) -> str:
    return f"{stamp}-{digest}"


def digest_of(release: str) -> str:
    """The code digest a release name ends with (release_name)."""
    return release.rsplit("-", 1)[-1]


def image(project: str, digest: str) -> str:
    """The app's image of code DIGEST: one per code, whatever the release or the place."""
    return f"{project}-djangoapp:{digest}"


def release_image(project: str, release: str) -> str:
    return image(project, digest_of(release))


RELEASE_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{12}$")


# A host that answers nothing for DEAD_AFTER seconds is lost (a cut link, a dead server): SSH
# asks every ALIVE_INTERVAL seconds. Long enough for a busy host, short enough to say so.
ALIVE_INTERVAL = 5
DEAD_AFTER = 20


def ssh_options(host) -> list[str]:
    """OpenSSH options equivalent to the Fabric connection: strict host key checking against
    the host's known_hosts file, the configured key only, no prompts, and a host that stops
    answering given up after DEAD_AFTER seconds instead of hanging a deploy."""
    options = ["-p", str(host.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"UserKnownHostsFile={os.path.expanduser(host.known_hosts)}", "-o", "ConnectTimeout=10",
               "-o", f"ServerAliveInterval={ALIVE_INTERVAL}", "-o", f"ServerAliveCountMax={DEAD_AFTER // ALIVE_INTERVAL}"]
    if host.identity_file:
        options += ["-i", os.path.expanduser(host.identity_file), "-o", "IdentitiesOnly=yes"]
    return options


def destination(host) -> str:
    return f"{host.user}@{host.address}" if host.user else host.address


def rsync(root: Path, host, target: str, link_dest: str | None, app: App) -> list[str]:
    """Copy what ships into TARGET on HOST; files unchanged since LINK_DEST (the previous
    release) are hard-linked there instead of sent."""
    argv = ["rsync", "--archive", "--delete", "--stats", "--human-readable",
            "--rsh", shlex.join(["ssh", *ssh_options(host)])]
    if link_dest:
        argv.append(f"--link-dest={link_dest}")
    argv += [f"--exclude={rule}" for rule in never(app)]
    for entry in ship(app):
        # A file in a folder: the folders above it first, or the last --exclude=* skips them.
        parents = entry.rstrip("/").split("/")[:-1]
        argv += [f"--include=/{'/'.join(parents[:n])}/" for n in range(1, len(parents) + 1)]
        argv.append(f"--include=/{entry}***" if entry.endswith("/") else f"--include=/{entry}")
    argv += ["--exclude=*", f"{root}/", f"{destination(host)}:{target}/"]
    return argv


def rsync_error(stderr: str, status: int) -> str:
    """What an rsync that failed says about why: its first complaint (the disk full, the
    connection lost) rather than its closing summary."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("rsync: ", "ssh: ")) or "Timeout" in line or "closed by remote host" in line:
            return line
    return lines[-1] if lines else f"exit status {status}"


def free_kib(path) -> str:
    """Prints the KiB free on PATH's filesystem."""
    return f"df -Pk {_q(path)} | awk 'NR == 2 {{ print $4 }}'"


# Below this, a file I/O failure of rsync is taken for a full disk (rsync does not always
# get to say so: its receiving end may die without a word).
NEARLY_FULL_KIB = 1024


def bytes_sent(rsync_stats: str) -> int:
    match = re.search(r"Total bytes sent: ([\d.,]+)([KMGT]?)", rsync_stats)
    if not match:
        return 0
    number = float(match.group(1).replace(",", ""))
    return int(number * {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}[match.group(2)])


def generate_secret_file(path: str, template: str) -> tuple[str, str]:
    """(script, stdin) that create PATH on the host from TEMPLATE, each occurrence of the
    token replaced by a fresh random value made there; an existing file is never replaced.
    The secret exists only on the host, in a shell variable and then the 0600 file."""
    q = shlex.quote(path)
    script = (
        f"if test -e {q}; then cat > /dev/null; exit 0; fi; umask 077; t={q}.$$.tmp; "
        "SECRET=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 50); "
        f"SECRET=\"$SECRET\" awk '{{ gsub(\"{SECRET_TOKEN}\", ENVIRON[\"SECRET\"]); print }}' > \"$t\" "
        f"&& ln \"$t\" {q} 2>/dev/null; rm -f \"$t\"; test -s {q}"
    )
    return script, template


def release_env(project: str, http_port: int, image: str, config_dir, environ) -> str:
    """The release's .env: compose reads it from the release directory, so every command
    there, by a task or by hand, uses the right project, port, images and mounted config."""
    lines = ["# Written by `inv deploy`; non-secret settings of this release.",
             f"COMPOSE_PROJECT_NAME={project}", f"HTTP_PORT={http_port}", f"APP_IMAGE={image}",
             f"STACK_CONFIG_DIR={config_dir}"]
    lines += [f"{name}={environ[name]}" for name in PASS_THROUGH if environ.get(name)]
    return "\n".join(lines) + "\n"


# The host-side shell of a deploy -------------------------------------------------------------

LOCK = ".deploy-lock"
SERVED = ".served"
LOCK_HELD = HELD  # take_lock's exit status when another deploy holds the lock (as any lock's)
TEMPLATE_END = "HELLO_ENV_TEMPLATE_END"


def prepare_directories(directory) -> str:
    return f"mkdir -p -m 755 {_q(f'{directory}/releases')} {_q(f'{directory}/shared')}"


# The directory's project ------------------------------------------------------------------

OWNER = "project"


def directory_owner(directory) -> str:
    """Prints whose releases DIRECTORY holds: `file NAME` from its OWNER file; for a
    directory deployed by a version before that file, `releases NAME`, the compose project
    its live release's .env names (the newest release's when none is live): the project its
    containers run as; nothing for a directory of no project yet."""
    d = _q(directory)
    return (f"if test -f {d}/{OWNER}; then printf 'file %s\\n' \"$(head -n 1 {d}/{OWNER})\"; exit 0; fi; "
            f"for r in {d}/current $(ls -1dr {d}/releases/*/ 2>/dev/null); do "
            f"p=$(sed -n 's/^COMPOSE_PROJECT_NAME=//p' \"$r/.env\" 2>/dev/null | head -n 1); "
            "if test -n \"$p\"; then printf 'releases %s\\n' \"$p\"; exit 0; fi; done; true")


def claim_directory(directory, project: str) -> str:
    """Names PROJECT in DIRECTORY's OWNER file unless one is named there already (a
    temporary file linked into place: of two first deploys at once, one wins), then prints
    the name the file holds (as `directory_owner`)."""
    f = _q(f"{directory}/{OWNER}")
    return (f"mkdir -p -m 755 {_q(directory)} && if ! test -e {f}; then t={f}.$$.tmp; "
            f"printf '%s\\n' {shlex.quote(project)} > \"$t\" && chmod 644 \"$t\" && ln \"$t\" {f} 2>/dev/null; "
            f"rm -f \"$t\"; fi; n=$(head -n 1 {f}) && printf 'file %s\\n' \"$n\"")


def _named(name: str) -> str:
    """A project name read on a host, for a message: as it is when it is one, else quoted."""
    return name if PROJECT.fullmatch(name) else repr(name[:40])


def owner_refusal(host: str, directory, project: str, printed: str) -> str | None:
    """Why PROJECT must not act on DIRECTORY of HOST, from what `directory_owner` or
    `claim_directory` PRINTED (None: it is PROJECT's, or no project's yet)."""
    how, _, name = (printed.splitlines() or [""])[0].partition(" ")
    if how not in ("file", "releases") or name == project:
        return None
    held = (f"belongs to project {_named(name)} ({directory}/{OWNER})" if how == "file" else
            f"holds the releases of project {_named(name)}")
    return (f"{directory} on {host} {held}, not {project}: give [hosts.{host}] a directory of its own "
            "(each project deploys into its own)")


# The ports a host's stack publishes -----------------------------------------------------------

def published(site: Site, http_port: int) -> list[tuple[str, int, str]]:
    """(address, port, the host entry's key for it) of each port the front publishes on the
    host (docker-compose.yml.j2's `front`): none behind the server's shared front."""
    if site.shared:
        return []
    ports = [(site.bind, http_port, "http_port")]
    return ports + [(site.bind, site.https_port, "https_port")] if site.https else ports


def port_holders(ports) -> str:
    """Prints, for each of PORTS, the running containers that publish it (`PORT container
    NAME PROJECT PUBLISHED...`, PROJECT `-` outside Compose) and the sockets listening on it
    (`PORT socket ADDRESS:PORT`, when `ss` is there: a program outside Docker)."""
    lines = []
    for port in ports:
        template = (f"{port} container {{{{.Names}}}} "
                    "{{with .Label \"com.docker.compose.project\"}}{{.}}{{else}}-{{end}} {{.Ports}}")
        lines.append(f"docker ps --filter publish={port} --format {shlex.quote(template)}")
        lines.append(f"ss -Hltn {shlex.quote(f'sport = :{port}')} 2>/dev/null | awk '{{ print \"{port} socket \" $4 }}'")
    return "; ".join(lines) + "; true"


WILDCARDS = {"", "*", "0.0.0.0", "::", "[::]"}


def _overlap(a: str, b: str) -> bool:
    """Two listening addresses that cannot both hold one port."""
    return a in WILDCARDS or b in WILDCARDS or a.strip("[]") == b.strip("[]")


def _published_at(ports_text: str, port: int) -> list[str]:
    """The host addresses at which a container's PORTS_TEXT (`docker ps`'s) publishes PORT."""
    return [address for address, number in re.findall(r"(\S*?):(\d+)->", ports_text) if int(number) == port]


def _holders(wanted, printed: str):
    """(port, key, [(container, project)], [socket]) of each of WANTED (`published`'s) from
    what `port_holders` PRINTED: the containers and programs that hold it where WANTED would."""
    rows = [line.split(" ", 2) for line in printed.splitlines() if line.count(" ") >= 2]
    for address, port, key in wanted:
        containers, sockets = [], []
        for number, kind, rest in rows:
            if number != str(port):
                continue
            if kind == "container":
                name, owner, *ports_text = rest.split(" ", 2)
                if any(_overlap(address, held) for held in _published_at(ports_text[0] if ports_text else "", port)):
                    containers.append((name, owner))
            elif kind == "socket" and _overlap(address, rest.rsplit(":", 1)[0]):
                sockets.append(rest)
        yield port, key, containers, sockets


def port_refusal(host: str, project: str, wanted, printed: str, passing=()) -> str | None:
    """Why the front of PROJECT cannot publish WANTED (`published`'s) on HOST, from what
    `port_holders` PRINTED: the first port that a container of another project, a container
    outside Compose or another program holds (None: they are free, or PROJECT's own, or
    held by a project in PASSING, which hands them over during the deploy)."""
    for port, key, containers, sockets in _holders(wanted, printed):
        if any(owner == project or owner in passing for _, owner in containers):
            continue  # this project's front (a container's port is its engine's socket too)
        if containers:
            name, owner = containers[0]
            holder = f"project {_named(owner)} (its container {name})" if owner != "-" else f"the container {name}"
        elif sockets:
            holder = f"a program outside Docker (listening on {sockets[0]})"
        else:
            continue
        return (f"port {port} on {host} is taken by {holder}: give [hosts.{host}] another {key}, or put the "
                f"projects behind the server's shared front (front = \"shared\" in [hosts.{host}])")
    return None


def held_by(wanted, printed: str, project: str) -> bool:
    """Whether a container of compose project PROJECT holds one of WANTED (`port_holders` PRINTED)."""
    return any(owner == project for _, _, containers, _ in _holders(wanted, printed) for _, owner in containers)


def take_lock(directory, owner: str) -> str:
    """The deploy lock, as any lock (plans/locks.py), not waited for: a second deploy exits
    LOCK_HELD at once."""
    return locks.take(PurePosixPath(f"{directory}/{LOCK}"), owner, wait=0)


def lock_holder(directory) -> str:
    return locks.holder(PurePosixPath(f"{directory}/{LOCK}"))


def release_lock(directory) -> str:
    return locks.release(PurePosixPath(f"{directory}/{LOCK}"))


# The owner line take_lock writes: "USER@MACHINE pid PID since WHEN".
LOCK_OWNER = re.compile(r"^\S+@(\S+) pid (\d+) ")


def lock_owner(holder: str) -> tuple[str, int] | None:
    """(machine, pid) of the deploy that holds the lock, from its owner line; None when the
    line names none (an empty or foreign file)."""
    match = LOCK_OWNER.match(holder)
    return (match.group(1), int(match.group(2))) if match else None


def unlock_refusal(name: str, holder: str, here: str, alive: bool, force: bool) -> str | None:
    """Why `inv deploy.unlock` must leave the lock on host NAME alone (None: release it).
    HOLDER is its owner line, HERE this machine's name, ALIVE whether the holder's pid runs
    here. A live deploy keeps its lock, --force or not (a second deploy would prune the
    release it is making); one elsewhere cannot be checked from here, so only --force
    releases it."""
    owner = lock_owner(holder) if holder else None
    if not holder:
        return None
    if owner and owner[0] == here:
        if alive:
            return (f"the deploy lock on {name} is held by a deploy that still runs on this machine ({holder}): "
                    f"wait for it to end, or stop it (kill {owner[1]}) and run this again")
        return None
    if force:
        return None
    return (f"the deploy lock on {name} is held by {holder}, which this machine cannot check: once that deploy "
            f"has ended (ask whoever runs it), release the lock with `inv deploy.unlock --host {name} --force`")


def current_release(directory) -> str:
    """Prints the target of `current` (nothing when there is none yet)."""
    return f"readlink {_q(f'{directory}/current')} || true"


def list_releases(directory) -> str:
    """Prints the releases that served once (SERVED): what a rollback may go back to."""
    return f"cd {_q(f'{directory}/releases')} 2>/dev/null && ls -1 -- */{SERVED} 2>/dev/null | cut -d/ -f1 || true"


def unfinished_releases(directory) -> str:
    """Prints the release directories that never served and are not current: what a deploy
    that failed without reaching the host (a cut link, a dead sshd) left behind."""
    d = _q(directory)
    return (f"cur=$(readlink {d}/current | cut -d/ -f2); cd {d}/releases 2>/dev/null || exit 0; "
            f"for r in *; do test -d \"$r\" && test ! -e \"$r/{SERVED}\" && test \"$r\" != \"$cur\" "
            "&& echo \"$r\"; done; true")


def mark_served(directory) -> str:
    """Marks the live release as served (a release from before the marker existed included)."""
    current = _q(f"{directory}/current")
    return f"if test -d {current}/; then touch {current}/{SERVED}; fi"


def switch(directory, release: str) -> str:
    """Mark RELEASE served, then point `current` at it in one rename, so it never names nothing."""
    d, r = _q(directory), shlex.quote(release)
    return f"touch {d}/releases/{r}/{SERVED} && ln -sfn releases/{r} {d}/.current.tmp && mv -T {d}/.current.tmp {d}/current"


def remove_trees(paths) -> str:
    return "rm -rf -- " + " ".join(_q(p) for p in paths)


def install_mounted(release_dir, config_dir) -> str:
    """Copy the database init script into CONFIG_DIR, where the containers mount it from
    (the same text release after release; replaced by rename)."""
    source, target = _q(f"{release_dir}/config/db/app-role.sh"), _q(f"{config_dir}/db/app-role.sh")
    return (f"set -e; mkdir -p -m 755 {_q(f'{config_dir}/db')}; cmp -s {source} {target} && exit 0; "
            f"cp {source} {target}.tmp && chmod 644 {target}.tmp && mv -f {target}.tmp {target}")


def host_secrets(shared, release_dir, templates: dict) -> str:
    """One script that makes each env file missing under SHARED from its template (the
    token replaced by a value generated there; an existing file is never touched) and links
    it into RELEASE_DIR. The templates hold the token, not secrets, so they travel in the
    script as here-documents: one round trip for every file."""
    parts, links = [], []
    for rel, template in templates.items():
        if TEMPLATE_END in template:
            raise ValueError(f"the template of {rel} contains {TEMPLATE_END}")
        target = f"{shared}/{rel}"
        script, _ = generate_secret_file(target, template)
        parts.append(f"mkdir -p -m 700 {_q(PurePosixPath(target).parent)}")
        parts.append(f"( {script} ) <<'{TEMPLATE_END}'\n{template}{'' if template.endswith(chr(10)) else chr(10)}{TEMPLATE_END}")
        # The secrets folder is linked whole: Compose mounts it into containers, where a
        # link to a path of the host would lead nowhere.
        rel_link = SECRETS_DIR if str(rel).startswith(f"{SECRETS_DIR}/") else str(rel)
        if rel_link not in links:
            links.append(rel_link)
    parts += [f"ln -sfn {_q(f'{shared}/{rel}')} {_q(f'{release_dir}/{rel}')}" for rel in links]
    return "set -e\n" + "\n".join(parts) + "\n"
