"""The stack's scheduler: runs the management commands of [[schedules]] (config/stack.toml)
at their times, in the `scheduler` process of the app image (one container, never two).

It runs in a virtualenv of its own (/app/scheduler: croniter, apprise; the Dockerfile builds
it when there are schedules) and imports nothing of Django: each run is a child process,
`/app/.venv/bin/python manage.py ARGS` in the project's folder (the image's WORKDIR, this
process's working directory) with this process's environment, so it runs the release's code
and settings, and a crash or a kill of a run leaves the schedule going.

  - STACK_SCHEDULES (JSON): [{"name", "cron", "command", "timeout"}, ...]. The cron
    expressions are read by croniter in the local timezone (the host's, from
    /etc/localtime); croniter's optional sixth field, seconds, is taken too (config/stack.toml
    allows five fields; the tests use the sixth to run every few seconds).
  - Never two runs of one schedule at once: a schedule due while its last run still goes
    is skipped, and counted (`skipped`). A run still going after its timeout is killed, with
    its children, and counts as failed.
  - /var/lib/stack-scheduler/status.json (the scheduler_state volume), written whole and
    renamed into place: per schedule the last start and end, exit code, duration, next run,
    running, skipped and failures, the last error; `updated`: when the scheduler last wrote it.
  - /tmp/stack-heartbeat, touched every few seconds: the process's health test.
  - SIGTERM: no run starts any more; those under way finish (each within its timeout; the
    engine's stop grace period is the longest timeout and some), then it exits.
  - A failure, and a recovery (the first success after failures), are sent to the apprise
    URLs of /run/secrets/notify (one a line; the backups' file, copied to the app's secrets
    when it exists).

Commands:
  scheduler.py           run the schedules, for ever (the process's command)
  scheduler.py status    the status file as JSON, each schedule with `overdue` and `failing`,
                         and `stale` when the scheduler has not written it for a while
"""
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

STATE = "/var/lib/stack-scheduler"
STATUS_FILE = f"{STATE}/status.json"
HEARTBEAT = "/tmp/stack-heartbeat"
NOTIFY_FILE = "/run/secrets/notify"
PYTHON = "/app/.venv/bin/python"
# How often the loop looks at the clock and its runs, and touches the heartbeat.
TICK = 1.0
BEAT = 5.0
# A schedule is overdue when its next run is this far in the past (the scheduler did not
# start it); the status is stale when the scheduler has not written it for this long.
LATE = 120
STALE = 60


def say(message):
    print(f"scheduler: {message}", flush=True)


def local_now():
    return datetime.datetime.now().astimezone()


def iso(moment):
    return moment.isoformat(timespec="seconds") if moment else None


def parsed(moment):
    return datetime.datetime.fromisoformat(moment) if moment else None


def load_schedules(text):
    """STACK_SCHEDULES' entries, each checked enough to run: a name, a cron, a command."""
    entries = json.loads(text or "[]")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                and isinstance(e.get("cron"), str)
                                                and isinstance(e.get("command"), list) for e in entries):
        raise ValueError("STACK_SCHEDULES is not a JSON list of {name, cron, command, timeout}")
    return entries


def next_run(cron, after):
    """The first time CRON fires strictly after AFTER (an aware datetime, local time)."""
    from croniter import croniter

    return croniter(cron, after).get_next(datetime.datetime)


def write_json(path, data):
    """DATA in PATH, whole or not at all: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".status-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def outcome(entry, code, timed_out, timeout):
    """(ok, error) of a run that ended with CODE."""
    if timed_out:
        return False, f"killed after its timeout of {timeout} s"
    if code == 0:
        return True, None
    if code < 0:
        return False, f"killed by signal {-code}"
    last = entry.get("last_output")
    return False, f"exit status {code}" + (f": {last}" if last else "")


def news(name, was_failing, ok, error, when):
    """The notification a run's end calls for, (title, body) or None: a failure always, a
    success only when it ends failures (a recovery); the backups' wording."""
    if not ok:
        return f"schedule {name} FAILED", error
    if was_failing:
        return f"schedule {name} recovered", f"schedule {name} succeeded again at {when}"
    return None


class Scheduler:
    """The schedules' state and what the loop does at each tick, with the clock, the way a
    run starts and the notifications given: the tests drive it with a fake clock."""

    def __init__(self, schedules, clock=local_now, launch=None, notify=None, previous=None):
        self.clock, self.launch, self.send = clock, launch, notify
        self.stopping = False
        self.schedules = {s["name"]: s for s in schedules}
        self.runs = {}
        at = clock()
        known = (previous or {}).get("schedules", {})
        self.status = {}
        for name, s in self.schedules.items():
            entry = dict(known.get(name, {}))
            # A run the last scheduler had under way ended with it.
            entry.update(cron=s["cron"], command=list(s["command"]), timeout=self.timeout(s), running=False,
                         next=iso(next_run(s["cron"], at)))
            entry.setdefault("skipped", 0)
            entry.setdefault("failures", 0)
            self.status[name] = entry

    @staticmethod
    def timeout(schedule):
        return int(schedule.get("timeout") or 3600)

    def tick(self):
        """Ends what ended, kills what overran, starts what is due. Returns whether anything
        changed (the status file is to be written)."""
        at = self.clock()
        changed = False
        for name, schedule in self.schedules.items():
            entry = self.status[name]
            run = self.runs.get(name)
            if run is not None:
                changed |= self._watch(name, run, at)
            due = parsed(entry["next"])
            if at >= due and not self.stopping:
                if name in self.runs:
                    entry["skipped"] += 1
                    say(f"{name}: due at {iso(due)} while its last run still goes: skipped "
                        f"({entry['skipped']} so far)")
                else:
                    self._start(name, schedule, at)
                entry["next"] = iso(next_run(schedule["cron"], at))
                changed = True
        return changed

    def _start(self, name, schedule, at):
        entry = self.status[name]
        say(f"{name}: starting manage.py {' '.join(schedule['command'])}")
        entry.update(last_start=iso(at), last_end=None, exit=None, duration=None, running=True, last_output=None)
        self.runs[name] = {"process": self.launch(name, schedule["command"]), "started": at,
                           "deadline": at + datetime.timedelta(seconds=self.timeout(schedule)), "timed_out": False}

    def _watch(self, name, run, at):
        process = run["process"]
        code = process.poll()
        if code is None:
            if at >= run["deadline"] and not run["timed_out"]:
                say(f"{name}: still going after its timeout of {self.timeout(self.schedules[name])} s: killed")
                run["timed_out"] = True
                process.kill()
            return False
        del self.runs[name]
        entry = self.status[name]
        entry["last_output"] = getattr(process, "last_line", None)
        ok, error = outcome(entry, code, run["timed_out"], self.timeout(self.schedules[name]))
        was_failing = entry["failures"] > 0
        duration = round((at - run["started"]).total_seconds(), 1)
        entry.update(last_end=iso(at), exit=code, duration=duration, running=False)
        if ok:
            entry.update(failures=0, last_error=None, last_success=iso(at))
        else:
            entry.update(failures=entry["failures"] + 1, last_error=error, last_failure=iso(at))
        say(f"{name}: " + (f"done in {duration} s" if ok else f"FAILED after {duration} s: {error}"))
        message = news(name, was_failing, ok, error, iso(at))
        if message is not None and self.send is not None:
            self.send(*message)
        return True

    @property
    def busy(self):
        return bool(self.runs)

    def document(self):
        return {"updated": iso(self.clock()), "stopping": self.stopping, "schedules": self.status}


def verdict(document, at):
    """The status DOCUMENT as `status` prints it, at AT: each schedule `failing` (its last run
    failed) and `overdue` (its next run is more than LATE seconds past: nothing started it);
    `stale` when the scheduler has not written for STALE seconds (it is not running)."""
    updated = parsed(document.get("updated"))
    stale = updated is None or (at - updated).total_seconds() > STALE
    for entry in document.get("schedules", {}).values():
        due = parsed(entry.get("next"))
        entry["failing"] = bool(entry.get("failures"))
        entry["overdue"] = due is not None and (at - due).total_seconds() > LATE
    # Before the scheduler first writes, the document has no schedules yet: say so, same shape.
    return {"schedules": {}, **document, "stale": stale}


# -- the real parts: child processes, notifications, files --------------------------------

class Run:
    """A manage.py run: its output goes to the scheduler's, each line after the schedule's
    name, the last one kept for the notification of a failure."""

    def __init__(self, name, command):
        self.process = subprocess.Popen([PYTHON, "manage.py", *command], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, text=True, errors="replace")
        self.last_line = None
        self.reader = threading.Thread(target=self._echo, args=(name,), daemon=True)
        self.reader.start()

    def _echo(self, name):
        for line in self.process.stdout:
            line = line.rstrip()
            if line:
                self.last_line = line[-300:]
                print(f"[{name}] {line}", flush=True)

    def poll(self):
        code = self.process.poll()
        if code is not None:
            self.reader.join(timeout=5)
        return code

    def kill(self):
        # Its own session: the command's children go with it.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def notify(title, body, path=NOTIFY_FILE):
    try:
        with open(path) as f:
            urls = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return
    if not urls:
        return
    try:
        import apprise

        sender = apprise.Apprise()
        for url in urls:
            sender.add(url)
        if not sender.notify(title=title, body=body):
            say("notification: apprise could not deliver it")
    except Exception as exc:  # a notification must never stop the schedules
        say(f"notification failed: {exc}")


def touch(path):
    with open(path, "a"):
        os.utime(path)


def schedule():
    scheduler = Scheduler(load_schedules(os.environ.get("STACK_SCHEDULES")), launch=Run, notify=notify,
                          previous=read_json(STATUS_FILE))

    def stop(*_):
        if not scheduler.stopping:
            say("stopping: no run starts any more" + (", waiting for those under way" if scheduler.busy else ""))
        scheduler.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for name, entry in scheduler.status.items():
        say(f"{name}: {entry['cron']!r}, manage.py {' '.join(entry['command'])}, next at {entry['next']}")
    write_json(STATUS_FILE, scheduler.document())
    beat = 0.0
    while not (scheduler.stopping and not scheduler.busy):
        changed = scheduler.tick()
        if changed or time.monotonic() - beat >= BEAT:
            write_json(STATUS_FILE, scheduler.document())
            touch(HEARTBEAT)
            beat = time.monotonic()
        time.sleep(TICK)
    write_json(STATUS_FILE, scheduler.document())
    say("stopped")
    return 0


def status():
    document = read_json(STATUS_FILE)
    print(json.dumps(verdict(document, local_now()), sort_keys=True))
    return 0


def main(argv):
    commands = {"schedule": schedule, "status": status}
    command = argv[0] if argv else "schedule"
    if command not in commands or len(argv) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return commands[command]()
    except (ValueError, OSError) as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
