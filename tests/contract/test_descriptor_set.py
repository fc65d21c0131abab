"""The FileDescriptorSet of `make descriptors`: complete, self-contained, and with HTTP rules a transcoder can serve."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from server.entrypoints.gateway.app import PRODUCT_VIEW_PATH
from tests.contract.tooling import PROTOS_DIR, output_of, run_make

OUR_PACKAGE_PREFIX = "topmail."
# Field number of `service` in FileDescriptorProto, the first element of a service's source path.
SERVICE_FIELD_NUMBER = descriptor_pb2.FileDescriptorProto.SERVICE_FIELD_NUMBER
TEMPLATE_VARIABLE = re.compile(r"\{([A-Za-z_][\w.]*)(?:=[^}]*)?\}")


@dataclass(frozen=True)
class BuiltDescriptors:
    """The set that `make descriptors` wrote, and a pool loaded from it."""

    descriptor_set: descriptor_pb2.FileDescriptorSet
    pool: descriptor_pool.DescriptorPool

    def __repr__(self) -> str:
        # pytest prints fixture values on failure; the whole set would bury the assertion.
        return f"BuiltDescriptors({len(self.descriptor_set.file)} files)"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltDescriptors:
    output = tmp_path_factory.mktemp("descriptors") / "api.binpb"

    build = run_make("descriptors", DESCRIPTOR_SET=output)

    assert build.returncode == 0, output_of(build)
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(output.read_bytes())
    # protoc writes the files dependencies-first, the order a pool needs.
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_set.file:
        pool.Add(file)
    return BuiltDescriptors(descriptor_set, pool)


def our_files(descriptor_set: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    return [file for file in descriptor_set.file if file.package.startswith(OUR_PACKAGE_PREFIX)]


def our_methods(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> Iterator[tuple[str, descriptor_pb2.MethodDescriptorProto]]:
    """Yield (Service.Method, method) for every RPC of our packages."""
    for file in our_files(descriptor_set):
        for service in file.service:
            for method in service.method:
                yield f"{service.name}.{method.name}", method


def http_bindings(method: descriptor_pb2.MethodDescriptorProto) -> list[http_pb2.HttpRule]:
    """Return the method's `google.api.http` rule and its additional bindings; empty when it has none."""
    rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
    if rule.WhichOneof("pattern") is None:
        return []
    return [rule, *rule.additional_bindings]


def verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    verb = rule.WhichOneof("pattern")
    assert verb is not None
    if verb == "custom":
        return rule.custom.kind, rule.custom.path
    return verb, getattr(rule, verb)


def services_in_proto_sources() -> set[str]:
    """Return the full name of every service declared in the .proto files under protos/."""
    names: set[str] = set()
    for proto in PROTOS_DIR.rglob("*.proto"):
        text = proto.read_text(encoding="utf-8")
        package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
        assert package is not None, f"{proto} declares no package"
        names.update(f"{package.group(1)}.{name}" for name in re.findall(r"^service (\w+)", text, re.MULTILINE))
    return names


def test_descriptor_set_has_every_service(built: BuiltDescriptors) -> None:
    services = {f"{file.package}.{service.name}" for file in built.descriptor_set.file for service in file.service}

    assert services == services_in_proto_sources()


def test_descriptor_set_includes_imports(built: BuiltDescriptors) -> None:
    names = {file.name for file in built.descriptor_set.file}

    assert {
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
        "google/rpc/status.proto",
        "google/type/money.proto",
    } <= names
    unresolved = [
        f"{file.name} imports {dependency}"
        for file in built.descriptor_set.file
        for dependency in file.dependency
        if dependency not in names
    ]
    assert unresolved == []


def test_descriptor_set_loads_into_pool(built: BuiltDescriptors) -> None:
    service = built.pool.FindServiceByName("topmail.tracking.v1.TrackingService")

    assert service.FindMethodByName("TrackProductView") is not None


def test_descriptor_set_keeps_service_comments(built: BuiltDescriptors) -> None:
    uncommented = []
    for file in our_files(built.descriptor_set):
        comments = {tuple(location.path): location.leading_comments for location in file.source_code_info.location}
        for index, service in enumerate(file.service):
            if not comments.get((SERVICE_FIELD_NUMBER, index), "").strip():
                uncommented.append(f"{file.package}.{service.name}")

    assert uncommented == []


def test_every_rpc_has_http_rule(built: BuiltDescriptors) -> None:
    unmapped = [name for name, method in our_methods(built.descriptor_set) if not http_bindings(method)]

    assert unmapped == []


def test_product_view_rule_is_gateway_path(built: BuiltDescriptors) -> None:
    methods = dict(our_methods(built.descriptor_set))
    rule = methods["TrackingService.TrackProductView"].options.Extensions[annotations_pb2.http]

    assert rule.post == PRODUCT_VIEW_PATH
    assert rule.body == "*"
    assert list(rule.additional_bindings) == []


def test_http_rules_are_unique(built: BuiltDescriptors) -> None:
    owners: dict[tuple[str, str], list[str]] = {}
    for name, method in our_methods(built.descriptor_set):
        for rule in http_bindings(method):
            owners.setdefault(verb_and_path(rule), []).append(name)

    shared = {route: names for route, names in owners.items() if len(names) > 1}
    assert shared == {}


def test_http_rules_name_request_fields(built: BuiltDescriptors) -> None:
    problems = []
    for name, method in our_methods(built.descriptor_set):
        request_fields = built.pool.FindMessageTypeByName(method.input_type.lstrip(".")).fields_by_name
        for rule in http_bindings(method):
            verb, path = verb_and_path(rule)
            for variable in TEMPLATE_VARIABLE.findall(path):
                if variable.split(".")[0] not in request_fields:
                    problems.append(f"{name}: {path} names no request field {variable}")
            if rule.body not in ("", "*") and rule.body not in request_fields:
                problems.append(f"{name}: body {rule.body!r} is not a request field")
            if verb in ("get", "delete") and rule.body:
                problems.append(f"{name}: {verb.upper()} {path} must not have a body")

    assert problems == []
