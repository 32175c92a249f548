"""A smoke run of `inv bench --quick`: every section of the harness runs end to end against
the real engine, wrk and test hosts (servers of its own), and cleans up after itself. Its figures mean nothing (one
run, one-second wrk runs, 16 MiB of backups) and are not kept; the checks are on the
shape of the report and on what the run leaves behind."""
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from testkit.testhost import missing_tools

pytestmark = pytest.mark.e2e


def docker_names(*args):
    return set(subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.split())


def quick_bench(tmp_path, project, *sections) -> str:
    """`inv bench --quick --only SECTIONS --project PROJECT`: the report it wrote, after
    checking that the run left nothing behind."""
    if missing_tools():
        pytest.fail(f"the deploy section makes test hosts, which need {', '.join(missing_tools())}")
    output = tmp_path / "RESULTS.md"
    images_before = docker_names("images", "--all", "--quiet", "--no-trunc")
    Stack(project, 0).inv("bench", "--quick", "--only", ",".join(sections), "--output", str(output),
                          "--project", project, timeout=1800)
    assert not [n for n in Path("/var/run/netns").glob(f"th-{project}*")]  # the servers are gone
    # Nothing of the run is left: containers, volumes, images.
    assert not {n for n in docker_names("ps", "--all", "--format", "{{.Names}}") if n.startswith(project)}
    assert not {n for n in docker_names("volume", "ls", "--quiet") if n.startswith(project)}
    assert not {n for n in docker_names("images", "--format", "{{.Repository}}") if n.startswith(project)}
    # Nor an image the bench's compose projects built (other e2e groups build at the same time).
    for made_by in (project, f"{project}-prod", f"{project}-byhand", f"{project}-zero", f"{project}-recreate"):
        made = docker_names("images", "--all", "--quiet", "--no-trunc", "--filter",
                            f"label=com.docker.compose.project={made_by}") - images_before
        assert not made, made_by
    text = output.read_text()
    assert "Machine:" in text and "Docker Engine" in text
    return text


# The two halves run side by side (their own xdist groups): together they are the longest
# group of the suite, and they share no project (the deploy half makes servers of its own).
@pytest.mark.xdist_group("bench")
def test_quick_bench_of_build_start_serving_and_both_kinds_of_backups(tmp_path):
    text = quick_bench(tmp_path, "hello-bench-a", "build", "start", "serving", "backups", "scheduled")
    for title in ("## Build", "## Start", "## Serving", "## Backups", "## Scheduled backups"):
        assert title in text, f"{title} missing from:\n{text}"
    # Every ratio is a measured number, and no request failed.
    assert re.search(r"Code-only rebuild ÷ cold build \(ours\): \d\.\d{3}", text)
    serving = text.split("## Serving")[1].split("##")[0]
    assert len(re.findall(r"\| \d+ / [\d,]+ ", serving)) == 22, serving
    # The ceiling (the page's bytes from a bare WSGI app behind the same Nginx) beside the page.
    assert len(re.findall(r"\| page's bytes, bare WSGI \(Nginx → Gunicorn\) +\| \d+ +\| [\d,]+ ", serving)) == 3
    assert re.search(r"The page as a fraction of the ceiling \(requests/s\)\*\*: 1 connection: \d\.\d\d", serving)
    # The static file and the page over HTTPS at each concurrency, beside plain HTTP.
    assert len(re.findall(r"\| (?:static file \(Nginx\)|page \(Nginx → Gunicorn\)), HTTPS +\| \d+ +\| [\d,]+ ", serving)) == 6
    assert re.search(r"HTTPS ÷ plain HTTP \(requests/s\)\*\*: 1 connection: static \d\.\d\d×, page \d\.\d\d×", serving)
    # 2,000 connections (3 s in a quick run): every request answered, none with a 5xx Nginx made.
    assert re.search(r"\| page \(Nginx → Gunicorn\), 3 s\s*\|\s*2000\s*\|\s*[\d,]+\s*\|[^|]+\|\s*0 / [\d,]+ ", serving), serving
    assert "0 'worker_connections are not enough'" in serving
    assert all(n == "0" for n in re.findall(r"\| (\d+) / [\d,]+ ", serving)), serving
    scheduled = text.split("## Scheduled backups")[1].split("##")[0]
    assert re.search(r"Repository growth for an unchanged second run: [\d.,]+ [KMG]?i?B added", scheduled), scheduled


# The deploy sections, each a group of its own too (each makes fresh servers and builds on
# them cold): in one group they were the suite's longest.
@pytest.mark.xdist_group("bench-deploy")
def test_quick_bench_of_deploys(tmp_path):
    text = quick_bench(tmp_path, "hello-bench-d", "deploy")
    assert "## Deploy" in text, text
    deploy = text.split("## Deploy")[1]
    first = re.search(r"\| first +\| [\d.]+ s +\| ([\d,]+) ", deploy)
    unchanged = re.search(r"\| unchanged +\| [\d.]+ s +\| ([\d,]+) ", deploy)
    assert first and unchanged and int(unchanged[1].replace(",", "")) * 10 < int(first[1].replace(",", "")), deploy
    # Only the layers a code change made travel: a small fraction of the whole saved image.
    shipped = re.search(r"\| shipped change +\| [\d.]+ s +\| ([\d,]+) +\| [\d.]+ s +\| ([\d,]+) ", deploy)
    assert shipped and int(shipped[1].replace(",", "")) < 0.05 * int(shipped[2].replace(",", "")), deploy
    # A smoke run takes the hand-written way's shipped change alone: its one whole image sent.
    for step in ("first", "unchanged", "first shipped"):
        assert re.search(rf"\| {step} +\| [\d.]+ s +\| [\d,]+ +\| – +\| – ", deploy), deploy


@pytest.mark.xdist_group("bench-load")
def test_quick_bench_of_deploys_under_load(tmp_path):
    text = quick_bench(tmp_path, "hello-bench-l", "load")
    assert "## Deploy under load" in text, text
    # Ours drops nothing; stop-and-recreate is measured beside it (its failures vary).
    row = re.search(r"\| code change +\| ([\d,]+) +\| ([\d,]+) +\| [\d.]+ s +\| [\d.]+ s +\| ([\d,]+) +\| ([\d,]+) ", text)
    assert row and int(row[1].replace(",", "")) > 0 and row[2] == "0" and int(row[3].replace(",", "")) > 0, text
