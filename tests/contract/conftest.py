"""Fixtures of the contract tests: the pinned Node.js packages of tests/contract/package-lock.json."""

from __future__ import annotations

import shutil

import pytest

from tests.contract.tooling import CONTRACT_TESTS_DIR, output_of, run_make


@pytest.fixture(scope="session")
def node_modules() -> None:
    """Install the pinned packages with `npm ci`, only when package-lock.json is newer than the last install."""
    for program in ("node", "npm"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not on PATH: the contract tests need Node.js 20 or newer with npm")

    install = run_make("node-modules")

    assert install.returncode == 0, f"npm ci failed in {CONTRACT_TESTS_DIR}\n{output_of(install)}"
