"""A gRPC server that returns empty responses to TrackProductView and RecordEmailEvent.

It parses each request with the generated classes and touches no database, so its rate is
the ceiling that grpc.aio and protobuf in one Python process allow on the machine.

Run it with `python -m bench.noop_server --listen 127.0.0.1:PORT`; it stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from topmail.tracking.v1 import tracking_service_pb2

SERVICE_NAME = tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name
_EMPTY_VIEW = tracking_service_pb2.TrackProductViewResponse()
_EMPTY_EVENT = tracking_service_pb2.RecordEmailEventResponse()


async def track_product_view(
    _request: tracking_service_pb2.TrackProductViewRequest, _context: grpc.aio.ServicerContext[object, object]
) -> tracking_service_pb2.TrackProductViewResponse:
    return _EMPTY_VIEW


async def record_email_event(
    _request: tracking_service_pb2.RecordEmailEventRequest, _context: grpc.aio.ServicerContext[object, object]
) -> tracking_service_pb2.RecordEmailEventResponse:
    return _EMPTY_EVENT


def noop_handler() -> grpc.GenericRpcHandler[object, object]:
    """Return a handler for the two RPCs; every other RPC of the service returns UNIMPLEMENTED."""
    handlers = {
        "TrackProductView": grpc.unary_unary_rpc_method_handler(
            track_product_view,
            request_deserializer=tracking_service_pb2.TrackProductViewRequest.FromString,
            response_serializer=tracking_service_pb2.TrackProductViewResponse.SerializeToString,
        ),
        "RecordEmailEvent": grpc.unary_unary_rpc_method_handler(
            record_email_event,
            request_deserializer=tracking_service_pb2.RecordEmailEventRequest.FromString,
            response_serializer=tracking_service_pb2.RecordEmailEventResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


async def serve(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((noop_handler(),))
    server.add_insecure_port(listen)
    await server.start()
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop_requested.set)
    await stop_requested.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
