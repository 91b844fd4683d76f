"""deploykit engine watchdog: PID 1 of a deployment's container, the engine is its child.

Why: Docker restarts a container whose main process exits (restart: on-failure:N) but does
nothing for a container that is merely "unhealthy" (a hung engine, a dead EngineCore behind a
live API server). This supervisor polls the engine's /health from inside the container and,
after FAILURES failed polls in a row, stops the engine and exits non-zero, so the restart policy
applies. It also makes `kill -9 <engine>` inside the container a normal crash (as PID 1 the
engine itself could not be killed from inside) and reaps orphaned grandchildren.

This file runs as ``python3 -c <this source> [options] -- <engine argv...>`` (the compose
service's entrypoint; the argv stays an exec-form list, no shell). It must therefore use only
the standard library of the oldest Python in a vLLM image (3.8) and contain no dollar sign
(Compose would interpolate it). Options: --port N (container port of /health), --grace S
(seconds a first start may take before failures count), --interval S, --timeout S,
--failures N.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request

EXIT_UNHEALTHY = 70  # non-zero: Docker's on-failure policy restarts; triage matches the log line
DEFAULTS = {"port": 8000, "grace": 600.0, "interval": 10.0, "timeout": 10.0, "failures": 3}
STARTING_POLL_S = 2.0  # until the engine first answers


def say(text):
    sys.stderr.write("deploykit-watchdog: " + text + "\n")
    sys.stderr.flush()


def parse_args(args):
    """(options, engine argv) from ``[--name value ...] -- argv...``."""
    opts = dict(DEFAULTS)
    if "--" not in args:
        raise SystemExit("deploykit-watchdog: usage: [--port N ...] -- ENGINE ARGV...")
    split = args.index("--")
    head, cmd = args[:split], args[split + 1:]
    if not cmd or len(head) % 2:
        raise SystemExit("deploykit-watchdog: no engine command after --, or an option without value")
    for i in range(0, len(head), 2):  # (no zip(strict=): Python 3.8 images)
        key, value = head[i], head[i + 1]
        name = key.lstrip("-")
        if name not in DEFAULTS:
            raise SystemExit("deploykit-watchdog: unknown option " + key)
        opts[name] = type(DEFAULTS[name])(value)
    return opts, cmd


def healthy(port, timeout):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=timeout) as resp:
            return resp.status == 200, "HTTP %d" % resp.status
    except Exception as exc:  # any failure to answer 200 in time is a failed poll
        return False, type(exc).__name__ + ": " + str(exc)[:200]


def exit_code(status):
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def reap(child_pid):
    """Reap every exited process (we are PID 1); the engine's exit code once it has exited."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 1
        if pid == 0:
            return None
        if pid == child_pid:
            return exit_code(status)


def stop(child, grace=20.0):
    forward(child, signal.SIGTERM)
    forward(child, signal.SIGCONT)  # a stopped (SIGSTOP) engine handles TERM only once continued
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap(child.pid) is not None:
            return
        time.sleep(0.2)
    child.kill()


class Health:
    """Consecutive failed polls; failures count once the engine answered once or the grace ended."""

    def __init__(self, opts, now):
        self.opts, self.started, self.seen_ok, self.failed = opts, now, False, 0

    def record(self, ok, now):
        if ok:
            self.seen_ok, self.failed = True, 0
        elif self.seen_ok or now - self.started > self.opts["grace"]:
            self.failed += 1
        return self.failed >= self.opts["failures"]


def forward(child, signum):
    try:
        child.send_signal(signum)
    except OSError:  # already gone: the loop reaps it and exits with its code
        pass


def supervise(opts, cmd):
    child = subprocess.Popen(cmd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: forward(child, signum))
    health = Health(opts, time.monotonic())
    starting_poll = min(STARTING_POLL_S, opts["interval"])
    next_poll = time.monotonic() + starting_poll
    while True:
        code = reap(child.pid)
        if code is not None:
            say("engine exited with code %d" % code)
            return code
        now = time.monotonic()
        if now >= next_poll:
            was_ok = health.seen_ok
            ok, why = healthy(opts["port"], opts["timeout"])
            if ok and not was_ok:
                say("engine answers /health, %.0f s after start; watching it" % (now - health.started))
            if health.record(ok, time.monotonic()):
                say("/health failed %d times in a row (last: %s); stopping the engine so the restart "
                    "policy restarts the container" % (health.failed, why))
                stop(child)
                return EXIT_UNHEALTHY
            # starting: poll often (a refused connection costs nothing), so that a hang right after
            # start is not mistaken for a slow start until the grace ends
            next_poll = time.monotonic() + (opts["interval"] if health.seen_ok else starting_poll)
        time.sleep(0.5)


def main(args):
    opts, cmd = parse_args(args)
    return supervise(opts, cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
