"""Help is a contract: `inv --list` shows one imperative sentence per task, on one line of an
80-column terminal; `inv --help TASK` holds the rest. `--dry` reads the same everywhere, a
short flag means one long flag in every task, and `-h` stays help."""
from __future__ import annotations

import inspect
import re

import pytest
from invoke import Parser, Program

from tasks import cli, ns

TASKS = sorted(ns.task_names)
# The verbs a summary may start with; a new task's verb joins them here.
VERBS = {"Add", "Apply", "Archive", "Benchmark", "Build", "Check", "Collect", "Create", "Delete", "Dump",
         "Import", "Install", "List", "Load", "Make", "Move", "Open", "Print", "Regenerate", "Release", "Remove", "Renew",
         "Report", "Restore", "Run", "Set", "Ship", "Show", "Start", "Stop"}
# Old names kept for one release, and the name each one now has.
RENAMED = {"backup.all": "archive.all", "backup.prune": "archive.prune", "volume.backup": "volume.archive"}
# Invoke's own short flags after a task name (`inv TASK -h` is help) that a task may take
# over: -f is --follow, as in `docker logs -f` and `tail -f`.
CORE_TAKEN = {"f"}


def run_inv(argv, monkeypatch, capsys, columns=80):
    monkeypatch.setattr("invoke.program.pty_size", lambda: (columns, 24))
    Program(namespace=ns, binary="inv").run(["inv", *argv], exit=False)
    return capsys.readouterr().out


def summary(name) -> str:
    return inspect.getdoc(ns[name]).splitlines()[0]


def flags(name) -> dict:
    """{long name: short names} of a task's flags."""
    return {arg.names[0]: tuple(arg.names[1:]) for arg in ns[name].get_arguments()}


@pytest.mark.parametrize("name", TASKS)
class TestSummary:
    def test_it_is_the_docstrings_first_line_and_a_whole_sentence(self, name):
        lines = inspect.getdoc(ns[name]).splitlines()
        assert lines[1:2] in ([], [""]), f"{name}: the summary runs on to a second line: {lines[:2]}"
        assert re.fullmatch(r"[A-Z].*[^.]\.", lines[0]), f"{name}: not one sentence ending in a full stop: {lines[0]!r}"
        assert not re.search(r"[.;!?] [A-Z]", lines[0]), f"{name}: more than one sentence: {lines[0]!r}"

    def test_it_starts_with_a_verb(self, name):
        assert summary(name).split()[0] in VERBS, f"{name}: {summary(name)!r} does not start with a verb of VERBS"


def test_every_summary_fits_on_its_line_of_the_list(monkeypatch, capsys):
    listed = run_inv(["--list"], monkeypatch, capsys).splitlines()
    entries = [line for line in listed if line.startswith("  ") and not line.startswith("   ")]
    wrapped = [line for line in listed if line.startswith("   ")]
    assert len(entries) == len(TASKS) and not wrapped, "\n".join(listed)
    for name in TASKS:
        assert any(line.split()[0] == name and line.endswith(summary(name)) for line in entries), name


def test_the_manual_stays_in_the_tasks_help(monkeypatch, capsys):
    shown = run_inv(["--help", "deploy"], monkeypatch, capsys)
    assert summary("deploy.deploy") in shown and "Swarm rolls back a failure" in shown


@pytest.mark.parametrize("name", [name for name in TASKS if "dry" in flags(name)])
def test_dry_reads_the_same_in_every_task(name):
    args = {arg.name: arg for arg in ns[name].get_arguments()}
    assert args["dry"].help == cli.DRY_HELP
    assert args["dry"].names == ("dry", "n")


@pytest.mark.parametrize("name", TASKS)
def test_every_flag_says_its_default(name):
    unsaid = [arg.name for arg in ns[name].get_arguments()
              if not arg.positional and not re.search(r"[(;] ?default: ", arg.help or "")]
    assert unsaid == []


def test_a_task_cannot_word_dry_its_own_way():
    with pytest.raises(TypeError, match="DRY_HELP"):
        cli.stack_task(help={"dry": "Print the commands only."})(lambda r: None)


def test_a_short_flag_means_one_long_flag_in_every_task():
    meaning = {}
    for name in TASKS:
        for long, shorts in flags(name).items():
            for short in shorts:
                meaning.setdefault(short, set()).add(long)
                assert cli.SHORT_FLAGS.get(long) == short, f"{name}: -{short} for --{long} is not in SHORT_FLAGS"
    assert {short: longs for short, longs in meaning.items() if len(longs) > 1} == {}
    assert "h" not in meaning


def test_short_flags_leave_invokes_own_alone():
    core = {name for arg in Program(namespace=ns).core_args() for name in arg.names if len(name) == 1}
    assert set(cli.SHORT_FLAGS.values()) & core == CORE_TAKEN
    assert len(set(cli.SHORT_FLAGS.values())) == len(cli.SHORT_FLAGS)


@pytest.mark.parametrize("argv", [["deploy", "-h"], ["deploy", "--help"], ["logs", "-h"], ["backup.now", "-h"]],
                         ids=["deploy-h", "deploy-help", "logs-h", "backup-now-h"])
def test_dash_h_after_a_task_is_its_help(argv, monkeypatch, capsys):
    shown = run_inv(argv, monkeypatch, capsys)
    assert shown.startswith("Usage: inv [--core-opts] ") and "Docstring:" in shown and "--dry" in shown


@pytest.mark.parametrize("argv, argument", [
    (["backup.restore", "-h"], "SNAPSHOT"),
    (["db.shell", "--help"], "NAME"),
    (["certs.renew", "-h"], "HOST"),
], ids=["restore-snapshot", "shell-name", "renew-host"])
def test_help_read_as_an_argument_runs_nothing(argv, argument, monkeypatch, capsys):
    """Invoke gives `-h` to a positional argument still missing; the task refuses it."""
    monkeypatch.setattr(cli, "_run", lambda *args: pytest.fail("the task ran"), raising=False)
    with pytest.raises(SystemExit) as refused:
        Program(namespace=ns, binary="inv").run(["inv", *argv])
    assert refused.value.code == 1
    assert f"was read as the {argument} argument: for the help, put --help before the task's name" in \
        capsys.readouterr().err


def test_the_short_flags_parse_as_their_long_ones():
    parsed = Parser(contexts=ns.to_contexts()).parse_argv(
        ["backup.restore", "latest", "-H", "prod", "-C", "", "-n", "-y", "-t", "30", "--database", "database1",
         "logs", "-s", "djangoapp", "-f", "ps", "-a"])
    given = {context.name: {arg.name: arg.value for arg in context.args.values() if arg.got_value}
             for context in parsed}
    assert given == {
        "backup.restore": {"snapshot": "latest", "host": "prod", "cluster": "", "dry": True, "yes": True,
                           "timeout": 30, "database": ["database1"]},
        "logs": {"service": "djangoapp", "follow": True},
        "ps": {"all": True},
    }


class TestTheTwoBackupSystems:
    def test_file_archives_and_restic_backups_live_apart(self):
        assert {"archive.all", "archive.prune", "volume.archive"} <= set(TASKS)
        restic = [name for name in TASKS if name.startswith("backup.") and name not in RENAMED]
        assert restic and all("restic" in summary(name) for name in restic), restic
        assert ns.collections["archive"].default == "all" and ns.collections["backup"].default == "all"

    @pytest.mark.parametrize("old, new", RENAMED.items())
    def test_an_old_name_still_works_and_says_what_replaces_it(self, old, new):
        assert summary(old) == f"Run {new} (old name; removed next release)."
        assert flags(old) == flags(new)
        assert ns[old].help == ns[new].help
        assert inspect.getdoc(ns[new]) in inspect.getdoc(ns[old])

    def test_an_old_name_runs_the_new_task_and_says_so(self, monkeypatch, capsys):
        called = []

        def prune(c, keep=None, dry=False):
            called.append({"keep": keep, "dry": dry})

        monkeypatch.setattr(ns["archive.prune"], "body", prune)
        Program(namespace=ns, binary="inv").run(["inv", "backup.prune", "--keep", "3", "-n"], exit=False)
        assert called == [{"keep": 3, "dry": True}]
        assert "`inv backup.prune` is now `inv archive.prune`" in capsys.readouterr().err
