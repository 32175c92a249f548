"""Helpers that the tests and the benchmarks share (a throwaway git copy of the project,
a real OpenSSH server); they belong to neither."""

import sys
from pathlib import Path

# The `inv` program as users run it (the virtualenv's console script), not `python -m invoke`:
# the two put different directories on sys.path, and only the first is what users have.
INV = (str(Path(sys.executable).with_name("inv")),)
