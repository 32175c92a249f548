"""One HTTP GET from this machine, for polling a stack that serves here."""
from __future__ import annotations

import urllib.error
import urllib.request


def problem(url: str, timeout: float = 5) -> str | None:
    """None when URL answers 200; otherwise what it answered, or why it did not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
