"""A throwaway git copy of the project, for tests of tasks that write to the tree."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIT = ["git", "-c", "user.name=tests", "-c", "user.email=tests@example.invalid"]


# The example's config/stack.toml as the tests know it (tests/stacks.py reads it too).
EXAMPLE_STACK = ROOT / "tests" / "example-stack.toml"


def copy_project(target: Path) -> Path:
    """Copy the project's files as they are in the working tree (tracked and new, not
    ignored ones such as secrets) to TARGET, committed in a fresh repository. The copy runs
    the example (hello): after `inv init` of another project here, the tests that run hello
    keep running hello, with the stack file and generated files the example has."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())
            dest.chmod(source.stat().st_mode & 0o777)
    as_example(target)
    subprocess.run([*GIT, "init", "-q"], cwd=target, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=target, check=True)
    subprocess.run([*GIT, "commit", "-qm", "copy"], cwd=target, check=True)
    return target


def git_status(tree: Path, ignored=False) -> str:
    argv = ["git", "status", "--porcelain", *(["--ignored"] if ignored else [])]
    return subprocess.run(argv, cwd=tree, capture_output=True, text=True, check=True).stdout


def as_example(tree: Path) -> None:
    """TREE's config/stack.toml and the files rendered from it as the example has them,
    without the projects `inv init` imported (config/app-import.json names them)."""
    import json
    import shutil

    from tasks.source import render
    from tasks.source.stack import loads

    record = tree / "config/app-import.json"
    if record.exists():
        for name in json.loads(record.read_text()):
            if name != "hello":
                shutil.rmtree(tree / name, ignore_errors=True)
        record.unlink()
    example = EXAMPLE_STACK.read_text()
    if (tree / "config/stack.toml").read_text() == example:
        return
    (tree / "config/stack.toml").write_text(example)
    for path, text in render.rendered(loads(example)).items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
