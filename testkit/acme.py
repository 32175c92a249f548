"""Let's Encrypt's test CA (Pebble) on this machine, for tests that obtain real certificates.

This machine's root network namespace plays "the internet" for test hosts (testkit/testhost.py):
Pebble listens on every address here, so a container on a test host reaches its ACME directory
at https://10.210.N.1:PORT/dir (the host's gateway, through its NAT), and Pebble's validation
authority reaches the test host at 10.210.N.2:80 as Let's Encrypt would reach a real server.

Two processes, both Debian's `pebble` package:
- `pebble-challtestsrv` is the only DNS server Pebble asks (`pebble -dnsserver`): a test says
  which address a name has with `add_a`. Only its DNS part runs (its HTTP-01/TLS-ALPN-01 answer
  servers are off: the answers come from the stack under test, on port 80 of that address).
- `pebble`, whose ACME listener is TLS with a certificate made here, under a CA of our own
  (`ca_bundle`): that is what an ACME client must trust. The certificates Pebble *issues* chain
  to another, random root that Pebble makes at each start (`roots_pem()`).

Why these choices (each one matters):
- Names resolve to nothing unless a test adds them. challtestsrv answers an A query with the
  name's added addresses, or, when it has none, with -defaultIPv4 (default 127.0.0.1); an empty
  -defaultIPv4 means "no answer" (NOERROR with an empty answer section), so a name nobody added
  fails validation with a DNS error, as a mistyped domain would. The same holds for AAAA and
  -defaultIPv6, whose default is ::1: it is always set empty here, or Pebble (Go, which tries
  IPv6 first) would validate against whatever listens on [::1]:80 of this machine.
- PEBBLE_VA_NOSLEEP=1: Pebble otherwise waits a random 0-15 s before each validation.
- PEBBLE_WFE_NONCEREJECT=0: Pebble otherwise rejects 5 % of valid nonces (to test clients'
  retries), which makes runs fail at random with badNonce.
- PEBBLE_AUTHZREUSE=0: Pebble otherwise reuses a valid authorization half of the time, so a
  second order for the same name would skip validation at random (a test that breaks the
  validation path on purpose would pass or fail by chance).
- Ports are picked free at start (bind to port 0, then release); another process may take one
  in between, in which case start fails with the log named, and `with Pebble(...)` tries again
  with others (START_ATTEMPTS in all).

Needs /usr/bin/pebble and /usr/bin/pebble-challtestsrv (Debian's `pebble`), and `cryptography`.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEBBLE = "pebble"
CHALLTESTSRV = "pebble-challtestsrv"
START_TIMEOUT = 30
START_ATTEMPTS = 3
STOP_TIMEOUT = 10


class ExitedAtStart(RuntimeError):
    """Pebble or its DNS server ended before it answered (a port it was given was taken)."""


def missing_tools() -> list[str]:
    """What this machine lacks to run Pebble (empty when it can)."""
    return [tool for tool in (PEBBLE, CHALLTESTSRV) if shutil.which(tool) is None]


def _free_port(udp_too: bool = False) -> int:
    """A TCP port free on every address (Pebble's ACME listener takes 0.0.0.0), and with
    UDP_TOO free for UDP as well: challtestsrv's DNS server binds both on the same port."""
    for _ in range(100):
        with socket.socket() as tcp:
            tcp.bind(("0.0.0.0", 0))
            port = tcp.getsockname()[1]
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("0.0.0.0", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port found")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_tls_files(directory: Path, addresses) -> tuple[Path, Path, Path]:
    """A self-signed CA and, signed by it, a server certificate valid for ADDRESSES (IP SANs)
    and 127.0.0.1, in DIRECTORY: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder()
               .subject_name(_name("hello tests: Pebble listener CA")).issuer_name(_name("hello tests: Pebble listener CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))

    ips = list(dict.fromkeys([*addresses, "127.0.0.1"]))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name("pebble")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))

    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_pem, key)
    return ca_pem, cert_pem, key_pem


class Pebble:
    """Pebble and its DNS (pebble-challtestsrv) for the duration of a `with` block.

    ADDRESSES are the addresses of this machine at which clients will reach the ACME directory
    (the listener's certificate names them). DEFAULT_IPV4 is the A record of every name no test
    added ("" = none: such names do not resolve).
    """

    def __init__(self, addresses=("127.0.0.1",), default_ipv4: str = ""):
        self.addresses = list(addresses)
        self.default_ipv4 = default_ipv4
        self.dir: Path | None = None
        self.acme_port = self.management_port = self.dns_port = self.dns_management_port = 0
        self._processes: dict[str, subprocess.Popen] = {}

    # -- life --------------------------------------------------------------------------
    def __enter__(self) -> "Pebble":
        for attempt in range(START_ATTEMPTS):
            try:
                return self.start()
            except ExitedAtStart:  # most likely a port taken between its pick and its use
                if attempt == START_ATTEMPTS - 1:
                    raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Pebble":
        """Start both (stopping what this object ran before). A start that fails keeps its
        directory, whose logs the error names; the processes are ended."""
        self.stop()
        self.dir = Path(tempfile.mkdtemp(prefix="pebble-"))  # mode 0700: the keys live here
        try:
            self.acme_port, self.management_port = _free_port(), _free_port()
            self.dns_port, self.dns_management_port = _free_port(udp_too=True), _free_port()
            _, cert, key = make_tls_files(self.dir, self.addresses)
            config = self.dir / "pebble-config.json"
            config.write_text(json.dumps({"pebble": {
                "listenAddress": f"0.0.0.0:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": 80,
                "tlsPort": 443,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }}, indent=2) + "\n")
            self._spawn("challtestsrv", CHALLTESTSRV,
                        "-dns01", f"127.0.0.1:{self.dns_port}",
                        "-http01", "", "-https01", "", "-tlsalpn01", "",
                        "-management", f"127.0.0.1:{self.dns_management_port}",
                        "-defaultIPv4", self.default_ipv4, "-defaultIPv6", "")
            self._wait("challtestsrv", lambda: self._answers(f"http://127.0.0.1:{self.dns_management_port}/"))
            self._spawn("pebble", PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}",
                        env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"})
            self._wait("pebble", lambda: self._get(self.directory_url("127.0.0.1"))
                       and self._get(f"https://127.0.0.1:{self.management_port}/roots/0"))  # both listeners
        except BaseException:
            # The directory stays (its logs are what the error names); the processes go.
            self._end_processes()
            self.dir = None
            raise
        return self

    def stop(self) -> None:
        """Stop both processes (TERM, then KILL after STOP_TIMEOUT) and remove the directory.
        Does nothing when already stopped."""
        self._end_processes()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _end_processes(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes = {}

    def log(self, name: str) -> Path:
        """The log file of NAME ("pebble" or "challtestsrv")."""
        return self._dir / f"{name}.log"

    def _spawn(self, name: str, *argv, env=None) -> None:
        with open(self.log(name), "ab") as log:
            self._processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self._dir,
                env={**os.environ, **(env or {})}, start_new_session=True)

    def _wait(self, name: str, answers) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._processes[name].poll() is not None:
                raise ExitedAtStart(f"{name} exited with {self._processes[name].returncode}: see {self.log(name)}"
                                    f"{self._tail(name)}")
            try:
                if answers():
                    return
            except OSError:  # refused, reset, TLS not up yet, HTTP errors (urllib.error.URLError)
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {START_TIMEOUT} s: see {self.log(name)}"
                                   f"{self._tail(name)}")
            time.sleep(0.1)

    def _tail(self, name: str, lines: int = 10) -> str:
        """The end of NAME's log, for an error message (CI keeps the message, not /tmp)."""
        text = self.log(name).read_text(errors="replace").splitlines()[-lines:]
        return "".join(f"\n  {line}" for line in text)

    @property
    def _dir(self) -> Path:
        if self.dir is None:
            raise RuntimeError("Pebble is not started")
        return self.dir

    # -- ACME --------------------------------------------------------------------------
    @property
    def ca_bundle(self) -> Path:
        """The CA that signed the ACME listener's certificate: what an ACME client must trust
        (REQUESTS_CA_BUNDLE for certbot) to talk to Pebble."""
        return self._dir / "ca.pem"

    def directory_url(self, address: str) -> str:
        """The ACME directory as seen by a client reaching this machine at ADDRESS (one of
        `addresses`, or 127.0.0.1)."""
        return f"https://{address}:{self.acme_port}/dir"

    def roots_pem(self) -> str:
        """The root that issued certificates chain to (Pebble makes a new one at each start)."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0").decode()

    def intermediates_pem(self) -> str:
        """The intermediate between that root and issued certificates (clients get it in the
        chain Pebble serves with each certificate)."""
        return self._get(f"https://127.0.0.1:{self.management_port}/intermediates/0").decode()

    def write_roots(self, path) -> Path:
        path = Path(path)
        path.write_text(self.roots_pem())
        return path

    # -- DNS ---------------------------------------------------------------------------
    def add_a(self, name: str, address: str) -> None:
        """Make NAME resolve to ADDRESS for Pebble: its validation authority then fetches
        http://ADDRESS:80/.well-known/acme-challenge/... for HTTP-01 (with Host: NAME)."""
        self._post("/add-a", {"host": name, "addresses": [address]})

    def clear_a(self, name: str) -> None:
        """Forget NAME's A records (it then resolves to default_ipv4, or to nothing)."""
        self._post("/clear-a", {"host": name})

    # -- HTTP --------------------------------------------------------------------------
    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle)) if url.startswith("https:") else None
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.read()

    def _answers(self, url: str) -> bool:
        """True once a server answers URL with any HTTP status (challtestsrv has no page of its
        own: "/" is a 404); OSError while nothing does."""
        try:
            self._get(url)
        except urllib.error.HTTPError:
            pass
        return True

    def _post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.dns_management_port}{path}",
                                         data=json.dumps(body).encode(), method="POST")
        urllib.request.urlopen(request, timeout=5).close()  # raises HTTPError unless 2xx
