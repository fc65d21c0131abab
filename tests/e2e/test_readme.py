"""The README's first-call snippet, run as a user would against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine

from tests.support import RunningServer, create_workspace_key

README = Path(__file__).resolve().parents[2] / "README.md"


def first_call_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- first-call-snippet -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match is not None, "README lost its first-call snippet marker"
    return match.group(1)


def test_first_call_snippet_records_a_view(grpc_server: RunningServer, database_engine: Engine, tmp_path: Path) -> None:
    script = tmp_path / "first_call.py"
    script.write_text(first_call_snippet(), encoding="utf-8")
    environment = {
        **os.environ,
        "TOPMAIL_API_KEY": create_workspace_key(database_engine),
        "TOPMAIL_GRPC_TARGET": grpc_server.address,
    }

    runs = [
        subprocess.run(
            [sys.executable, str(script)], env=environment, capture_output=True, text=True, timeout=60, check=False
        )
        for _ in range(2)
    ]

    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert 'product_id: "prod_abc123"' in runs[0].stdout
    assert "units: 99" in runs[0].stdout
    # The snippet's idempotency key makes the second run return the same view.
    first_ids = re.findall(r'^id: "(.+)"$', runs[0].stdout, re.MULTILINE)
    second_ids = re.findall(r'^id: "(.+)"$', runs[1].stdout, re.MULTILINE)
    assert len(first_ids) == 1
    assert second_ids == first_ids
