"""Start: `inv up` against `docker compose up -d --wait` of the same compose file, on
built images and existing volumes (each run starts from `inv down`: containers gone,
volumes kept).

Timed from the command's start until the first 200 for `/` through Nginx:
  compose      `docker compose up -d --wait`, then polling `/` every 50 ms
  inv up       what a user runs: renders-check, secrets-check, up --build --wait, migrate
               every database, collectstatic, wait for /healthz
  inv up bare  `inv up --no-migrate --no-static`: the same minus the two Django commands,
               to show where our overhead goes

Also the start-up of `inv --list` against `docker compose version`: what it costs to ask
either tool anything.
"""
from __future__ import annotations


from .harness import Env, Section, log, median, ratio, seconds, timed, wait_for_200
from testkit import INV

STARTS = {
    "compose": lambda env: env.compose("up", "--detach", "--wait", "--wait-timeout", "180"),
    "inv up": lambda env: env.inv("up"),
    "inv up bare": lambda env: env.inv("up", "--no-migrate", "--no-static"),
}


def time_to_first_200(env: Env, start) -> float:
    env.inv("down")
    return timed(lambda: (start(env), wait_for_200(f"{env.url}/", timeout=120)))


def measure(env: Env, repeat: int, cli_repeat: int = 10) -> Section:
    env.inv("up")  # the volumes, migrations and static files exist before the first timed start
    times = {name: [] for name in STARTS}
    for i in range(repeat):
        order = list(STARTS) if i % 2 == 0 else list(STARTS)[::-1]
        for name in order:
            times[name].append(time_to_first_200(env, STARTS[name]))
        log(f"  start {i + 1}/{repeat}: " + ", ".join(f"{n} {times[n][-1]:.1f}s" for n in STARTS))

    cli = {"inv --list": [], "docker compose version": []}
    for _ in range(cli_repeat):
        cli["inv --list"].append(timed(env.run, [*INV, "--list"]))
        cli["docker compose version"].append(timed(env.run, ["docker", "compose", "version"]))

    base = median(times["compose"])
    rows = [["`docker compose up -d --wait`", seconds(base), "1.00×"]]
    for name, label in (("inv up bare", "`inv up --no-migrate --no-static`"), ("inv up", "`inv up`")):
        rows.append([label, seconds(median(times[name])), ratio(median(times[name]) / base)])
    cli_base = median(cli["docker compose version"])
    rows.append(["`docker compose version`", seconds(cli_base), "1.00×"])
    rows.append(["`inv --list`", seconds(median(cli["inv --list"])), ratio(median(cli["inv --list"]) / cli_base)])
    ours = median(times["inv up"])
    difference = (f"{seconds(ours - base)} more" if ours >= base else f"{seconds(base - ours)} less")
    return Section(
        title="Start",
        header=["command (until the first 200 for / through Nginx)", "median", "÷ baseline"],
        rows=rows,
        notes=[f"**`inv up` ÷ `docker compose up -d --wait`: {ratio(ours / base)} ({difference})**, with "
               "every database migrated, static files collected and the generated files checked. Ours runs "
               "each container's own health test as soon as it starts (every 0.2 s); compose waits for the "
               "engine's, every 10 s on a host (the compose file's interval, render.HEALTH_INTERVAL: "
               "the engine's checks only watch a running stack; engine 20.10 has no start_interval).",
               f"Starts: median of {repeat} runs each from `inv down` (volumes kept), order alternating. "
               f"Command start-up: median of {cli_repeat}."],
    )
