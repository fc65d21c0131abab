"""Settings resolution and the error table against the published ErrorReason enum."""

from __future__ import annotations

import argparse

import grpc
import pytest

from server.domain.errors import ContactNotFound, TrackingError
from server.entrypoints.error_table import ERROR_TABLE, INTERNAL_ERROR, mapping_for, mapping_for_reason
from server.entrypoints.settings import SETTING_SPECS, Settings, add_setting_flags, resolve_settings
from topmail.tracking.v1 import error_reason_pb2


def parse(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, [spec.name for spec in SETTING_SPECS])
    return parser.parse_args(arguments)


def test_defaults_without_flags_or_environment() -> None:
    assert resolve_settings(parse([]), environ={}) == Settings()


def test_environment_overrides_default() -> None:
    settings = resolve_settings(parse([]), environ={"TOPMAIL_DB_POOL_SIZE": "3", "TOPMAIL_LOG_FORMAT": "TEXT"})

    assert settings.db_pool_size == 3
    assert settings.log_format == "text"


def test_flag_overrides_environment() -> None:
    settings = resolve_settings(parse(["--db-pool-size", "7"]), environ={"TOPMAIL_DB_POOL_SIZE": "3"})

    assert settings.db_pool_size == 7


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TOPMAIL_DB_POOL_SIZE", "ten"), ("TOPMAIL_LOG_FORMAT", "xml"), ("TOPMAIL_LOG_LEVEL", "loud")],
)
def test_invalid_environment_value_names_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        resolve_settings(parse([]), environ={variable: value})


def test_every_setting_has_a_spec() -> None:
    assert [spec.name for spec in SETTING_SPECS] == list(Settings.__dataclass_fields__)


def test_reasons_match_the_published_enum() -> None:
    published = {
        name.removeprefix("ERROR_REASON_")
        for name in error_reason_pb2.ErrorReason.keys()  # noqa: SIM118 - an enum wrapper, not a dict
        if name != "ERROR_REASON_UNSPECIFIED"
    }
    mapped = {mapping.reason for mapping in ERROR_TABLE.values()} | {INTERNAL_ERROR.reason}

    assert mapped == published


def test_reasons_are_unique() -> None:
    reasons = [mapping.reason for mapping in ERROR_TABLE.values()]

    assert len(reasons) == len(set(reasons))


def test_unmapped_error_is_internal() -> None:
    assert mapping_for(KeyError("x")) is INTERNAL_ERROR
    assert mapping_for(TrackingError("x")) is INTERNAL_ERROR


def test_mapping_by_class_and_by_reason() -> None:
    mapping = mapping_for(ContactNotFound("email"))

    assert mapping.grpc_code == grpc.StatusCode.NOT_FOUND
    assert mapping_for_reason("CONTACT_NOT_FOUND") is mapping
    assert mapping_for_reason("NO_SUCH_REASON") is None
