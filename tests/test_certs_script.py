"""config/tls/certs.py's installation of a certificate (it runs in the certbot container; here
on a temporary folder): a file holds one key for ever, so that the front, which reads the
certificate and then the key of the file it names, never pairs one with another's key."""
import datetime
import importlib.util
import os
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

spec = importlib.util.spec_from_file_location("certs", "config/tls/certs.py")
certs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(certs)


@pytest.fixture
def volume(tmp_path, monkeypatch):
    monkeypatch.setattr(certs, "CERTS", str(tmp_path))
    monkeypatch.setattr(certs, "SITE_CONF", str(tmp_path / "site.conf"))
    monkeypatch.setattr(certs, "LEGACY_PEM", str(tmp_path / "site.pem"))
    monkeypatch.setattr(os, "fchown", lambda *args: None)  # the nginx group needs root
    return tmp_path


def issued(key=None):
    """(chain PEM, key PEM, key) of a self-signed certificate for example.com."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), key)


def files(volume):
    return sorted(p.name for p in volume.iterdir())


def test_a_renewal_with_the_same_key_replaces_the_keys_file_and_names_it(volume, capsys):
    chain, key_pem, key = issued()
    assert certs.install(chain, key_pem, "first")
    path = f"{volume}/site-{certs.key_id(key)}.pem"
    assert certs.served() == path
    assert (volume / "site.conf").read_text() == f"# The front's certificate, written by certs.py.\ndefault {path};\n"
    renewed, _, _ = issued(key)
    assert certs.install(renewed, key_pem, "renewal")
    assert certs.served() == path and open(path, "rb").read().startswith(renewed)
    assert files(volume) == sorted(["site.conf", "site.pem", os.path.basename(path)])
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    assert not certs.install(renewed, key_pem, "again")  # nothing written when it is there
    assert "with a new key" not in capsys.readouterr().out


def test_a_new_key_goes_to_a_new_file_and_the_one_the_front_reads_stays_whole(volume, capsys):
    first = issued()
    certs.install(first[0], first[1], "first")
    read_by_the_front = certs.served()
    before = open(read_by_the_front, "rb").read()
    second = issued()
    assert certs.install(second[0], second[1], "renewal")
    assert "with a new key: served once the front reloads" in capsys.readouterr().out
    assert open(read_by_the_front, "rb").read() == before  # untouched until the front reloads
    assert certs.served() == f"{volume}/site-{certs.key_id(second[2])}.pem"
    third = issued()
    certs.install(third[0], third[1], "renewal")
    # The file the front may still read (the one before) stays; older ones go.
    assert files(volume) == sorted(["site.conf", "site.pem", f"site-{certs.key_id(second[2])}.pem",
                                    f"site-{certs.key_id(third[2])}.pem"])


def test_every_file_holds_a_certificate_with_its_own_key(volume):
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    for key in [*keys, *keys, keys[0]]:
        chain, key_pem, _ = issued(key)
        certs.install(chain, key_pem, "renewal")
        for name in files(volume):
            if name.endswith(".pem"):
                chain_read, key_read = certs.load((volume / name).read_bytes())
                assert certs.public(key_read) == chain_read[0].public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo), name
                if name != "site.pem":
                    assert name == f"site-{certs.key_id(key_read)}.pem"


def test_the_placeholder_takes_over_the_one_file_of_an_earlier_version(volume):
    chain, key_pem, key = issued()
    (volume / "site.pem").write_bytes(chain + key_pem)
    certs.placeholder()
    assert certs.served() == f"{volume}/site-{certs.key_id(key)}.pem"
    assert re.search(r"^default \S+;$", (volume / "site.conf").read_text(), re.M)


@pytest.fixture
def fake_certbot(tmp_path, monkeypatch):
    """A `certbot` on PATH that says BUSY while TMP_PATH/busy holds a count above 0 (taking
    one off each time), then prints its arguments; each call is counted in TMP_PATH/calls."""
    script = tmp_path / "bin" / "certbot"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
echo x >> {tmp_path}/calls
left=$(cat {tmp_path}/busy 2>/dev/null || echo 0)
if [ "$left" -gt 0 ]; then
  echo $((left - 1)) > {tmp_path}/busy
  echo "{certs.BUSY}. (Lock file: /etc/letsencrypt/.certbot.lock)" >&2
  exit 1
fi
echo "ran: $*"
exit "${{FAKE_STATUS:-0}}"
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(certs, "BUSY_PAUSE", 0.01)
    return tmp_path


def calls(folder):
    return len((folder / "calls").read_text().splitlines())


def test_a_certbot_run_beside_another_waits_for_it_then_runs(fake_certbot):
    (fake_certbot / "busy").write_text("3")
    status, output = certs.certbot(["renew", "--cert-name", "site"])
    assert status == 0 and "ran: renew --cert-name site --non-interactive" in output
    assert calls(fake_certbot) == 4


def test_a_certbot_still_busy_after_the_wait_is_its_failure_as_said(fake_certbot, monkeypatch):
    monkeypatch.setattr(certs, "BUSY_WAIT", 0)
    (fake_certbot / "busy").write_text("100")
    status, output = certs.certbot(["renew"])
    assert status == 1 and certs.BUSY in output and calls(fake_certbot) <= 2


def test_any_other_certbot_failure_is_not_tried_again(fake_certbot, monkeypatch):
    monkeypatch.setenv("FAKE_STATUS", "1")
    status, output = certs.certbot(["certonly"])
    assert status == 1 and "ran: certonly" in output and calls(fake_certbot) == 1
