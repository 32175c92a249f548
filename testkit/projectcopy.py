"""A throwaway git copy of the project, for tests of tasks that write to the tree."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIT = ["git", "-c", "user.name=tests", "-c", "user.email=tests@example.invalid"]


def copy_project(target: Path) -> Path:
    """Copy the project's files as they are in the working tree (tracked and new, not
    ignored ones such as secrets) to TARGET, committed in a fresh repository."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())
            dest.chmod(source.stat().st_mode & 0o777)
    subprocess.run([*GIT, "init", "-q"], cwd=target, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=target, check=True)
    subprocess.run([*GIT, "commit", "-qm", "copy"], cwd=target, check=True)
    return target


def git_status(tree: Path, ignored=False) -> str:
    argv = ["git", "status", "--porcelain", *(["--ignored"] if ignored else [])]
    return subprocess.run(argv, cwd=tree, capture_output=True, text=True, check=True).stdout
