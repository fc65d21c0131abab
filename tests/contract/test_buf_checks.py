"""`make contract-lint` and `make contract-breaking` on copies of protos/, changed and unchanged."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.contract.tooling import PROTOS_DIR, output_of, run_make

CONTACT_PROTO = Path("topmail/tracking/v1/contact.proto")


@pytest.fixture
def protos_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS_DIR, copy)
    return copy


def check(target: str, protos: Path) -> subprocess.CompletedProcess[str]:
    return run_make(target, PROTOS_DIR=protos, CONTRACT_WORKSPACE=protos.parent / "buf-workspace")


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path} no longer contains {old!r} exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")


def add_package_version(protos: Path, version: str) -> Path:
    """Copy topmail.tracking.v1 to topmail.tracking.<version> next to it; return the new folder."""
    released = protos / "topmail/tracking/v1"
    bumped = protos / "topmail/tracking" / version
    shutil.copytree(released, bumped)
    for proto in bumped.glob("*.proto"):
        text = proto.read_text(encoding="utf-8")
        text = text.replace("topmail.tracking.v1", f"topmail.tracking.{version}")
        text = text.replace("topmail/tracking/v1/", f"topmail/tracking/{version}/")
        proto.write_text(text, encoding="utf-8")
    return bumped


def test_lint_passes_unchanged_protos(protos_copy: Path) -> None:
    result = check("contract-lint", protos_copy)

    assert result.returncode == 0, output_of(result)


def test_lint_rejects_unprefixed_enum_value(protos_copy: Path) -> None:
    replace_once(protos_copy / "topmail/tracking/v1/email_event.proto", "EMAIL_EVENT_TYPE_CLICKED = 3;", "CLICKED = 3;")

    result = check("contract-lint", protos_copy)

    assert result.returncode != 0, output_of(result)
    assert 'Enum value name "CLICKED" should be prefixed with "EMAIL_EVENT_TYPE_"' in result.stdout, output_of(result)


def test_breaking_passes_unchanged_protos(protos_copy: Path) -> None:
    result = check("contract-breaking", protos_copy)

    assert result.returncode == 0, output_of(result)


def test_breaking_rejects_renumbered_field(protos_copy: Path) -> None:
    replace_once(protos_copy / CONTACT_PROTO, "string email = 2;", "string email = 4;")

    result = check("contract-breaking", protos_copy)

    assert result.returncode != 0, output_of(result)
    assert 'Previously present field "2" with name "email" on message "Contact" was deleted' in result.stdout, (
        output_of(result)
    )
    assert "breaks the released contract" in result.stderr, output_of(result)


def test_breaking_allows_change_in_new_version(protos_copy: Path) -> None:
    bumped = add_package_version(protos_copy, "v2")
    replace_once(bumped / CONTACT_PROTO.name, "string email = 2;", "string email = 4;")

    result = check("contract-breaking", protos_copy)

    assert result.returncode == 0, output_of(result)


def test_breaking_rejects_removed_released_file(protos_copy: Path) -> None:
    add_package_version(protos_copy, "v2")
    shutil.rmtree(protos_copy / "topmail/tracking/v1")

    result = check("contract-breaking", protos_copy)

    assert result.returncode != 0, output_of(result)
    assert 'Previously present file "topmail/tracking/v1/contact.proto" was deleted' in result.stdout, output_of(result)
