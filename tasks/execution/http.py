"""One HTTP GET from this machine, for polling a stack that serves here."""
from __future__ import annotations

import urllib.error
import urllib.request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to report (where it sends), not a page to fetch."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def problem(url: str, timeout: float = 5) -> str | None:
    """None when URL answers 200; otherwise what it answered (a redirect with its
    Location), or why it did not."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location") if exc.headers else None
        return f"HTTP {exc.code} → {location}" if location and 300 <= exc.code < 400 else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
