"""Execution: where the stack lives (targets.py: here or a host), the one runner that turns
plans into commands there (runner.py), SSH connections (ssh.py), piped input (stdin.py) and
atomic local writes (files.py)."""
