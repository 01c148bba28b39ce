"""The process supervisor behind ``sdfleet up``: one orchestrator and N workers as child
processes, each restarted (with backoff) when it dies, all stopped in order on Ctrl-C/SIGTERM.

The pids are written to ``<data dir>/run/processes.json`` so operators (and tests) can see them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sdfleet.up")


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (Linux), so no orphans."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass(slots=True)
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    history: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        # own session: a Ctrl-C in the terminal reaches only the supervisor, which stops the
        # children in order (workers first, so they can hand back their jobs)
        self.process = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, preexec_fn=_die_with_parent
        )
        self.started_at = time.monotonic()
        self.history.append(self.process.pid)
        log.info("up.started name=%s pid=%d", self.name, self.process.pid)


class Supervisor:
    """Keeps its children running until :meth:`stop`."""

    def __init__(
        self,
        orchestrator: Child,
        workers: list[Child],
        state_file: Path,
        ready: Callable[[], bool],
        *,
        ready_timeout: float = 60.0,
    ):
        self.orchestrator = orchestrator
        self.workers = workers
        self.state_file = state_file
        self.ready = ready
        self.ready_timeout = ready_timeout
        self._stopping = False

    @property
    def children(self) -> list[Child]:
        return [self.orchestrator, *self.workers]

    def write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "supervisor": os.getpid(),
            "orchestrator": self.orchestrator.pid,
            "workers": {c.name: c.pid for c in self.workers},
            "restarts": {c.name: c.restarts for c in self.children},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.orchestrator.alive():
                return False
            if self.ready():
                return True
            time.sleep(0.1)
        return False

    def start(self) -> None:
        self.orchestrator.start()
        if not self.wait_ready():
            self.stop()
            raise RuntimeError("the orchestrator did not become ready; see its log above")
        for w in self.workers:
            w.start()
        self.write_state()

    def poll(self) -> None:
        """Restart every child that died (not while stopping)."""
        now = time.monotonic()
        changed = False
        for child in self.children:
            if self._stopping or child.alive() or now < child.next_start:
                continue
            if child.process is not None:
                code = child.process.returncode
                # a child that ran a while gets restarted at once; a crash loop backs off
                quick = now - child.started_at < 10
                delay = min(30.0, 2.0 ** min(child.restarts, 5)) if quick else 0.5
                if child.next_start <= child.started_at:
                    child.next_start = now + delay
                    log.warning("up.child_exited name=%s code=%s restart_in=%.1fs", child.name, code, delay)
                    continue
            child.restarts += 1
            child.start()
            changed = True
        if changed:
            self.write_state()

    def run(self, interval: float = 0.2) -> None:
        while not self._stopping:
            self.poll()
            time.sleep(interval)

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def stop(self, grace: float = 40.0) -> None:
        """Workers first (they release their jobs), then the orchestrator."""
        self._stopping = True
        for group in (self.workers, [self.orchestrator]):
            for child in group:
                if child.alive():
                    assert child.process is not None
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in group:
                if child.process is None:
                    continue
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("up.kill name=%s (did not stop within %.0fs)", child.name, grace)
                    child.process.kill()
                    child.process.wait()
        self.state_file.unlink(missing_ok=True)
