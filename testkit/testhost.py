"""Real servers on this machine, for the tests and the benchmark of remote work.

A test host is a network namespace with its own address (10.210.N.2), its own Docker engine
(data root, exec root, socket and containerd namespace of its own), its own OpenSSH server
whose sessions talk to that engine, and NAT outward, so that a build on the host reaches
PyPI as a real server's would. From here its address plays "the internet"; what the host
publishes on its loopback is reached with `Server.get`, from inside its namespace.

Why these choices (each one was tried):
- `nsenter --net=...`, not `ip netns exec`: the latter remounts /sys, and dockerd then fails
  with "Devices cgroup isn't mounted".
- The filesystem is shared, so /var/run/docker.sock is still this machine's engine inside the
  namespace: sshd's `SetEnv DOCKER_HOST=...` points every SSH session at the host's own. So
  is root's ~/.bashrc, which bash reads for a command over SSH: the sessions skip it
  (`SetEnv SHLVL=1`), as a server's default .bashrc does nothing for them.
- The iptables rules of each engine live in its namespace, so engines never fight over the
  DOCKER chain. This machine's engine sets FORWARD to DROP: DOCKER-USER lets test hosts out.
- The base images reach a host as a hard-linked copy of an image store made once per set of
  images (`docker save | docker load` of the 1.1 GB of stand-ins took 15-20 s per host, a
  hard-linked copy 1-2 s). Only the image store is copied (the layers and their
  metadata, which an engine never rewrites in place: its JSON files are replaced by rename,
  a removed image is unlinked); the engine's databases, build cache, networks and volumes are
  its own, so a host still starts with the base images and nothing else.
- A host runs this machine's engine (20.10, overlay2) or Docker 28 from ENGINE28_BIN
  (.ci/engine28.sh), with the classic store ("28") or the containerd image store
  ("28-containerd"). Engine 28 gets a daemon.json of its own (`--config-file`): without it,
  it would read this machine's /etc/docker/daemon.json. Its containerd (2.x, from the same
  folder) is the one dockerd starts under the host's exec root, never this machine's. The
  overlay2 store serves 20.10 and 28 alike; the containerd store is made once by engine 28
  and linked the same way, except its bolt databases, written in place: those are copied.

Needs root, iproute2, iptables, nsenter, dockerd and sshd.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
SUBNET = "10.210.0.0/16"


def missing_tools() -> list[str]:
    """What this machine lacks to make test hosts (empty when it can)."""
    missing = [tool for tool in ("ip", "iptables", "nsenter", "dockerd", "ssh-keygen") if shutil.which(tool) is None]
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        missing.append("sshd")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _run(*argv, check=True, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kwargs)


LOCK = Path("/run/hello-test-hosts.lock")
# Image stores (a dockerd data root's image/ and overlay2/ folders), one per set of images;
# on the filesystem of the hosts' data roots (/var/lib), so that copies are hard links.
IMAGE_STORES = Path("/var/lib/hello-test-host-images")
STORE_PARTS = ("image", "overlay2")
CONTAINERD_STORE_PARTS = ("containerd",)  # content, snapshots and their metadata
# The engines a test host runs, and the kind of image store each one reads.
ENGINES = {"20.10": "overlay2", "28": "overlay2", "28-containerd": "containerd"}
# Where .ci/engine28.sh unpacks Docker 28 when ENGINE28_BIN is not set (a run outside .ci/run).
ENGINE28_CACHE = Path("/var/cache/hello-ci/engine28/bin")


def engine_bin(engine: str) -> Path | None:
    """The folder of ENGINE's binaries (dockerd, containerd, runc, ...); None for this
    machine's own engine, found on PATH."""
    if engine not in ENGINES:
        raise ValueError(f"unknown test host engine {engine!r}: one of {', '.join(ENGINES)}")
    if engine == "20.10":
        return None
    folder = Path(os.environ.get("ENGINE28_BIN") or ENGINE28_CACHE)
    if not (folder / "dockerd").exists():
        raise RuntimeError(f"Docker 28 is not at {folder}: run `bash .ci/engine28.sh` (or set ENGINE28_BIN)")
    return folder


def _claim_index() -> int:
    """An index no test host (of this run or another) uses: 10.210.INDEX.0/24. Called under
    LOCK; the host's veth, made under the same lock, is the claim."""
    for index in range(100, 250):
        if _run("ip", "link", "show", f"thv{index}", check=False).returncode != 0:
            return index
    raise RuntimeError("no free test host index (100-249)")


class Server:
    """One test host; `up()` makes it, `down()` removes every trace of it."""

    def __init__(self, name: str, index: int | None = None, engine: str = "20.10"):
        self.name = name
        self.engine, self.engine_bin = engine, engine_bin(engine)
        self.index, self._claims = index, index is None
        self.namespace = f"th-{name}"
        self.netns = NETNS_DIR / self.namespace
        self.dir = Path(f"/tmp/test-host-{name}")
        self.data_root = Path(f"/var/lib/docker-{name}")
        self.exec_root = Path(f"/run/docker-{name}")
        self.pidfile = Path(f"/run/docker-{name}.pid")
        self.docker_host = f"unix:///run/docker-{name}.sock"
        self.user = "root"
        self.port = 22
        self.key = self.dir / "client_key"
        self.known_hosts = self.dir / "known_hosts"
        self._dockerd: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"10.210.{self.index}.2"

    @property
    def gateway(self) -> str:
        return f"10.210.{self.index}.1"

    @property
    def veth(self) -> str:
        return f"thv{self.index}"

    # -- life --------------------------------------------------------------------------
    def up(self, images=()) -> "Server":
        self.down()
        self.dir.mkdir(parents=True)
        os.makedirs("/run/sshd", exist_ok=True)
        _run("ip", "netns", "add", self.namespace)
        with open(LOCK, "a") as lock:  # test runs in parallel never pick the same index
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.index is None:
                self.index = _claim_index()
            _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.namespace)
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.veth)
        _run("ip", "link", "set", self.veth, "up")
        self.inside("sh", "-c", f"ip addr add {self.address}/24 dev eth0 && ip link set eth0 up "
                                f"&& ip link set lo up && ip route add default via {self.gateway}")
        self._open_outward()
        if images:
            self.seed_images(images)
        self.start_engine()
        self._make_keys()
        self.start_sshd()
        return self

    def down(self) -> None:
        self.stop_sshd()
        self._kill_containers()
        self.stop_engine(patience=5)
        for pid in self.pids():  # containerd and whatever else the engine left in the namespace
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.index is not None:
            _run("ip", "link", "del", self.veth, check=False)
            if self._claims:
                self.index = None
        _run("ip", "netns", "del", self.namespace, check=False)
        # Mounts a test left under the host's directory (a small tmpfs) go first, and the
        # network namespaces an engine killed at once leaves mounted in its exec root.
        prefixes = tuple(f"{path}/" for path in (self.dir, self.data_root, self.exec_root))
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            point = line.split()[1]
            if point.startswith(prefixes):
                _run("umount", "-l", point, check=False)
        for path in (self.dir, self.data_root, self.exec_root):
            shutil.rmtree(path, ignore_errors=True)

    def _open_outward(self) -> None:
        def add(table, *rule):
            if _run("iptables", "-t", table, "-C", *rule, check=False).returncode != 0:
                _run("iptables", "-t", table, "-I", *rule)

        add("nat", "POSTROUTING", "-s", SUBNET, "!", "-d", SUBNET, "-j", "MASQUERADE")
        if _run("iptables", "-L", "DOCKER-USER", check=False).returncode == 0:
            add("filter", "DOCKER-USER", "-i", "thv+", "-j", "ACCEPT")
            add("filter", "DOCKER-USER", "-o", "thv+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                "-j", "ACCEPT")

    # -- the engine ----------------------------------------------------------------------
    def engine_argv(self) -> tuple[list[str], dict]:
        """The dockerd command line of this host's engine, and its environment."""
        argv = ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                "--pidfile", str(self.pidfile), "-H", self.docker_host]
        if self.engine_bin is None:
            return argv + ["--containerd-namespace", self.name, "--containerd-plugins-namespace",
                           f"{self.name}-plugins"], dict(os.environ)
        # Engine 28's containerd is its own (under the exec root), so the default namespace is
        # the host's alone; one name for all makes a seeded containerd store valid on any host.
        config = self.dir / "daemon.json"
        config.write_text(json.dumps({"features": {"containerd-snapshotter": self.engine == "28-containerd"}}))
        return ([str(self.engine_bin / "dockerd"), *argv[1:], "--config-file", str(config)],
                {**os.environ, "PATH": f"{self.engine_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"})

    def start_engine(self) -> None:
        argv, env = self.engine_argv()
        log = open(self.dir / "dockerd.log", "a")
        self._dockerd = subprocess.Popen(["nsenter", f"--net={self.netns}", *argv], env=env,
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if self._dockerd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the engine of {self.name} did not start: {self.dir}/dockerd.log")
            time.sleep(0.5)
        if self.engine_bin is not None and not (self.exec_root / "containerd" / "containerd.sock").exists():
            # dockerd takes a containerd at /run/containerd/containerd.sock when one runs: it
            # would share that containerd's default namespace with every other engine 28 host.
            self.stop_engine(patience=5)
            raise RuntimeError(f"the engine of {self.name} did not start its own containerd (is one running "
                               f"at /run/containerd/containerd.sock?): {self.dir}/dockerd.log")

    def _kill_containers(self) -> None:
        """Every container of the host removed at once (SIGKILL): the engine's shutdown would
        stop each one gracefully, up to its grace period (50 s for the app), and nothing of
        a test host outlives it anyway. Twice: Swarm may have started a replacement."""
        if self._engine_pid() is None:
            return
        for _ in range(2):
            try:
                ids = self.docker("ps", "--all", "--quiet", check=False, timeout=30).stdout.split()
                if not ids:
                    return
                self.docker("rm", "--force", *ids, check=False, timeout=120)
            except subprocess.TimeoutExpired:
                return

    def _engine_pid(self) -> int | None:
        """The PID in the host's pidfile, if that process is this host's dockerd. A pidfile
        left by a run that was killed outlives its process, and after a restart its number
        may be any process's, this machine's own dockerd included: never signal it blindly."""
        try:
            pid = int(self.pidfile.read_text())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(self.pidfile).encode() in argv else None

    def stop_engine(self, patience: float = 30) -> None:
        """Stop the host's dockerd (SIGTERM), waiting up to PATIENCE seconds for it, then kill
        it. A test stopping the engine waits; tearing the host down does not (an engine of
        a swarm spends half a minute leaving it)."""
        pid = self._engine_pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
        else:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pid = None
        deadline = time.monotonic() + patience
        while pid and time.monotonic() < deadline:
            # The engine started here is our child (nsenter execs it): once it exits it stays
            # a zombie, which signal 0 still finds, until it is reaped.
            if self._dockerd is not None and self._dockerd.pid == pid:
                if self._dockerd.poll() is not None:
                    pid = None
                    break
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    pid = None
                    break
            time.sleep(0.2)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._dockerd is not None:
            try:
                self._dockerd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._dockerd.kill()
            self._dockerd = None

    def docker(self, *args, check=True, **kwargs):
        """`docker ARGS` against the host's own engine."""
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                              env={**os.environ, "DOCKER_HOST": self.docker_host}, **kwargs)

    def copy_images(self, images) -> None:
        """Copy IMAGES from this machine's engine into the host's (one stream, shared layers once)."""
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "load", "-q"], stdin=save.stdout, capture_output=True,
                              env={**os.environ, "DOCKER_HOST": self.docker_host})
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"copying {images} to {self.name} failed: {load.stderr.decode()}")

    def seed_images(self, images) -> None:
        """Give the (stopped) engine IMAGES: a hard-linked copy of their image store."""
        store = image_store(images, self.engine)
        self.data_root.mkdir(parents=True, exist_ok=True)
        for part in store_parts(self.engine):
            _run("cp", "--archive", "--link", str(store / part), str(self.data_root / part))
        # containerd's bolt databases are written in place: each host its own copy.
        for database in (self.data_root / "containerd").rglob("*.db"):
            shutil.copy2(database, f"{database}.copy")
            os.replace(f"{database}.copy", database)

    def images(self) -> set[str]:
        out = self.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout
        return set(out.split())

    # -- sshd ----------------------------------------------------------------------------
    def _make_keys(self) -> None:
        for name in ("host_key", "client_key", "other_key", "other_host_key"):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / name))
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        key = (self.dir / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"{self.address} {key[0]} {key[1]}\n")
        other = (self.dir / "other_host_key.pub").read_text().split()
        (self.dir / "wrong_known_hosts").write_text(f"{self.address} {other[0]} {other[1]}\n")
        (self.dir / "empty_known_hosts").write_text("")
        (self.dir / "sshd_config").write_text(f"""ListenAddress {self.address}
Port {self.port}
HostKey {self.dir}/host_key
AuthorizedKeysFile {self.dir}/authorized_keys
PidFile {self.dir}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 50
MaxStartups 50
Subsystem sftp internal-sftp
# A session's shell (root's, bash) skips ~/.bashrc, as a server's default one does for a
# command (Debian's returns unless interactive): this machine's is its developer's, and
# its pyenv setup ran some 100 processes, 90 ms of CPU, before each of the tests' thousands
# of SSH commands. Bash reads it for sshd only at shell level 1: this makes it 2.
SetEnv DOCKER_HOST={self.docker_host} SHLVL=1
""")

    def start_sshd(self) -> None:
        binary = shutil.which("sshd") or "/usr/sbin/sshd"
        self.inside(binary, "-f", str(self.dir / "sshd_config"), "-E", str(self.dir / "sshd.log"))
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex((self.address, self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {self.name} did not start: {self.dir}/sshd.log")
            time.sleep(0.1)

    def stop_sshd(self) -> None:
        """Kill the host's sshd and every session it runs (what a crash of the server's sshd
        or a reboot does to a deploy in progress)."""
        for pid in self.pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass

    def pids(self) -> list[int]:
        if not self.netns.exists():
            return []
        return [int(p) for p in _run("ip", "netns", "pids", self.namespace, check=False).stdout.split()]

    # -- the network ---------------------------------------------------------------------
    def link(self, up: bool) -> None:
        """Take the host's network interface down (a cut link) or bring it back."""
        state = "up" if up else "down"
        self.inside("ip", "link", "set", "eth0", state)
        if up:
            self.inside("ip", "route", "replace", "default", "via", self.gateway)

    def inside(self, *argv, check=True):
        """Run ARGV in the host's network namespace."""
        return _run("nsenter", f"--net={self.netns}", *argv, check=check)

    def get(self, url: str, timeout: float = 10):
        """GET URL from inside the host (its loopback): (status, headers, body)."""
        out = {}

        def fetch():
            try:
                with open(self.netns) as ns:
                    if ctypes.CDLL(None, use_errno=True).setns(ns.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                # This thread alone now lives in the host's namespace.
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    out["r"] = (response.status, dict(response.headers), response.read())
            except urllib.error.HTTPError as exc:
                out["r"] = (exc.code, dict(exc.headers), exc.read())
            except Exception as exc:  # handed to the caller's thread
                out["e"] = exc

        thread = threading.Thread(target=fetch)
        thread.start()
        thread.join()
        if "e" in out:
            raise out["e"]
        return out["r"]

    def hosts_entry(self, name: str, directory: str, **extra) -> str:
        """A [hosts.NAME] table of config/stack.toml for this host."""
        lines = [f"[hosts.{name}]", f'address = "{self.address}"', f'user = "{self.user}"',
                 f'identity_file = "{self.key}"', f'known_hosts = "{self.known_hosts}"',
                 f'directory = "{directory}"']
        lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
        return "\n".join(lines) + "\n"


def store_parts(engine: str) -> tuple[str, ...]:
    """The folders of a data root that hold ENGINE's images."""
    return CONTAINERD_STORE_PARTS if ENGINES[engine] == "containerd" else STORE_PARTS


def image_store(images, engine: str = "20.10") -> Path:
    """The image store of ENGINE's kind holding IMAGES (as this machine's engine has them) and
    nothing else, made on first use by a throwaway host's engine and kept for every later
    host and run. Engines 20.10 and 28 read the same overlay2 store (its format is unchanged,
    and neither rewrites its files in place); the containerd store is made by engine 28."""
    names = sorted(images)
    ids = _run("docker", "image", "inspect", "--format", "{{.Id}}", *names).stdout.split()
    kind = ENGINES[engine]
    key = hashlib.sha256(json.dumps([names, ids] + ([kind] if kind != "overlay2" else [])).encode()).hexdigest()[:16]
    store = IMAGE_STORES / key
    if store.exists():  # complete: it appears by a rename, once made
        return store
    IMAGE_STORES.mkdir(parents=True, exist_ok=True)
    with open(IMAGE_STORES / f"{key}.lock", "a") as lock:  # one maker per store, across runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        if store.exists():
            return store
        maker = Server(f"images-{key[:8]}", engine="20.10" if kind == "overlay2" else "28-containerd")
        try:
            maker.up()
            maker.copy_images(names)
            maker.stop_engine()
            partial = IMAGE_STORES / f"{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for part in store_parts(maker.engine):
                os.rename(maker.data_root / part, partial / part)
            os.rename(partial, store)
        finally:
            maker.down()
    return store


@contextmanager
def server(name: str, images=(), engine: str = "20.10"):
    """A test host (running ENGINE, one of ENGINES) for the duration of the block; always torn down."""
    host = Server(name, engine=engine)
    try:
        yield host.up(images)
    finally:
        host.down()
