"""Deploy under load: requests, failures and the longest gap a visitor sees while the code
changes, ours against stop-and-recreate, in the same run.

Each way gets a fresh server of its own (testkit/testhost.py), a first deploy without load,
then each operation below with testkit/load.py's load running inside the server (16
keep-alive connections back to back, plus a sequential probe that times the longest gap
between two good answers):
  code change   a one-line change to hello/hello/views.py
  unchanged     the same tree again
  rollback      back to the code before the change
  nginx config  client_max_body_size changed in config/stack.toml (then `inv render`)
Ours: `inv deploy --host bench` and `inv rollback --host bench`. Stop-and-recreate: rsync
the tree, then over ssh `docker compose up -d --build --wait`, migrate, collectstatic (and
`docker compose restart nginx` for the Nginx change, which compose does not apply itself);
its rollback deploys the previous tree the same way.
"""
from __future__ import annotations

import time

from testkit.load import RATE, Load
from testkit.testhost import Server

from .build import change_code
from .deploy import PORT, ByHand, Ours, base_images
from .harness import Env, Section, log, median, seconds

OPERATIONS = ("code change", "unchanged", "rollback", "nginx config")
QUICK = ("code change",)


class OursUnderLoad(Ours):
    def operate(self, step: str) -> None:
        if step == "rollback":
            self.env.inv("rollback", "--host", "bench")
        else:
            self.env.inv("deploy", "--host", "bench")


class ByHandUnderLoad(ByHand):
    def operate(self, step: str) -> None:
        self.deploy(step)
        if step == "nginx config":
            self.remote(f"cd {self.directory} && docker compose --project-name {self.project} restart nginx")


def change(env: Env, step: str, n: int) -> None:
    stack = env.copy / "config/stack.toml"
    if step == "code change":
        change_code(env.copy, f"load {n}")
    elif step == "rollback":
        views = env.copy / "hello/hello/views.py"
        views.write_text(views.read_text().replace(f"# bench: code change load {n}\n", ""))
    elif step == "nginx config":
        text = stack.read_text()
        stack.write_text(text.replace('client_max_body_size = "20m"', 'client_max_body_size = "21m"', 1)
                         if '"20m"' in text else text.replace('client_max_body_size = "21m"', 'client_max_body_size = "20m"', 1))
        env.inv("render")


def measure(env: Env, repeat: int, quick: bool = False) -> Section:
    env.inv("build")  # the env files exist (the hand-written deploy ships them)
    # A smoke run paces the load as the tests do (testkit/load.py's RATE): its figures mean
    # nothing, and flat out, wrk and Gunicorn took both cores for as long as the operations ran.
    operations, rate = (QUICK, RATE) if quick else (OPERATIONS, None)
    ways = {"ours": OursUnderLoad(env, f"{env.project}-zero"), "by hand": ByHandUnderLoad(env, f"{env.project}-recreate")}
    seen = {(w, o): [] for w in ways for o in operations}
    stack_toml = (env.copy / "config/stack.toml").read_text()
    for i in range(repeat):
        for name in (list(ways) if i % 2 == 0 else list(ways)[::-1]):
            way = ways[name]
            server = Server(f"{env.project}-z{i}-{name.replace(' ', '')}")
            try:
                way.reset(server.up(base_images(env)))
                way.operate("first")
                for step in operations:
                    change(env, step, i)
                    started = time.monotonic()
                    with Load(f"http://127.0.0.1:{PORT}", ["nsenter", f"--net={server.netns}"], limit=900,
                              rate=rate) as load:
                        way.operate(step)
                    load.took = time.monotonic() - started
                    seen[name, step].append(load)
                    log(f"  under load {i + 1}/{repeat} {name} {step}: {load.summary()}")
            finally:
                way.teardown()
                server.down()
                (env.copy / "config/stack.toml").write_text(stack_toml)
                env.inv("render")
    rows = []
    for step in operations:
        row = [step]
        for name in ways:
            runs = seen[name, step]
            row += [f"{median([r.requests + r.probe_requests for r in runs]):,.0f}",
                    f"{median([r.failed for r in runs]):,.0f}",
                    seconds(median([r.longest_gap for r in runs])), seconds(median([r.took for r in runs]))]
        rows.append(row)
    return Section(
        title="Deploy under load",
        header=["operation", "requests (ours)", "failed", "longest gap", "took",
                "requests (stop-and-recreate)", "failed", "longest gap", "took"],
        rows=rows,
        notes=[f"Median of {repeat} run(s), each way on a fresh server of its own; the load runs inside the "
               "server: 16 keep-alive connections back to back (wrk)"
               + (f", paced to {rate} requests/s in all" if rate else "") + ", and a sequential probe of /healthz.",
               "failed: connection errors (refused, reset, timed out) and answers other than 2xx/3xx; "
               "longest gap: the most time between two good answers of the probe.",
               "Ours starts the new app container beside the old one, reloads Nginx (behind a front that "
               "is never reloaded) and drains the old one; stop-and-recreate is `docker compose up -d "
               "--build --wait` of the new tree, then migrate and collectstatic."],
    )
