"""Build: our Dockerfile against the one-stage Dockerfile most tutorials show.

Both are built with the same command (`docker compose build`, same engine, same base image),
so the difference is the Dockerfile alone: ours installs the app's hashed requirements in a
builder stage from the requirements alone, then copies the code last; the tutorial's copies the whole tree
first and runs `pip install -r requirements.txt` after it, so any code change reinstalls
every dependency. `inv build` itself adds Invoke's start-up (see the Start section).

Measured, each --repeat times (median kept):
  cold         --no-cache: every layer built, every package downloaded from PyPI
  no change    again, nothing changed
  code only    after appending a comment to hello/hello/views.py
"""
from __future__ import annotations

import shutil

from .harness import Env, Section, log, median, ratio, seconds, size, timed

TUTORIAL_DOCKERFILE = """\
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1
WORKDIR /app
COPY . .
RUN pip install -r requirements.txt
WORKDIR /app/hello
CMD ["gunicorn", "hello.wsgi:application", "--bind", "0.0.0.0:8000"]
"""

TUTORIAL_COMPOSE = """\
services:
  web:
    build:
      context: .
      args:
        PYTHON_IMAGE: ${PYTHON_IMAGE:-python:3.11-slim-bookworm}
    image: ${TUTORIAL_IMAGE}
"""


def requirements(hashed: str) -> str:
    """The app's requirements as a tutorial writes them: pinned, markers kept, no hashes."""
    joined = hashed.replace("\\\n", " ")
    lines = [line.split(" --hash=")[0].strip() for line in joined.splitlines()]
    return "\n".join(line for line in lines if line and not line.startswith("#")) + "\n"


def tutorial_context(env: Env):
    """The tutorial's build context: the code, requirements.txt, its Dockerfile."""
    context = env.workdir / "tutorial"
    shutil.copytree(env.copy / "hello", context / "hello", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (context / "requirements.txt").write_text(requirements((env.copy / "hello/requirements.txt").read_text()))
    (context / "Dockerfile").write_text(TUTORIAL_DOCKERFILE)
    (context / "compose.yml").write_text(TUTORIAL_COMPOSE)
    return context


def change_code(tree, n) -> None:
    views = tree / "hello/hello/views.py"
    views.write_text(views.read_text() + f"# bench: code change {n}\n")


def measure(env: Env, repeat: int) -> Section:
    tutorial = tutorial_context(env)
    tutorial_image = f"{env.project}-tutorial:latest"
    tutorial_vars = {"TUTORIAL_IMAGE": tutorial_image}

    def ours(*flags):
        env.compose("build", *flags)

    def theirs(*flags):
        env.run(["docker", "compose", "--project-name", f"{env.project}-tutorial", "build", *flags],
                cwd=tutorial, env=tutorial_vars)

    times = {name: {"cold": [], "no change": [], "code only": []} for name in ("ours", "tutorial")}
    try:
        for i in range(repeat):
            for name, build, tree in (("ours", ours, env.copy), ("tutorial", theirs, tutorial)):
                t = times[name]
                t["cold"].append(timed(build, "--no-cache"))
                t["no change"].append(timed(build))
                change_code(tree, i)
                t["code only"].append(timed(build))
                log(f"  build {i + 1}/{repeat} {name}: cold {t['cold'][-1]:.1f}s, no change "
                    f"{t['no change'][-1]:.2f}s, code only {t['code only'][-1]:.2f}s")
        sizes = {"ours": env.image_bytes(env.app_image), "tutorial": env.image_bytes(tutorial_image),
                 "base": env.image_bytes(env.python_image)}
    finally:
        env.run(["docker", "image", "rm", "--force", tutorial_image], check=False)

    rows = []
    for step in ("cold", "no change", "code only"):
        mine, base = median(times["ours"][step]), median(times["tutorial"][step])
        rows.append([step, seconds(mine), seconds(base), ratio(base / mine)])
    cold = median(times["ours"]["cold"])
    code = median(times["ours"]["code only"])
    rows.append(["image size", size(sizes["ours"]), size(sizes["tutorial"]),
                 f"base image {size(sizes['base'])}: ours +{size(sizes['ours'] - sizes['base'])}, "
                 f"tutorial +{size(sizes['tutorial'] - sizes['base'])}"])
    return Section(
        title="Build",
        header=["", "ours", "tutorial Dockerfile", "tutorial ÷ ours"],
        rows=rows,
        notes=[f"**Code-only rebuild ÷ cold build (ours): {code / cold:.3f}** "
               f"({seconds(code)} against {seconds(cold)}).",
               "Same command for both (`docker compose build`); the tutorial's Dockerfile copies the "
               "tree, then runs `pip install -r requirements.txt` (the same pinned versions).",
               f"Median of {repeat} run(s). Cold builds download every package from PyPI."],
    )
