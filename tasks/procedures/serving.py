"""Is the stack serving? Waiting for /healthz, and the HTTP port it publishes."""
from __future__ import annotations

from ..errors import TaskError
from ..execution import http
from ..execution.runner import Runner, poll
from ..source.stack import STACK_FILE


def wait_until_served(r: Runner, timeout: float) -> str:
    """Wait for /healthz to answer 200 through Nginx; return the URL the stack serves.
    The target says how /healthz is reached (from here, or from inside a host)."""
    description, check = r.target.health_check(r)
    r.wait_until(description, check, timeout, interval=0.2, hint=f"; see `inv logs{r.target.host_flag}`")
    return r.target.url


def wait_for_http(url: str, timeout: float, interval: float = 0.5) -> tuple[int, float]:
    """Poll URL from here until it answers 200; return (200, seconds waited)."""
    why, waited = poll(lambda: http.problem(url), timeout, interval)
    if why is not None:
        raise TaskError(f"{url} did not answer 200 within {timeout:.0f}s (last: {why}); see `inv logs`")
    return 200, waited


def check_port_free(r: Runner) -> None:
    """Refuse to start when another program holds the HTTP port (ours may hold it)."""
    if r.target.port_state(r) == "busy":
        raise TaskError(
            f"port {r.target.http_port} on 127.0.0.1 is in use by another program: stop it, or set "
            f"http_port in {STACK_FILE} (or HTTP_PORT=8001 for one run)"
        )
