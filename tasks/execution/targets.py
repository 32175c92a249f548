"""Where the stack lives: here (LocalTarget) or on a host over SSH (HostTarget).

A target knows the stack's root, backups folder, compose project and HTTP port where it
lives, runs a command there, does file operations and transfers there, and keeps what it
learnt about the engine there. It also decides the few things that truly differ between
here and a host, each in one method: where secrets are made, whether the checkout must
match the source of truth, how /healthz is reached, where a backup ends up, which checks
`inv doctor` can make. Task bodies never ask which one they have.

Nothing here knows about dry runs: every change goes through the Runner (runner.py), which
decides whether it happens.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import io
import os
import shlex
import socket
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from ..errors import HostLost, TaskError, last_line
from ..plans import archives, compose, hostfiles
from ..plans import release as release_plans
from ..plans import secrets as secret_plans
from ..source import render, settings
from ..source.stack import ROOT, STACK_FILE, Host, Site, Stack
from . import http, pipes
from .files import create_secret, write_atomic

LOCAL_BACKUPS = ROOT / archives.BACKUP_DIR


class Target:
    """What both sides share: the facts cache, the URL, running a small shell script."""

    name: str
    on: str                     # how a message names the place: "" here, " on prod" for a host
    host_flag: str              # what a command line adds to act there: "" or " --host prod"
    stack: Stack
    root: Path | PurePosixPath
    backups: Path | PurePosixPath
    project: str
    http_port: int
    site: Site                  # how it faces visitors: domains, ports, TLS
    doctor_checks: tuple[str, ...]

    def __init__(self):
        self.facts: dict[str, object] = {}  # what was learnt about the engine, once per target

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def with_stack(self, stack: Stack) -> "Target":
        """This target for another version of the source of truth (a database added)."""
        other = copy.copy(self)
        other.stack = stack
        return other

    def where(self) -> str:
        """The prefix of a dry run's lines."""
        return ""

    def execute(self, command: str, *, in_root: bool = True, **kwargs):
        raise NotImplementedError

    def shell(self, script: str, *, stdin_text=None, check=True, what=None):
        """Run a small shell SCRIPT quietly (file operations); input comes from STDIN_TEXT."""
        stream = io.StringIO(stdin_text) if stdin_text is not None else False
        # Absolute paths only: a release's directory may not exist yet.
        result = self.execute(f"bash -c {shlex.quote(script)}", in_root=False, warn=True, hide=True,
                              in_stream=stream)
        if check and result.failed:
            raise TaskError(f"{what or script} failed on {self.name}: "
                            f"{last_line(result.stderr, f'exit status {result.exited}')}")
        return result


class LocalTarget(Target):
    """The stack in this checkout, run by this machine's engine."""

    name = "local"
    on = ""
    host_flag = ""
    doctor_checks = ("engine", "engine_report", "compose", "builder", "port", "env_files", "rendered", "app_python",
                     "interrupted_restores", "interrupted_loads", "unfinished_files", "services",
                     "processes")

    def __init__(self, c, stack: Stack, root: Path = ROOT, env=None):
        super().__init__()
        self.c, self.stack, self.root = c, stack, Path(root)
        self.backups = self.root / archives.BACKUP_DIR
        self.env = dict(env or {})
        self.project, self.http_port = settings.local_place(stack, self.root, self.env)
        self.site = replace(render.local_site(stack), http_port=self.http_port)
        # What the containers mount (STACK_CONFIG_DIR's default): the checkout's own config/.
        self.config_dir = self.root / "config"

    def execute(self, command, *, in_root=True, **kwargs):
        # In the current directory, where Compose finds the compose file and its .env.
        return self.c.run(command, env=self.env, **kwargs)

    # -- files ----------------------------------------------------------------------------
    def write(self, path, text: str, mode: int) -> None:
        write_atomic(Path(path), text, mode)

    def mkdir(self, path) -> None:
        Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)

    def exists(self, path) -> bool:
        return Path(path).exists()

    def rename(self, source, target) -> None:
        os.replace(source, target)

    def remove(self, paths) -> None:
        for path in paths:
            Path(path).unlink(missing_ok=True)

    def size(self, path) -> int:
        return Path(path).stat().st_size

    def feed(self, argv, write) -> tuple[int, str]:
        return pipes.feed(argv, write, self.env)

    def filter_file(self, argv, path, tap, read) -> tuple[int, str | None]:
        return pipes.filter_file(argv, path, tap, read, self.env)

    # -- what differs -----------------------------------------------------------------------
    def ensure_secrets(self, r) -> None:
        """Create the git-ignored files that are missing, each secret a fresh value (0600),
        after moving any secret an earlier version kept in an env file into its own file.
        Existing ones are never replaced: they hold the passwords the data volumes were made with."""
        r.shell(secret_plans.move_legacy_secrets(self.root, self.stack.databases),
                what="moving secrets out of the env files of an earlier version")
        for path, text in render.secret_files(self.stack).items():
            if (self.root / path).exists():
                continue
            if r.do(f"create {path} (mode 0600, generated secret)", create_secret, self.root / path, text):
                r.say(f"created {path} (mode 0600, generated secret)")

    def ensure_rendered(self) -> None:
        stale = render.drift(self.stack, self.root)
        if stale:
            names = ", ".join(str(p) for p in stale)
            raise TaskError(f"{names} out of date with {STACK_FILE}: run `inv render` and commit the result")

    def ensure_own(self, r) -> None:
        """This checkout is this project's."""

    def port_state(self, r) -> str:
        """'ours' when this stack's front holds the HTTP port, 'free', or 'busy' (another program)."""
        # The front holds it; a stack started by a version before the front, its Nginx.
        if r.running_services() & {"front", "nginx"}:
            return "ours"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.http_port))
            except OSError:
                return "busy"
        return "free"

    def health_check(self, r):
        """(what is polled, a check that returns None once /healthz answers 200, else why not)."""
        url = f"{self.url}healthz"
        return url, lambda: http.problem(url)

    def bring_home(self, r, archive_file) -> Path:
        """A backup made here is home already."""
        return archive_file

    @contextlib.contextmanager
    def copy_here(self, path, local: Path):
        """A file of the target, readable on this machine: here, the file itself."""
        yield Path(path)

    def receive_backup(self, r, local_archive: Path, verify) -> Path:
        """A local backup is where a restore here reads it (and was verified here)."""
        return local_archive

    def here(self, env=None) -> "LocalTarget":
        return LocalTarget(self.c, self.stack, self.root, {**self.env, **env}) if env else self


class HostTarget(Target):
    """The stack deployed on a host: its live release (`current`), or the release a deploy
    prepares; commands run there over SSH, in that release's directory."""

    # The rest is about a checkout (a release was checked here), and the certificate; what
    # killed tasks left in the host's volumes, databases and backups folder, as here.
    doctor_checks = ("engine", "engine_report", "compose", "builder", "certificate", "shared_front", "interrupted_restores",
                     "interrupted_loads",
                     "unfinished_backups", "services", "processes")

    def __init__(self, c, host: Host, stack: Stack, release: str | None = None, local_c=None):
        super().__init__()
        self.c, self.host, self.stack = c, host, stack
        self.local_c = local_c  # the Context for work here (tests give a recording one)
        self.name = host.name
        self.on = f" on {host.name}"
        self.host_flag = f" --host {host.name}"
        self.directory = PurePosixPath(host.directory)
        self.release = release
        self.root = self.directory / "releases" / release if release else self.directory / "current"
        self.backups = self.directory / "shared" / "backups"
        # What the containers mount (the release's STACK_CONFIG_DIR): a path no release
        # changes, so that a new release recreates no container for its new directory.
        self.config_dir = self.directory / "shared" / "config"
        self.project, self.http_port = settings.host_place(stack, host)
        self.site = host.site or replace(render.local_site(stack), http_port=self.http_port)
        self.backup_place = render.BackupPlace.of(self.project, host.name)

    def in_release(self, release: str) -> "HostTarget":
        """The same host and connection, working in RELEASE."""
        other = copy.copy(self)
        other.release = release
        other.root = self.directory / "releases" / release
        return other

    def where(self) -> str:
        return f"[{self.name}:{self.root}] "

    def execute(self, command, *, in_root=True, **kwargs):
        if not in_root:
            return self._over_ssh(self.c.run, command, **kwargs)
        # In the release: its .env gives compose the project name, port and image names, so
        # nothing depends on the SSH session's environment.
        with self.c.cd(str(self.root)):
            return self._over_ssh(self.c.run, command, **kwargs)

    def _over_ssh(self, func, *args, **kwargs):
        """FUNC over the connection; a connection that broke, or cannot be made again, is
        one HostLost error, never a hang (ssh.connect bounds how long a silent host is waited for)."""
        import paramiko

        try:
            result = func(*args, **kwargs)
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            errors = list(exc.errors.values())
            refused = all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in errors)
            why = "it refuses connections" if refused else (getattr(errors[0], "strerror", None) or str(exc))
            raise HostLost(self.name, why) from None
        except (socket.timeout, TimeoutError):
            raise HostLost(self.name, "no answer") from None
        except EOFError:
            raise HostLost(self.name, "the connection broke") from None
        except (OSError, paramiko.SSHException) as exc:
            raise HostLost(self.name, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) from None
        if getattr(result, "exited", 0) == -1:
            # A channel closed without an exit status: did the connection go with it?
            client = getattr(self.c, "client", None)
            transport = client.get_transport() if client else None
            if not (transport and transport.is_active()):
                raise HostLost(self.name, "the connection broke")
        return result

    # -- files ----------------------------------------------------------------------------
    def write(self, path, text: str, mode: int) -> None:
        self.shell(hostfiles.write(path, mode), stdin_text=text, what=f"writing {path}")

    def mkdir(self, path) -> None:
        self.shell(hostfiles.mkdir(path), what=f"creating {path}")

    def exists(self, path) -> bool:
        return self.shell(hostfiles.exists(path), check=False).ok

    def rename(self, source, target) -> None:
        self.shell(hostfiles.rename(source, target), what=f"renaming {source}")

    def remove(self, paths) -> None:
        self.shell(hostfiles.remove(paths), check=False)

    def size(self, path) -> int:
        result = self.shell(hostfiles.size(path), check=False)
        return int(result.stdout.strip()) if result.ok and result.stdout.strip().isdigit() else 0

    # -- what differs -----------------------------------------------------------------------
    def ensure_secrets(self, r) -> None:
        """The host's env files live in shared/config: generated there by the deploy that
        prepares a release (the values never leave the host), never overwritten, linked into
        that release. The live release has its links already: nothing to do for it."""
        if self.release is None:
            return
        shared = self.directory / "shared"
        r.shell(secret_plans.move_legacy_secrets(shared, self.stack.databases),
                what=f"moving secrets out of the env files of an earlier version on {self.name}")
        templates = render.secret_files(self.stack, token=release_plans.SECRET_TOKEN)
        r.shell(release_plans.host_secrets(shared, self.root, templates),
                what=f"making the secrets on {self.name}")
        r.shell(release_plans.install_mounted(self.root, self.config_dir),
                what=f"installing the database init script on {self.name}")

    def ensure_rendered(self) -> None:
        """A release holds what was rendered and checked here before it shipped."""

    def ensure_own(self, r) -> None:
        """The host's directory holds this project's releases (or none yet): refused in one
        line before anything changes when it holds another project's, whose releases a task
        here would take for this project's (a deploy's undo would move traffic to one, a
        rollback or `up` would serve one, `releases` list them, `deploy.unlock` free their lock)."""
        printed = r.shell(release_plans.directory_owner(self.directory), check=False).stdout
        refusal = release_plans.owner_refusal(self.name, self.directory, self.project, printed)
        if refusal:
            raise TaskError(refusal)

    def port_state(self, r) -> str:
        return "unknown"  # the port is the host's, and not reachable from here to try

    def health_check(self, r):
        # Through Nginx from the app container: the published port may be the host's loopback.
        argv = r.compose_argv(compose.health_through_nginx())

        def check():
            result = r.probe(argv)
            return None if result.ok else last_line(result.stdout, "") or last_line(result.stderr, "no 200 yet")

        return f"/healthz through Nginx on {self.name}", check

    def bring_home(self, r, archive_file) -> Path:
        """Copy a backup made on the host into the local backups/ (a backup with --host)."""
        r.here().do(f"create {LOCAL_BACKUPS}", LOCAL_BACKUPS.mkdir, mode=0o700, exist_ok=True)
        for remote_path in archives.companions(archive_file):
            r.do(f"copy {remote_path.name} from {self.name} into {LOCAL_BACKUPS}",
                 self._get, remote_path, LOCAL_BACKUPS / remote_path.name)
        r.report(f"copied {archive_file.name} from {self.name} into {LOCAL_BACKUPS}")
        return LOCAL_BACKUPS / archive_file.name

    @contextlib.contextmanager
    def copy_here(self, path, local: Path):
        """The host's file at PATH copied to LOCAL (0600) for as long as the block runs: a
        check that must read it on this machine, where the code is."""
        try:
            self._get(PurePosixPath(path), local)
            yield local
        finally:
            local.unlink(missing_ok=True)

    def receive_backup(self, r, local_archive: Path, verify) -> PurePosixPath:
        """Copy a local backup into the host's backups folder (a restore with --host), and
        VERIFY the copy there."""
        r.mkdir(self.backups)
        for local_path in archives.companions(local_archive):
            r.do(f"upload {local_path.name} to {self.name}:{self.backups}",
                 self._put, local_path, self.backups / local_path.name)
        copy_there = self.backups / local_archive.name
        verify(copy_there)
        return copy_there

    def here(self, env=None) -> LocalTarget:
        """This machine, for the work of a host task that happens here (verifying a backup
        before it is sent, building an image to ship), with ENV for its commands."""
        from invoke import Config, Context

        from .stdin import ChunkedLocal

        local_c = self.local_c or Context(Config(overrides={"runners": {"local": ChunkedLocal}}))
        return LocalTarget(local_c, self.stack, env=env)

    def copy_to(self, other: "HostTarget", remote: PurePosixPath, there: PurePosixPath) -> None:
        """REMOTE on this host copied to THERE on OTHER through this machine (0600 on the
        way): two hosts of a cluster need not trust each other."""
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / remote.name
            self._get(remote, local)
            other._put(local, there)

    def _get(self, remote: PurePosixPath, local: Path) -> None:
        tmp = local.with_name(f".{local.name}.tmp")
        self._over_ssh(self.c.get, str(remote), local=str(tmp))
        tmp.chmod(0o600)
        tmp.rename(local)

    def _put(self, local: Path, remote: PurePosixPath) -> None:
        tmp = remote.with_name(f".{remote.name}.tmp")
        self._over_ssh(self.c.put, str(local), remote=str(tmp))
        self.rename(tmp, remote)
