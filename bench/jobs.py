"""Jobs: the example's Celery worker (notes.tasks.count_words, with Redis) on the local stack.

  throughput    JOBS jobs enqueued at once, timed from the first enqueue until the last is
                counted (each appends a WordCount row): one worker container, then WORKERS
                (`inv scale worker=N`); the ratio is what more containers buy on this machine
  latency       RATE jobs a second for SECONDS seconds; per job, from the note's creation to
                its count (both stamped by Django in containers of one host, one clock): p50 and p99
  deploy        `inv up` after a one-line code change, without processes (the stack alone) and
                with Redis, a worker and beat: what moving the processes with the release costs
                (new workers healthy beside the old, beat stop-first, the old ones' warm
                shutdown)

Every figure comes from the database (the notes and their counts), not from the workers'
own logs.
"""
from __future__ import annotations

import json

from .build import change_code
from .harness import Env, Section, log, median, ratio, seconds, timed

WORKERS = 3
PROCESSES = """
[[services]]
name = "redis"
kind = "redis"

[[processes]]
name = "worker"
command = ["celery", "-A", "hello", "worker", "--loglevel", "WARNING", "--concurrency", "2"]
replicas = 1
health = "celery"

[[processes]]
name = "beat"
command = ["celery", "-A", "hello", "beat", "--loglevel", "WARNING"]
singleton = true
"""
# Enqueues COUNT jobs (at RATE a second, or at once with RATE 0) and waits until they are
# counted (at most LIMIT seconds); prints the seconds it took and each job's latency.
RUN = """
import json, time
from django.db.models import F, Min
from notes.models import Note, WordCount
from notes.tasks import count_words
count, rate, limit, tag = COUNT, RATE, LIMIT, "TAG"
started = time.monotonic()
for n in range(count):
    note = Note.objects.create(text=f"{tag} {n} word word word")
    count_words.delay(note.pk)
    if rate:
        time.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
notes = Note.objects.filter(text__startswith=f"{tag} ")
while time.monotonic() - started < limit:
    if WordCount.objects.filter(note__in=notes).values("note").distinct().count() >= count:
        break
    time.sleep(0.05)
took = time.monotonic() - started
done = WordCount.objects.filter(note__in=notes).values("note").annotate(first=Min("counted_at"))
created = dict(notes.values_list("pk", "created"))
latency = sorted((row["first"] - created[row["note"]]).total_seconds() for row in done)
print(json.dumps({"took": took, "counted": len(latency), "latency": latency}))
"""


def run_jobs(env: Env, tag: str, count: int, rate: float, limit: int = 300) -> dict:
    code = RUN.replace("COUNT", str(count)).replace("RATE", repr(rate)).replace("LIMIT", str(limit)) \
        .replace("TAG", tag)
    out = env.inv("manage", "--", "shell", "-c", code, timeout=limit + 120).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    if seen["counted"] < count:
        raise RuntimeError(f"{tag}: {seen['counted']} of {count} jobs counted within {limit}s")
    return seen


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def measure(env: Env, repeat: int, quick: bool = False) -> Section:
    jobs, rate, duration = (100, 20, 5) if quick else (400, 20, 20)
    stack = env.copy / "config/stack.toml"
    plain = stack.read_text()
    deploys = {"without processes": [], "with Redis, worker and beat": []}
    throughput = {1: [], WORKERS: []}
    latencies = []
    try:
        env.inv("up")
        for i in range(repeat):
            change_code(env.copy, f"jobs plain {i}")
            deploys["without processes"].append(timed(env.inv, "up"))
        stack.write_text(plain + PROCESSES)
        env.inv("render")
        env.inv("up")
        for i in range(repeat):
            change_code(env.copy, f"jobs workers {i}")
            deploys["with Redis, worker and beat"].append(timed(env.inv, "up"))
            for workers in (1, WORKERS):
                env.inv("scale", f"worker={workers}")
                throughput[workers].append(run_jobs(env, f"burst{i}w{workers}", jobs, 0)["took"])
            env.inv("scale", "worker=1")
            latencies += run_jobs(env, f"steady{i}", rate * duration, rate)["latency"]
            log(f"  jobs {i + 1}/{repeat}: deploy {deploys['without processes'][-1]:.1f}s / "
                f"{deploys['with Redis, worker and beat'][-1]:.1f}s, {jobs} jobs on 1 worker "
                f"{throughput[1][-1]:.1f}s, on {WORKERS} {throughput[WORKERS][-1]:.1f}s")
    finally:
        stack.write_text(plain)
        env.inv("render")
        env.inv("up", check=False)
    one, many = (jobs / median(throughput[n]) for n in (1, WORKERS))
    bare, full = (median(deploys[k]) for k in deploys)
    return Section(
        title="Jobs",
        header=["measure", "value", "÷ baseline"],
        rows=[["jobs/s, 1 worker container (baseline)", f"{one:.1f}", "1.00×"],
              [f"jobs/s, {WORKERS} worker containers", f"{many:.1f}", ratio(many / one)],
              [f"enqueued → counted p50, {rate} jobs/s", seconds(percentile(latencies, 0.5)), ""],
              [f"enqueued → counted p99, {rate} jobs/s", seconds(percentile(latencies, 0.99)), ""],
              ["`inv up` after a code change, no processes (baseline)", seconds(bare), "1.00×"],
              ["`inv up` after a code change, Redis + worker + beat", seconds(full), ratio(full / bare)]],
        notes=[f"Median of {repeat} run(s). Throughput: {jobs} jobs enqueued at once by one producer, until "
               f"the last is counted; each worker container runs Celery's prefork pool with 2 processes. "
               f"Latency: {rate * duration} jobs at {rate}/s on one worker container, from the note's creation "
               "to its count, both stamped in containers of this machine (one clock).",
               "With processes, a deploy also starts the new workers beside the old and waits for them to "
               "answer `celery inspect ping`, swaps beat stop-first, and lets the old workers finish their jobs."],
    )
