"""Fast tests of the benchmark harness: parsing wrk, the tables, the arguments, the task.
The harness itself runs for real in tests/e2e/test_bench.py (a --quick run)."""
import pytest
from invoke import Context, Exit

from bench import run
from bench.build import requirements
from bench.harness import BenchError, Section, table
from bench.serving import parse_wrk

WRK = """\
Running 1s test @ http://127.0.0.1:8000/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.52ms    3.10ms  30.12ms   78.00%
    Req/Sec     1.23k   100.00     1.40k    70.00%
  Latency Distribution
     50%    6.00ms
     75%    8.00ms
     90%   10.00ms
     99%   {p99}
  2465 requests in 1.00s, 1.20MB read
{errors}Requests/sec:   2443.12
Transfer/sec:      1.19MB
"""


def test_parse_wrk_reads_rate_p99_and_requests():
    result = parse_wrk(WRK.format(p99="16.60ms", errors=""))
    assert result == {"rps": 2443.12, "p99": pytest.approx(0.0166), "requests": 2465, "errors": 0,
                      "non_2xx": 0, "socket_errors": 0}


@pytest.mark.parametrize("p99, seconds", [("850.00us", 0.00085), ("1.20s", 1.2), ("2.00m", 120.0)])
def test_parse_wrk_units(p99, seconds):
    assert parse_wrk(WRK.format(p99=p99, errors=""))["p99"] == pytest.approx(seconds)


def test_parse_wrk_counts_socket_errors_and_bad_answers():
    errors = "  Socket errors: connect 1, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 5\n"
    result = parse_wrk(WRK.format(p99="16.60ms", errors=errors))
    assert (result["errors"], result["non_2xx"], result["socket_errors"]) == (11, 5, 6)


def test_parse_wrk_refuses_what_it_cannot_read():
    with pytest.raises(BenchError, match="unexpected wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:9:Connection refused\n")


def test_table_is_markdown_padded_to_its_widest_cell():
    text = table(["a", "bb"], [["ccc", 1]])
    assert text.splitlines() == ["| a   | bb |", "|-----|----|", "| ccc | 1  |"]


def test_section_markdown_has_title_table_and_notes():
    text = Section("Build", ["x"], [["1"]], ["read me"]).markdown()
    assert text.startswith("## Build\n\n| x |") and text.endswith("- read me")


def test_requirements_keep_pins_and_markers_and_drop_hashes():
    hashed = ("# comment\ndjango==5.2.19 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
              "psycopg-binary==3.3.9; implementation_name != 'pypy' \\\n    --hash=sha256:cc\n")
    assert requirements(hashed) == "django==5.2.19\npsycopg-binary==3.3.9; implementation_name != 'pypy'\n"


def test_args_default_to_every_section_and_the_results_file():
    args = run.parse_args([])
    assert args.only == list(run.SECTIONS) and args.output == str(run.RESULTS) and args.repeat == 3


def test_quick_args_shrink_the_run_and_write_nothing():
    args = run.parse_args(["--quick", "--only", "serving, start,serving"])
    assert (args.repeat, args.duration, args.backup_mib, args.output) == (1, 1, 16, None)
    assert args.only == ["start", "serving"]  # each once, in the order of SECTIONS


@pytest.mark.parametrize("argv", [["--only", "serve"], ["--only", ","], ["--repeat", "0"], ["--duration", "0"]])
def test_bad_args_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_preflight_says_what_to_install(monkeypatch):
    monkeypatch.setattr(run.shutil, "which", lambda name: None if name in ("wrk", "rsync", "sshd") else f"/usr/bin/{name}")
    monkeypatch.setattr(run.Path, "exists", lambda self: False)
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: type("R", (), {"returncode": 0})())
    with pytest.raises(BenchError, match="apt-get install openssh-server rsync wrk"):
        run.preflight(["serving", "deploy"])
    run.preflight(["build", "start"])  # needs neither


def test_preflight_says_what_a_deploy_server_needs(monkeypatch):
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: type("R", (), {"returncode": 0})())
    monkeypatch.setattr(run.shutil, "which", lambda name: None if name == "nsenter" else f"/usr/bin/{name}")
    with pytest.raises(BenchError, match=r"the deploy section makes servers of its own, which needs nsenter"):
        run.preflight(["deploy"])


def test_preflight_without_an_engine(monkeypatch):
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: type("R", (), {"returncode": 1})())
    with pytest.raises(BenchError, match="no Docker engine is reachable"):
        run.preflight(["build"])


def test_inv_bench_passes_its_flags_and_exit_status(monkeypatch):
    from tasks.benchmarks import bench

    seen = []
    monkeypatch.setattr(run, "main", lambda argv: seen.append(argv) or 3)
    with pytest.raises(Exit) as exc:
        bench(Context(), only="start", repeat=2, duration=4, quick=True, output="/tmp/r.md")
    assert exc.value.code == 3
    assert seen == [["--repeat", "2", "--duration", "4", "--backup-mib", "1024", "--only", "start", "--quick",
                     "--output", "/tmp/r.md"]]
