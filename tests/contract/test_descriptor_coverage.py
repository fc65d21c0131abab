"""Every RPC of the generated service descriptors is implemented, served, reflected and called by a test.

Servicers are the classes named *Servicer in server/entrypoints/grpc_api/ (servicers.py and its siblings).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import topmail.tracking.v1
from server.entrypoints import grpc_api
from tests.contract.tooling import REPOSITORY_ROOT
from tests.support import RunningServer

TESTS_DIR = REPOSITORY_ROOT / "tests"
# Sources searched for stub calls: Python tests and the Node.js client test, not installed packages.
TEST_SOURCE_SUFFIXES = (".py", ".mjs")


def generated_services() -> list[ServiceDescriptor]:
    """Return every service of the generated `topmail.tracking.v1` modules, sorted by full name."""
    services: dict[str, ServiceDescriptor] = {}
    for module_info in pkgutil.iter_modules(topmail.tracking.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"topmail.tracking.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = service
    return [services[name] for name in sorted(services)]


SERVICES = generated_services()
METHODS = [method for service in SERVICES for method in service.methods]


def servicer_classes() -> list[type]:
    """Return the classes named *Servicer in the modules of the gRPC entrypoint package."""
    classes: list[type] = []
    for module_info in pkgutil.iter_modules(grpc_api.__path__):
        module = importlib.import_module(f"{grpc_api.__name__}.{module_info.name}")
        classes.extend(
            value
            for name, value in vars(module).items()
            if inspect.isclass(value) and value.__module__ == module.__name__ and name.endswith("Servicer")
        )
    return classes


def test_generated_services_found() -> None:
    names = {service.full_name for service in SERVICES}

    assert {"topmail.tracking.v1.ContactService", "topmail.tracking.v1.TrackingService"} <= names


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.full_name)
def test_service_has_servicer(service: ServiceDescriptor) -> None:
    rpc_names = {method.name for method in service.methods}
    missing_by_class = {
        servicer.__name__: sorted(name for name in rpc_names if not callable(getattr(servicer, name, None)))
        for servicer in servicer_classes()
    }

    complete = [name for name, missing in missing_by_class.items() if not missing]
    assert complete, (
        f"no servicer in {grpc_api.__name__} implements every RPC of {service.full_name}: {missing_by_class}"
    )


def _call_without_credentials(channel: grpc.Channel, method: MethodDescriptor) -> grpc.StatusCode:
    """Call the RPC with an empty request and no API key; return the status code it ends with."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    passthrough = {"request_serializer": lambda raw: raw, "response_deserializer": lambda raw: raw}
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, **passthrough)(iter([b""]), timeout=5))
        elif method.client_streaming:
            channel.stream_unary(path, **passthrough)(iter([b""]), timeout=5)
        elif method.server_streaming:
            list(channel.unary_stream(path, **passthrough)(b"", timeout=5))
        else:
            channel.unary_unary(path, **passthrough)(b"", timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_server_serves_every_rpc(grpc_server: RunningServer) -> None:
    with grpc.insecure_channel(grpc_server.address) as channel:
        codes = {method.full_name: _call_without_credentials(channel, method) for method in METHODS}

    unimplemented = [name for name, code in codes.items() if code == grpc.StatusCode.UNIMPLEMENTED]
    assert unimplemented == []


def _test_sources() -> dict[Path, str]:
    return {
        path: path.read_text(encoding="utf-8")
        for path in sorted(TESTS_DIR.rglob("*"))
        if path.suffix in TEST_SOURCE_SUFFIXES
        and "node_modules" not in path.parts
        and path.resolve() != Path(__file__).resolve()
    }


TEST_SOURCES = _test_sources()


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.full_name)
def test_rpc_is_called_by_a_test(method: MethodDescriptor) -> None:
    stub_call = re.compile(rf"\.{method.name}\(")

    callers = [path for path, source in TEST_SOURCES.items() if stub_call.search(source)]

    assert callers, f"no test under {TESTS_DIR} calls .{method.name}( on a stub"


def _reflect(stub: reflection_pb2_grpc.ServerReflectionStub, **request: str) -> reflection_pb2.ServerReflectionResponse:
    responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10))
    assert len(responses) == 1
    assert not responses[0].HasField("error_response"), responses[0].error_response.error_message
    return responses[0]


def test_reflection_lists_every_service(grpc_server: RunningServer) -> None:
    with grpc.insecure_channel(grpc_server.address) as channel:
        response = _reflect(reflection_pb2_grpc.ServerReflectionStub(channel), list_services="")

    names = {service.name for service in response.list_services_response.service}
    assert {service.full_name for service in SERVICES} <= names
    assert health_pb2.DESCRIPTOR.services_by_name["Health"].full_name in names


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.full_name)
def test_reflection_serves_every_rpc(grpc_server: RunningServer, service: ServiceDescriptor) -> None:
    with grpc.insecure_channel(grpc_server.address) as channel:
        response = _reflect(reflection_pb2_grpc.ServerReflectionStub(channel), file_containing_symbol=service.full_name)

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(serialized)
        for serialized in response.file_descriptor_response.file_descriptor_proto
    ]
    reflected = {
        f"{file.package}.{reflected_service.name}": [method.name for method in reflected_service.method]
        for file in files
        for reflected_service in file.service
    }
    assert reflected.get(service.full_name) == [method.name for method in service.methods]
