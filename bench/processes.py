"""Starting, watching and stopping the processes under test, each by its own PID."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

logger = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 20.0


def find_tool(name: str) -> str:
    """Return the path of a program on PATH or in /usr/sbin and /sbin, where Debian puts nginx."""
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        raise RuntimeError(f"{name} is not installed; run bench/install-tools or make bench")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now; a process started soon after can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class MemorySample:
    """Resident set size of a process at one moment, and the peak so far, in KiB."""

    rss_kib: int
    peak_rss_kib: int


class ManagedProcess:
    """A child process with its output in a log file; `stop` ends it and only it."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log_file:
            # A session of its own keeps Ctrl-C from reaching the child before the bench stops it in order.
            self._process = subprocess.Popen(  # noqa: S603 - the command is built by the bench, not from input
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        logger.info("started %s (pid %d), log %s", name, self._process.pid, log_path)

    @property
    def pid(self) -> int:
        return self._process.pid

    def check_running(self) -> None:
        """Raise RuntimeError with the end of the log when the process has exited."""
        code = self._process.poll()
        if code is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(
                f"{self.name} exited with code {code}; last lines of {self.log_path}:\n" + "\n".join(tail)
            )

    def memory(self) -> MemorySample | None:
        """Read VmRSS and VmHWM from /proc; None once the process has exited."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        values = {}
        for line in status.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        if len(values) != 2:
            return None
        return MemorySample(rss_kib=values["VmRSS"], peak_rss_kib=values["VmHWM"])

    def stop(self) -> None:
        """Send SIGTERM, wait for a graceful exit, and send SIGKILL to this PID only if it hangs."""
        if self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning(
                "%s (pid %d) did not stop within %.0f s; killing it", self.name, self.pid, STOP_TIMEOUT_SECONDS
            )
            os.kill(self.pid, signal.SIGKILL)
            self._process.wait()
        logger.info("stopped %s (pid %d), exit code %s", self.name, self.pid, self._process.returncode)


def wait_until(ready: Callable[[], bool], process: ManagedProcess, timeout_seconds: float, state: str) -> None:
    """Poll `ready` until it returns True; raise RuntimeError on timeout or when the process exits."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        process.check_running()
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{process.name} was not {state} within {timeout_seconds:.0f} s; see {process.log_path}")


def grpc_health_serving(target: str) -> Callable[[], bool]:
    """Return a probe that calls the standard health service and succeeds once the server is SERVING."""

    def probe() -> bool:
        with grpc.insecure_channel(target) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def grpc_channel_ready(target: str) -> Callable[[], bool]:
    """Return a probe that succeeds once an HTTP/2 connection to the target is up."""

    def probe() -> bool:
        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
            except grpc.FutureTimeoutError:
                return False
            return True

    return probe


def http_ok(url: str) -> Callable[[], bool]:
    """Return a probe that succeeds once GET `url` returns status 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - a loopback URL built by the bench
                return bool(response.status == 200)
        except OSError:
            return False

    return probe
