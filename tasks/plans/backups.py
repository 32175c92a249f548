"""Plans for the scheduled backups (procedures/backups.py runs them): one-off runs of
config/backup/backup.py in the backup service's container, and reading what it prints.

The service itself (docker-compose.yml, rendered from [backups] in config/stack.toml) runs
`schedule`; every task here is the same script, run once, beside it: a run's lock file in
the state volume keeps the two from overlapping.
"""
from __future__ import annotations

import json
import re
import shlex

from ..source.stack import NOTIFY_FROM_STACK
from .shell import quote

SERVICE = "backup"
# In the stack's config folder (a host's shared/config): what the running code expects,
# written at each start, mounted read-only at /etc/hello/expected for the drill.
EXPECTED = "backup-expected"
UID = 10002  # the image's hello-backup user (config/backup/Dockerfile)
# What the script exits with when a run is under way already.
BUSY = 75
# A snapshot: restic's id (8 hex digits or the whole 64), or `latest`.
SNAPSHOT = re.compile(r"latest|[0-9a-f]{8}|[0-9a-f]{64}")
# KEY=VALUE lines of repository credentials: the variables of restic's backends, nothing
# else (not RESTIC_REPOSITORY, not LD_PRELOAD): config/backup/backup.py checks the same.
CREDENTIAL = re.compile(r"(?:AWS|B2|AZURE|GOOGLE|OS|ST|RESTIC_REST)_[A-Z0-9_]{1,60}=[^\x00-\x1f\x7f]*")


def expectations_folder(folder) -> str:
    """FOLDER, made if need be, readable by the service's user (it holds no secret)."""
    return f"mkdir -p {quote(folder)} && chmod 755 {quote(folder)}"


def forget_notify_from_stack(path) -> str:
    """Delete the notify URLs file at PATH when [backups] notify wrote it (its first line
    says so), so that URLs dropped from config/stack.toml stop being used; one that `inv
    backup.notify` wrote stays."""
    return (f"if head -n 1 {quote(path)} 2>/dev/null | grep -qxF {quote(NOTIFY_FROM_STACK.strip())}; "
            f"then rm -f {quote(path)}; fi")


def script(command, *args, tty: bool = False) -> list[str]:
    """Compose: backup.py COMMAND ARGS in a one-off container of the service (its
    networks, volumes and secrets), removed afterwards."""
    return ["run", "--rm", *([] if tty else ["-T"]), SERVICE, command, *args]


def start() -> list[str]:
    """Compose: the service (re)built and started, after secrets-init has given it its
    secrets; it waits for its schedule."""
    return ["up", "--detach", "--build", SERVICE]


def own_repository(image: str, path: str) -> list[str]:
    """A local repository's folder made on the host, owned by the service's user alone
    (through the engine: the deploy's user need not be root)."""
    return ["docker", "run", "--rm", "--user", "0", "--network", "none", "--log-driver", "none", "--entrypoint", "sh",
            "--volume", f"{path}:/repository", image, "-ec",
            # Never take over a folder that holds something else.
            f'if [ -n "$(ls -A /repository)" ] && [ "$(stat -c %u /repository)" != {UID} ]; then '
            f'echo "{path} holds files and is not the backup service\'s: choose an empty folder" >&2; exit 1; fi; '
            f"chown {UID}:{UID} /repository && chmod 700 /repository"]


def parse_json(stdout: str):
    """The last line of STDOUT that is JSON, or None."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def credentials(text: str) -> str:
    """TEXT's KEY=VALUE lines, checked: the file repository.env becomes."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    bad = [line.split("=", 1)[0] for line in lines if CREDENTIAL.fullmatch(line) is None]
    if bad or not lines:
        raise ValueError("give KEY=VALUE lines, such as AWS_ACCESS_KEY_ID=... (names in capitals)"
                         + (f"; not: {', '.join(map(shlex.quote, bad))}" if bad else ""))
    return "\n".join(lines) + "\n"


# ssh-keyscan's lines: HOST KEYTYPE BASE64, nothing else.
HOST_KEY = re.compile(r"[A-Za-z0-9.:\[\]-]{1,260} (ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,2}")
# What `ssh-keygen -l` prints for a key: SHA256: and 43 base64 characters.
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def new_ssh_key(comment: str) -> tuple[str, str]:
    """A fresh Ed25519 key pair in OpenSSH's formats: (private, public line). The private key
    comes from the operating system's CSPRNG, as ssh-keygen's does, through cryptography
    (which Fabric's paramiko brings): it is made in this process and written on the target
    only, never to a file here."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}\n"


def fingerprint(key_line: str) -> str:
    """SHA256:... of a known_hosts or public key line, as ssh-keygen -l prints it."""
    import base64
    import hashlib

    # A public key line is TYPE KEY [COMMENT]; a known_hosts line HOST TYPE KEY: the key is
    # the field after the first that names a key type.
    fields = key_line.split()
    known_hosts = len(fields) >= 3 and fields[1].startswith(("ssh-", "ecdsa-", "sk-"))
    blob = base64.b64decode(fields[2] if known_hosts else fields[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_keys(stdout: str) -> list[str]:
    """The known_hosts lines of ssh-keyscan's STDOUT, each checked; ValueError if none."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip() and not line.startswith("#")]
    bad = [line for line in lines if HOST_KEY.fullmatch(line) is None]
    if bad or not lines:
        raise ValueError(f"not host keys: {bad[0][:80] if bad else 'nothing'}")
    return lines
