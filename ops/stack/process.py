"""Background processes of the local stack: started detached, logged to a file,
remembered by PID file, stopped by PID."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from topics.errors import StackError

_LAUNCHED: dict[str, subprocess.Popen[bytes]] = {}
"""The services this process started, by name: kept (and reaped once they exit) so a long-lived
caller (a chaos run restarting a killed broker) neither leaks zombies nor drops a running child."""


@atexit.register
def _leave_running() -> None:
    """The services still running outlive this process on purpose (the stack stays up): their
    handles are let go without the "still running" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        _LAUNCHED.clear()


@dataclass(frozen=True)
class ManagedProcess:
    """One long-running service process: its PID file and its log file."""

    name: str
    pidfile: Path
    logfile: Path

    def pid(self) -> int | None:
        """The PID from the PID file, if that process is alive."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> int:
        """Start `argv` detached (own session), stdout and stderr appended to the log."""
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(env or {})},
                    cwd=cwd,
                    user=user,
                    start_new_session=True,
                )
            except OSError as e:
                raise StackError(f"{self.name}: cannot start {argv[0]}: {e}") from e
        self.pidfile.write_text(f"{proc.pid}\n")
        previous = _LAUNCHED.get(self.name)
        if previous is not None:
            previous.poll()
        _LAUNCHED[self.name] = proc
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`; True if a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        if not wait_until(lambda: not _alive(pid), timeout):
            _signal_group(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10)
        self.reap()
        self.pidfile.unlink(missing_ok=True)
        return True

    def reap(self) -> None:
        """Collect the exit status of this service if this process started it and it exited."""
        launched = _LAUNCHED.get(self.name)
        if launched is not None and launched.poll() is not None:
            del _LAUNCHED[self.name]

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; True if it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
