"""HTTP load with wrk against the tracking gateway and against nginx sending the same responses.

One Lua script drives both: each request takes a random tracking path, a random user agent
and a random client address in X-Forwarded-For, so hits spread over many contacts and
messages. nginx ignores the token and responds to every pixel path with the same 43-byte GIF and
every click path with the same 302, which is the least work any server can do for them.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.processes import find_tool
from server.entrypoints.gateway.app import PIXEL_GIF

REDIRECT_TARGET = "https://shop.example.com/products/1"

_NGINX_CONFIG = """\
# Written by the bench for one run. One worker process, like the gateway's one uvicorn process.
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client-body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/static;
        location /o/ {{
            default_type image/gif;
            add_header Cache-Control "no-store, no-cache, must-revalidate, private";
            try_files /pixel.gif =404;
        }}
        location /c/ {{
            add_header Cache-Control "no-store, no-cache, must-revalidate, private";
            return 302 {redirect};
        }}
    }}
}}
"""

_WRK_SCRIPT = """\
-- Written by the bench: random tracking path, user agent and client address per request.
local paths = {paths}
local agents = {agents}
local addresses = {addresses}
local thread_number = 0

function setup(thread)
    thread_number = thread_number + 1
    thread:set("seed", thread_number)
end

function init(args)
    math.randomseed(seed * 7919)
end

function request()
    local headers = {{}}
    headers["User-Agent"] = agents[math.random(#agents)]
    headers["X-Forwarded-For"] = addresses[math.random(#addresses)]
    return wrk.format("GET", paths[math.random(#paths)], headers)
end
"""


def write_nginx_config(prefix: Path, port: int) -> Path:
    """Write nginx.conf and the pixel under `prefix`; return the config path."""
    (prefix / "static").mkdir(parents=True, exist_ok=True)
    (prefix / "static" / "pixel.gif").write_bytes(PIXEL_GIF)
    config = prefix / "nginx.conf"
    config.write_text(_NGINX_CONFIG.format(prefix=prefix, port=port, redirect=REDIRECT_TARGET))
    return config


def write_wrk_script(path: Path, paths: Sequence[str], agents: Sequence[str], addresses: Sequence[str]) -> Path:
    path.write_text(
        _WRK_SCRIPT.format(paths=_lua_list(paths), agents=_lua_list(agents), addresses=_lua_list(addresses))
    )
    return path


def _lua_list(values: Sequence[str]) -> str:
    # A JSON string literal is a valid Lua string literal for the ASCII text used here.
    return "{" + ",\n".join(json.dumps(value) for value in values) + "}"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """Figures that wrk reported for one run."""

    requests: int
    duration_seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    # Responses other than 2xx and 3xx, and connect, read, write and timeout errors.
    bad_responses: int
    socket_errors: int


def run_wrk(url: str, script: Path, *, connections: int, threads: int, duration_seconds: int) -> WrkResult:
    """Run wrk with latency percentiles; raise RuntimeError when it fails or its output changes form."""
    command = [
        find_tool("wrk"),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration_seconds}s",
        "--timeout=10s",
        "--latency",
        f"--script={script}",
        url,
    ]
    completed = subprocess.run(  # noqa: S603 - fixed arguments built by the bench
        command, capture_output=True, text=True, timeout=duration_seconds + 60, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed with code {completed.returncode}: {completed.stderr.strip()}")
    return parse_wrk_output(completed.stdout)


def parse_wrk_output(output: str) -> WrkResult:
    totals = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m),", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", output, re.MULTILINE))
    if totals is None or rate is None or set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    duration = float(totals.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[totals.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(totals.group(1)),
        duration_seconds=duration,
        requests_per_second=float(rate.group(1)),
        p50_ms=_milliseconds(percentiles["50"]),
        p99_ms=_milliseconds(percentiles["99"]),
        bad_responses=int(bad.group(1)) if bad else 0,
        socket_errors=sum(int(count) for count in errors.groups()) if errors else 0,
    )


def _milliseconds(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise RuntimeError(f"unexpected wrk latency {value!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match.group(2)]
    return float(match.group(1)) * scale
