"""Benchmark suite: `make bench` measures the service against a no-op gRPC server and nginx."""
