"""Paths of the contract checks and a runner for their make targets, shared by the contract tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.type import money_pb2

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
PROTOS_DIR = REPOSITORY_ROOT / "protos"
CONTRACT_TESTS_DIR = Path(__file__).resolve().parent
# The Makefile's install stamp: make must not reinstall the virtual environment under a running test.
VENV_STAMP = ".venv/.installed"


def googleapis_include_dir() -> Path:
    """Return the site-packages folder that contains the googleapis .proto files (google/type, google/rpc, ...)."""
    return Path(money_pb2.__file__).resolve().parents[2]


def run_make(target: str, timeout_seconds: float = 300, **variables: str | Path) -> subprocess.CompletedProcess[str]:
    """Run one make target of the repository with variable overrides; return the finished process."""
    command = [
        "make",
        "--no-print-directory",
        "-C",
        str(REPOSITORY_ROOT),
        f"--assume-old={VENV_STAMP}",
        f"PY={sys.executable}",
        target,
        *(f"{name}={value}" for name, value in variables.items()),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds, check=False)


def output_of(process: subprocess.CompletedProcess[str]) -> str:
    """Return a finished process's standard output and error, for assertion messages."""
    return f"stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
