"""A real OpenSSH server on 127.0.0.1 with generated host and client keys: the 'remote'
host of the deploy tests and of the deploy benchmark."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


def sshd_binary() -> str | None:
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    return binary if os.path.exists(binary) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def loopback_sshd(d: Path):
    """Run sshd on a free port of 127.0.0.1 with its keys and config in D; yield
    {"dir", "port", "user"}. D/known_hosts holds the true host key, D/wrong_known_hosts
    another one, D/empty_known_hosts none; D/client_key is authorised, D/other_key is not."""
    binary = sshd_binary()
    if binary is None:
        raise RuntimeError("OpenSSH server not installed (apt-get install openssh-server rsync)")
    for name in ("host_key", "client_key", "other_key", "other_host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    os.makedirs("/run/sshd", exist_ok=True)
    with open(d / "sshd.log", "w") as log:
        proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start:\n{(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
        host_key = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        other = (d / "other_host_key.pub").read_text().split()
        (d / "wrong_known_hosts").write_text(f"[127.0.0.1]:{port} {other[0]} {other[1]}\n")
        (d / "empty_known_hosts").write_text("")
        yield {"dir": d, "port": port, "user": getpass.getuser()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
