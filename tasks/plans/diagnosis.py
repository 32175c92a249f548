"""Plans and messages that say why something failed, for a user to act on: what the app's
health URL answers (without following a redirect), the engine's last health-check outputs,
and the databases the project's settings produced.

The probes are argv lists run by the runner; what they print is read here into values,
and the messages are made from those values alone.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

# What a container's health test asks when its test names no URL (the compose file's test).
HEALTH_URL = "http://127.0.0.1:8000/healthz"
# Answers a health probe keeps giving that waiting will not change (3xx, 4xx): after this
# many identical ones in a row, the wait is given up.
REPEATS = 3

_URL = re.compile(r"https?://[^\s'\"\\]+")

# In the app container: one GET of sys.argv[1], redirects not followed; prints one JSON
# line, the answer (status, Location, the body's start) or why there was none.
ANSWER_SCRIPT = (
    "import http.client, json, sys, urllib.parse\n"
    "u = urllib.parse.urlsplit(sys.argv[1])\n"
    "try:\n"
    "    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=4)\n"
    "    c.request('GET', (u.path or '/') + ('?' + u.query if u.query else ''))\n"
    "    r = c.getresponse()\n"
    "    print(json.dumps({'status': r.status, 'location': r.getheader('Location'),\n"
    "                      'body': r.read(300).decode('utf-8', 'replace')}))\n"
    "except Exception as e:\n"
    "    print(json.dumps({'error': str(e) or type(e).__name__}))\n"
)

# In a container of the app's image: the databases the settings produce, one JSON line;
# never a password.
DATABASES_SCRIPT = (
    "import json, django\n"
    "from django.conf import settings\n"
    "django.setup()\n"
    "print(json.dumps({alias: {'ENGINE': d.get('ENGINE', ''), 'NAME': str(d.get('NAME', '')),\n"
    "                          'HOST': d.get('HOST', ''), 'PORT': str(d.get('PORT', ''))}\n"
    "                  for alias, d in settings.DATABASES.items()}))\n"
)


def health_url(healthcheck) -> str:
    """The URL a container's health test (its Config.Healthcheck, JSON-decoded) asks."""
    for word in (healthcheck or {}).get("Test") or []:
        found = _URL.search(str(word))
        if found:
            return found.group(0)
    return HEALTH_URL


def health_answer(container: str, url: str) -> list[str]:
    """What URL answers inside CONTAINER, a redirect not followed (ANSWER_SCRIPT)."""
    return ["docker", "exec", container, "python", "-c", ANSWER_SCRIPT, url]


def health_log(container: str) -> list[str]:
    """The engine's record of CONTAINER's health: status and the last checks' outputs, as JSON."""
    return ["docker", "inspect", "--format", "{{json .State.Health}}", container]


def settings_databases() -> list[str]:
    """The command (in the app's image) that prints the databases the settings produce."""
    return ["python", "-c", DATABASES_SCRIPT]


@dataclass(frozen=True)
class Answer:
    """What a URL answered: STATUS (and LOCATION, the start of BODY), or ERROR when nothing did."""
    status: int | None = None
    location: str | None = None
    body: str = ""
    error: str | None = None

    @property
    def settled(self) -> bool:
        """A redirect or a refusal: the app answers, and waiting will not make it answer 200."""
        return self.status is not None and 300 <= self.status < 500

    def __str__(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        if 300 <= self.status < 400:
            return f"{self.status} → {self.location or '(no Location)'}"
        body = " ".join(self.body.split())
        return f"{self.status} {body[:120]}".rstrip()


def parse_answer(stdout: str) -> Answer | None:
    """ANSWER_SCRIPT's line read back; None when it printed none (the container stopped)."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and ("status" in data or "error" in data):
            status = data.get("status")
            return Answer(status if isinstance(status, int) else None, data.get("location"),
                          str(data.get("body") or ""), data.get("error"))
    return None


def hint(answer: Answer, url: str = HEALTH_URL) -> str:
    """What a settled ANSWER to URL tells the user to look at."""
    status, location = answer.status, answer.location or ""
    if status is not None and 300 <= status < 400:
        if location.startswith("https://"):
            return ("the project sends it to HTTPS (SECURE_SSL_REDIRECT or a middleware); the stack ends TLS in "
                    "front of the app, which must answer plain HTTP there (DJANGO_HTTPS=false for a stack without TLS)")
        if answer_path(location) == answer_path(url) + "/":
            return "the project redirects it to a slashed URL (APPEND_SLASH): it has no page at that path"
        return "the project redirects it; the health check needs a 200 there"
    if status == 400:
        return "the project refuses the request (ALLOWED_HOSTS must accept 127.0.0.1, the host the health check asks)"
    if status in (401, 403):
        return "the project wants a login there; the health check must be public"
    if status == 404:
        return "the project has no page there; the health check needs one that answers 200"
    return "the project refuses it; the health check needs a 200 there"


def answer_path(url: str) -> str:
    """The path of URL (absolute, or a Location that is a path)."""
    return re.sub(r"^[a-z]+://[^/]*", "", url).split("?")[0]


def settled_line(place: str, url: str, answer: Answer, times: int) -> str:
    """The one line of a health probe given up on: PLACE ("the new app container X")
    answered the same redirect or refusal TIMES in a row."""
    return f"{url} on {place} answered {answer} {times} times in a row: {hint(answer, url)}"


@dataclass(frozen=True)
class Check:
    """One health check the engine ran: its exit code and the last line of its output."""
    exit_code: int
    output: str


def parse_health_log(stdout: str, last: int = 3) -> list[Check]:
    """The LAST checks of `health_log`'s answer, oldest first (none when it has no health)."""
    try:
        health = json.loads((stdout or "").strip() or "null")
    except ValueError:
        return []
    entries = (health or {}).get("Log") or [] if isinstance(health, dict) else []
    checks = []
    for entry in entries[-last:]:
        lines = [line.strip() for line in str(entry.get("Output") or "").splitlines() if line.strip()]
        checks.append(Check(int(entry.get("ExitCode", -1)), lines[-1] if lines else "(no output)"))
    return checks


def parse_databases(stdout: str) -> dict[str, dict[str, str]] | None:
    """`settings_databases`' line read back; None when the settings could not be read."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def engine_name(engine: str) -> str:
    return engine.rsplit(".", 1)[-1] or "(no ENGINE)"


def databases_line(databases: dict | None, alias: str, database: str, why: str = "") -> str:
    """What the settings made of ALIAS (the stack's DATABASE), for a failed migrate:
    the engine they produced, and what a SQLite fallback or a missing alias means."""
    stack_vars = "DATABASE_URL / DJANGO_DATABASES"
    if databases is None:
        return f"the settings could not be read ({why or 'no answer'})"
    if alias not in databases:
        named = ", ".join(sorted(databases)) or "none"
        return (f"settings gave no DATABASES[{alias!r}] (they have {named}): the project did not read the "
                f"stack's databases ({stack_vars})")
    d = databases[alias]
    engine = engine_name(str(d.get("ENGINE", "")))
    if "sqlite" in engine:
        return (f"settings gave DATABASES[{alias!r}] = {engine} ({d.get('NAME')}): the project did not read the "
                f"stack's databases ({stack_vars}); the stack's {database} is PostgreSQL")
    place = f"{d.get('NAME')} on {d.get('HOST') or 'a local socket'}" + (f":{d['PORT']}" if d.get("PORT") else "")
    line = f"settings gave DATABASES[{alias!r}] = {engine} ({place})"
    if "postgresql" in engine and d.get("HOST") not in (database, "", None):
        line += f": the stack's {database} is reached at host {database}"
    return line
