"""The test hosts' engines (testkit/testhost.py): which dockerd a host starts, with what."""
import json

import pytest

from testkit import testhost
from testkit.testhost import ENGINES, Server


@pytest.fixture
def engine28(tmp_path, monkeypatch):
    folder = tmp_path / "engine28"
    folder.mkdir()
    (folder / "dockerd").write_text("")
    monkeypatch.setenv("ENGINE28_BIN", str(folder))
    return folder


def host(tmp_path, engine):
    server = Server("plan", engine=engine)
    server.dir = tmp_path
    return server


def test_this_machine_s_engine_keeps_its_command_line(tmp_path):
    argv, env = host(tmp_path, "20.10").engine_argv()
    assert argv[0] == "dockerd" and "--config-file" not in argv
    assert argv[argv.index("--containerd-namespace") + 1] == "plan"
    assert not (tmp_path / "daemon.json").exists()


@pytest.mark.parametrize("engine, snapshotter", [("28", False), ("28-containerd", True)])
def test_engine_28_starts_from_its_folder_with_a_daemon_json_of_its_own(tmp_path, engine28, engine, snapshotter):
    argv, env = host(tmp_path, engine).engine_argv()
    assert argv[0] == str(engine28 / "dockerd")
    # Without --config-file it would read this machine's /etc/docker/daemon.json.
    config = argv[argv.index("--config-file") + 1]
    assert json.loads(open(config).read()) == {"features": {"containerd-snapshotter": snapshotter}}
    # containerd, runc, docker-proxy and docker-init come from the same folder.
    assert env["PATH"].split(":")[0] == str(engine28)
    assert "--containerd-namespace" not in argv and "--data-root" in argv


def test_an_unknown_engine_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^unknown test host engine '29': one of 20\.10, 28, 28-containerd$"):
        Server("plan", engine="29")
    assert set(ENGINES) == {"20.10", "28", "28-containerd"}


def test_engine_28_missing_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE28_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match=r"run `bash \.ci/engine28\.sh`"):
        Server("plan", engine="28-containerd")


def test_each_kind_of_store_has_its_own_folders():
    assert testhost.store_parts("20.10") == testhost.store_parts("28") == ("image", "overlay2")
    assert testhost.store_parts("28-containerd") == ("containerd",)
