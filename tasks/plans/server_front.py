"""Plans for the server's shared front (procedures/server_front.py runs them): the one Nginx
on a server's ports 80 and 443 that every project deployed there with front = "shared"
sits behind, as its own compose project (COMPOSE_PROJECT) in a folder of the server's
(front_directory, /srv/stackfront unless the host says otherwise).

Routing needs no reload: the front's configuration (config/templates/stackfront.conf.j2)
is the same for any set of projects. What changes with them are files in its folder:

  names/<domain>          a claim: the project that serves DOMAIN and the directory its
                          releases are in (one project per name: two copies of one project,
                          in two directories, are two claimants)
  certs/<project>/        that project's published certificate, site.pem (its certbot writes
                          it there, by rename, at each issue and renewal)
  certs/<domain>.pem      a relative link to its project's site.pem, made with the claim
  lock                    the server lock: claims change under it alone

and the networks it is on: each project's front network, joined at runtime (`docker network
connect`), where the project's Nginx answers to <domain>.site.internal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import NamedTuple

from ..source.stack import ALIAS_SUFFIX, FRONTS
from .shell import quote as _q

COMPOSE_PROJECT = "stackfront"
CONTAINER = f"{COMPOSE_PROJECT}-front-1"
# Where the front's container sees its folders.
CONF, NAMES, CERTS = "/etc/stackfront/conf", "/etc/stackfront/names", "/etc/stackfront/certs"
# The file each project's certbot publishes into certs/<project>/.
PUBLISHED = "site.pem"
# The image when NGINX_IMAGE does not name one (the projects' Nginx default).
NGINX_IMAGE = "nginx:1.27"
# A DNS name in lowercase: labels of letters, digits and '-' (not at either end), at least
# two of them; the front maps every other Host or SNI to "" (refused). No '/' and no '..'
# can match: a claimed name is a file name in names/ and certs/ and nothing else.
NAME_PATTERN = r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
# claims_check's exit status when another project holds a name.
CLAIMED = 3


def network(project: str) -> str:
    """The front network of PROJECT (its compose file's front_network)."""
    return f"{project}_front_network"


def alias(domain: str) -> str:
    return f"{domain}{ALIAS_SUFFIX}"


@dataclass(frozen=True)
class Folder:
    """The front's folder on the server and what it holds."""
    directory: PurePosixPath

    @classmethod
    def of(cls, directory: str) -> "Folder":
        return cls(PurePosixPath(directory))

    @property
    def compose_file(self) -> PurePosixPath:
        return self.directory / "compose.yml"

    @property
    def conf(self) -> PurePosixPath:
        return self.directory / "conf"

    @property
    def names(self) -> PurePosixPath:
        return self.directory / "names"

    @property
    def certs(self) -> PurePosixPath:
        return self.directory / "certs"

    @property
    def lock(self) -> PurePosixPath:
        return self.directory / "lock"


def values(folder: Folder, bind: str, http_port: int, https_port: int, nginx_image: str,
           nginx_connections: int, nginx_files: int) -> dict:
    """What the front's templates are rendered from (source/render.py stackfront_files)."""
    return {"compose_project": COMPOSE_PROJECT, "directory": str(folder.directory), "bind": bind,
            "http_port": http_port, "https_port": https_port, "nginx_image": nginx_image,
            "nginx_connections": nginx_connections, "nginx_files": nginx_files, "conf": CONF, "names": NAMES,
            "certs": CERTS, "alias_suffix": ALIAS_SUFFIX, "name_pattern": NAME_PATTERN}


def is_name(text: str) -> bool:
    """Whether the front would route TEXT (a Host or SNI) to a claim's file."""
    return re.fullmatch(NAME_PATTERN, text) is not None


# -- the front's folder and container ---------------------------------------------------------

def prepare(folder: Folder) -> str:
    """Its folders. The certificates' keys are files of mode 0640 and group 101 (Nginx's
    workers read them at each handshake, through the mount); on the server, group 101 is
    whatever account has that number, so the folder itself, made here, is 0700: no one but
    its owner (and root) reaches what is inside. Inside it, 0755 for the container's workers.
    A folder that exists already keeps its mode (it may be one the user made on purpose)."""
    inner = " ".join(_q(p) for p in (folder.conf, folder.names, folder.certs))
    return f"mkdir -p -m 700 {_q(folder.directory)} && mkdir -p -m 755 {inner}"


def write_if_changed(path) -> str:
    """Standard input into PATH (0644, by rename) unless it holds that already; prints
    `changed` when it wrote."""
    q = _q(path)
    return (f"t={q}.$$.tmp; cat > \"$t\" && if cmp -s \"$t\" {q}; then rm -f \"$t\"; "
            f"else chmod 644 \"$t\" && mv -f \"$t\" {q} && echo changed; fi")


def stage_if_changed(path) -> str:
    """Standard input into PATH.new (0644) unless PATH holds it already; prints `staged` when
    it wrote: a configuration is tested there before it is renamed in (staged_in)."""
    q, t = _q(path), _q(f"{path}.new")
    return (f"cat > {t} && if cmp -s {t} {q}; then rm -f {t}; "
            f"else chmod 644 {t} && echo staged; fi")


def staged_in(path) -> str:
    return f"mv -f {_q(f'{path}.new')} {_q(path)}"


def staged_out(path) -> str:
    return f"rm -f {_q(f'{path}.new')}"


def nginx_test_staged(folder: Folder, image: str, path) -> list[str]:
    """The staged configuration PATH.new (a file of conf/) tested by a one-off container of the
    front's image, before the front (running or not) can read it."""
    name = PurePosixPath(path).name
    return ["docker", "run", "--rm", "--network", "none", "--volume", f"{folder.conf}:{CONF}:ro", image,
            "nginx", "-t", "-q", "-c", f"{CONF}/{name}.new"]


def compose(folder: Folder, args) -> list[str]:
    return ["docker", "compose", "--project-name", COMPOSE_PROJECT, "--file", str(folder.compose_file), *args]


def up(folder: Folder) -> list[str]:
    """Started when missing, recreated only when its definition changed."""
    return compose(folder, ["up", "--detach", "--no-build", "--remove-orphans"])


def create(folder: Folder) -> list[str]:
    """Its container made (or recreated), not started: the tasks connect it first."""
    return compose(folder, ["up", "--no-start", "--no-build"])


def pull(image: str) -> str:
    """IMAGE on the server, pulled unless it is there already."""
    q = _q(image)
    return f"docker image inspect {q} >/dev/null 2>&1 || docker pull --quiet {q} >/dev/null"


def down(folder: Folder) -> list[str]:
    return compose(folder, ["down", "--remove-orphans"])


def inspect() -> list[str]:
    """State, image, the folder its configuration comes from, its networks and the host
    ADDRESS:PORT it publishes (empty when there is no front)."""
    return ["docker", "inspect", "--format",
            "{{.State.Status}}\t{{.Config.Image}}\t{{range .Mounts}}{{if eq .Destination \"" + CONF + "\"}}"
            "{{.Source}}{{end}}{{end}}\t{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}"
            "\t{{range $_, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}}:{{.HostPort}} {{end}}{{end}}",
            CONTAINER]


@dataclass(frozen=True)
class State:
    status: str
    image: str
    directory: str
    networks: tuple[str, ...]
    published: tuple[tuple[str, int], ...] = ()  # (host address, port)

    def holds(self, port: int) -> bool:
        """Whether it publishes PORT (at any address: one server, one front on a port)."""
        return any(number == port for _, number in self.published)


def parse_inspect(stdout: str) -> State | None:
    fields = stdout.rstrip("\n").split("\t")
    if len(fields) not in (4, 5) or not fields[0]:
        return None
    conf = fields[2]
    published = []
    for binding in (fields[4].split() if len(fields) == 5 else ()):
        address, _, port = binding.rpartition(":")
        if port.isdigit():
            published.append((address, int(port)))
    return State(fields[0], fields[1], conf[:-len("/conf")] if conf.endswith("/conf") else conf,
                 tuple(fields[3].split()), tuple(published))


def nginx_test() -> list[str]:
    return ["docker", "exec", CONTAINER, "nginx", "-t", "-q", "-c", f"{CONF}/nginx.conf"]


def nginx_reload() -> list[str]:
    return ["docker", "exec", CONTAINER, "nginx", "-s", "reload", "-c", f"{CONF}/nginx.conf"]


def own_front(project: str) -> str:
    """The container of PROJECT's own front (front = "own"), which holds the ports."""
    return f"{project}-front-1"


# The comment that names the hand-over's rules (what `iptables -S` shows while one runs).
HOLD_COMMENT = "stackfront-hand-over"
# Seconds after which the rules go whatever became of the shell that added them.
HOLD_LIMIT = 30


def hand_over(source: str, target: str, ports: tuple[int, int], listens: int) -> str:
    """Shell: the container SOURCE, which holds PORTS, stopped and the container TARGET (made
    already) started at once, in one command: the ports are free for the least time. When
    TARGET does not start, SOURCE starts again (the sites stay served, the command fails);
    it is removed only once TARGET runs. Both ways between a project's own front and the
    shared front.

    Nothing listens on PORTS for that moment, and a client's connection would be refused.
    Where the command runs as root with iptables, new connections to this server's own
    addresses on PORTS are held instead: their first packet (SYN) dropped, which a client
    sends again a second later (its TCP's retry, nothing of the client's doing), by when
    TARGET accepts (on its container's address, port LISTENS, which the rules never hold).
    The rules go once it does, on any exit of the shell, and after HOLD_LIMIT seconds in
    any case (a sleeper of their own); established connections and this server's own
    outgoing ones are never touched."""
    src, dst = _q(source), _q(target)
    rule = (f"-p tcp --syn -m addrtype --dst-type LOCAL -m multiport --dports {ports[0]},{ports[1]} "
            f"-m comment --comment {HOLD_COMMENT} -j DROP")

    def rules(action: str, then: str) -> str:
        return then.join(f"iptables -w -t raw {action} {chain} {rule}" for chain in ("PREROUTING", "OUTPUT"))

    hold = (f"hold() {{ {rules('-I', ' && ')}; }}; "
            f"release() {{ {rules('-D', ' 2>/dev/null; ')} 2>/dev/null; true; }}; "
            "held=; "
            "if [ \"$(id -u)\" = 0 ] && command -v iptables >/dev/null 2>&1; then "
            f"setsid sh -c {_q(f'sleep {HOLD_LIMIT}; ' + rules('-D', '; '))} >/dev/null 2>&1 </dev/null & "
            "trap release EXIT; hold && held=1; fi; ")
    accepts = ("if [ -n \"$held\" ]; then "
               f"ip=$(docker inspect --format '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} {{{{end}}}}' {dst} | cut -d' ' -f1); "
               f"for _ in $(seq 50); do timeout 1 bash -c \"exec 3<>/dev/tcp/$ip/{listens}\" 2>/dev/null && break; sleep 0.1; done; "
               "release; fi; ")
    return (hold + f"docker stop {src} >/dev/null && {{ docker start {dst} >/dev/null || "
            f"{{ docker start {src} >/dev/null; exit 1; }}; }} && {{ {accepts}docker rm --force {src} >/dev/null; }}")


def connect(project: str) -> list[str]:
    return ["docker", "network", "connect", network(project), CONTAINER]


def disconnect(project: str) -> list[str]:
    return ["docker", "network", "disconnect", network(project), CONTAINER]


def connected_already(stderr: str) -> bool:
    """`docker network connect` refused only because the front is on that network already."""
    return "already exists" in stderr


def not_connected(stderr: str) -> bool:
    return "is not connected" in stderr or "No such container" in stderr or "not found" in stderr


# -- claims ---------------------------------------------------------------------------------

class Claim(NamedTuple):
    """Who holds a name: a compose project and the directory of its releases. A claim
    written before claims named their directory has "" there: its project's, whichever
    directory deploys it next (which writes the directory in)."""
    project: str
    directory: str = ""

    def holds(self, project: str, directory) -> bool:
        """Whether this claim is PROJECT's deployed from DIRECTORY."""
        return self.project == project and self.directory in ("", str(directory))


def read_claims(folder: Folder) -> str:
    """Every claim as `<domain> <project> <directory>` lines."""
    n = _q(folder.names)
    return (f"cd {n} 2>/dev/null || exit 0; for f in *; do [ -f \"$f\" ] || continue; "
            f"printf '%s %s %s\\n' \"$f\" \"$(sed -n 1p -- \"$f\")\" \"$(sed -n 2p -- \"$f\")\"; done")


def parse_claims(stdout: str) -> dict[str, Claim]:
    """{domain: Claim} from read_claims' lines (anything else in the folder is left out)."""
    found = {}
    for line in stdout.splitlines():
        fields = line.rstrip().split(" ", 2)
        if len(fields) >= 2 and is_name(fields[0]) and fields[1] and not fields[1].isspace():
            found[fields[0]] = Claim(fields[1], fields[2] if len(fields) == 3 else "")
    return found


def refusal(claims: dict[str, Claim], project: str, directory, domains) -> str | None:
    """The one line refusing the DOMAINS of PROJECT deployed from DIRECTORY when another
    project (or the same project from another directory: another copy of it) claims one."""
    for domain in domains:
        owner = claims.get(domain)
        if owner is None or owner.holds(project, directory):
            continue
        if owner.project != project:
            return f"{domain} is served by project {owner.project} on this server"
        return f"{domain} is served by project {owner.project} from {owner.directory} on this server"
    return None


def held_by(claims: dict[str, Claim], project: str, directory) -> list[str]:
    """The names PROJECT deployed from DIRECTORY claims, sorted."""
    return sorted(d for d, owner in claims.items() if owner.holds(project, directory))


def claim(folder: Folder, project: str, directory, domains) -> str:
    """The claims of PROJECT deployed from DIRECTORY on DOMAINS and each one's link to its
    published certificate, each written by rename (the front sees the old file or the new
    one, never a part)."""
    parts = ["set -e"]
    for domain in domains:
        # Hidden while unfinished: a name in names/ is a claim.
        name, new_name = _q(folder.names / domain), _q(folder.names / f".{domain}.tmp")
        link, new_link = _q(folder.certs / f"{domain}.pem"), _q(folder.certs / f".{domain}.pem.tmp")
        parts.append(f"printf '%s\\n%s\\n' {_q(project)} {_q(str(directory))} > {new_name} && chmod 644 {new_name} && mv -f {new_name} {name}")
        parts.append(f"ln -sfn {_q(f'{project}/{PUBLISHED}')} {new_link} && mv -Tf {new_link} {link}")
    return "\n".join(parts) + "\n"


def unclaim(folder: Folder, domains) -> str:
    """The claims on DOMAINS and their certificate links removed: the front refuses those
    names from the next request on."""
    paths = [p for d in domains for p in (folder.names / d, folder.certs / f"{d}.pem")]
    return "rm -f -- " + " ".join(_q(p) for p in paths) if paths else "true"


def forget_published() -> list[str]:
    """Compose arguments: what the project's certbot published for the front (its chain and
    private key) deleted by a one-off certbot container, which mounts that folder as root's
    (the deploy user may not be root). For `inv down --volumes`: the certificate's volume
    goes, its copy on the server must too."""
    return ["run", "--rm", "--no-deps", "-T", "--entrypoint", "find", "certbot", SHARED_MARKER,
            "-mindepth", "1", "-delete"]


# What only a compose file made for the shared front has: its certbot's mount of the folder
# it publishes the certificate to (both kinds give Nginx the aliases).
SHARED_MARKER = "/etc/hello/published"


def release_front(compose_file) -> str:
    """Prints which front the release of COMPOSE_FILE was deployed for: `own` when its compose
    file has a front service of the project's own, `shared` when its certbot publishes to the
    shared front, nothing otherwise (no such file, or a release older than either)."""
    q = _q(compose_file)
    return (f"if grep -qx '  front:' {q}; then echo own; "
            f"elif grep -qF {_q(SHARED_MARKER)} {q}; then echo shared; fi")


def release_names(compose_file) -> str:
    """Prints the aliases COMPOSE_FILE gives its Nginx on the front network (the names its
    release was deployed to serve behind the shared front)."""
    pattern = '"[^"]*' + re.escape(ALIAS_SUFFIX) + '"'
    return f"grep -o {_q(pattern)} {_q(compose_file)} || true"


def parse_release_names(stdout: str) -> list[str]:
    """The names from release_names' lines, sorted (anything else left out)."""
    names = {line.strip().strip('"').removesuffix(ALIAS_SUFFIX) for line in stdout.splitlines()}
    return sorted(name for name in names if is_name(name))


def published(folder: Folder, project: str) -> str:
    """Whether PROJECT's certificate is published (the deploy user may not read it: 0640)."""
    return f"test -e {_q(folder.certs / project / PUBLISHED)}"
