"""config/build/requirements.py: what the Dockerfile's builder installs, from Pipfile.lock
alone, with its hashes; a lock out of date with the Pipfile refused, as `pipenv install
--deploy` refuses it (built for real by every e2e test)."""
import copy
import json
import subprocess
import sys
import tomllib

import pytest

sys.path.insert(0, "config/build")
import requirements as req  # noqa: E402

PIPFILE = tomllib.load(open("Pipfile", "rb"))
LOCK = json.load(open("Pipfile.lock"))


def test_the_pipfile_hash_is_pipenvs_and_every_locked_package_comes_pinned_with_its_hashes():
    assert req.pipfile_hash(PIPFILE) == LOCK["_meta"]["hash"]["sha256"]
    text = req.requirements(PIPFILE, LOCK)
    for name, entry in LOCK["default"].items():
        assert f"\n{name}" in "\n" + text and entry["version"] in text
        assert all(f"--hash={h}" in text for h in entry["hashes"])
    assert "pytest" not in text and "invoke" not in text  # [dev-packages] stay out of the image
    assert "psycopg[binary]==" in text


def test_the_script_writes_requirements_pip_can_read_and_exits_1_on_a_stale_lock(tmp_path):
    done = subprocess.run([sys.executable, "config/build/requirements.py", "Pipfile", "Pipfile.lock"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("--hash=sha256:") >= len(LOCK["default"])
    stale = tmp_path / "Pipfile"
    stale.write_text(open("Pipfile").read().replace('gunicorn = "~=23.0"', 'gunicorn = "~=22.0"'))
    refused = subprocess.run([sys.executable, "config/build/requirements.py", str(stale), "Pipfile.lock"],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "Pipfile.lock is out of date with the Pipfile: run `pipenv lock`" in refused.stderr


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update(version=">=5.0"), "is not pinned to one version"),
    (lambda e: e.update(hashes=[]), "has no sha256 hashes"),
    (lambda e: e.update(hashes=["md5:abc"]), "has no sha256 hashes"),
    (lambda e: e.update(markers="python_version >= '3.10'; rm -rf /"), "not valid"),
], ids=["range", "no-hashes", "md5", "marker"])
def test_a_lock_entry_that_is_not_exact_is_refused(change, message):
    lock = copy.deepcopy(LOCK)
    change(lock["default"]["django"])
    with pytest.raises(req.Refused, match=message):
        req.requirements(PIPFILE, lock)
