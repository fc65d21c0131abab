"""A Node.js client (@grpc/grpc-js, stubs loaded from protos/ as they are) against a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from sqlalchemy import Engine

from tests.contract.tooling import CONTRACT_TESTS_DIR, PROTOS_DIR, googleapis_include_dir, output_of
from tests.support import RunningServer, create_workspace_key

NODE_CLIENT = CONTRACT_TESTS_DIR / "node_client.mjs"


def test_node_client_calls_and_errors(grpc_server: RunningServer, database_engine: Engine, node_modules: None) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH"

    environment = {
        **os.environ,
        "TOPMAIL_GRPC_TARGET": grpc_server.address,
        "TOPMAIL_API_KEY": create_workspace_key(database_engine),
        "TOPMAIL_PROTO_INCLUDE_DIRS": os.pathsep.join([str(PROTOS_DIR), str(googleapis_include_dir())]),
    }

    run = subprocess.run(
        [node, "--test-reporter=tap", str(NODE_CLIENT)],
        cwd=CONTRACT_TESTS_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, output_of(run)
    passed = re.search(r"^# pass (\d+)$", run.stdout, re.MULTILINE)
    assert passed is not None, output_of(run)
    assert int(passed.group(1)) > 0, output_of(run)
