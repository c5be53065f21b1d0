"""A gRPC greeter for xDS tests: servers that say which version answered, and a proxyless
client driven over stdin.

No .proto is compiled: the servers register a generic handler for
`/plait.testing.Greeter/SayHello` whose messages are raw bytes (the name in, "<version>"
out), so tests need neither grpcio-tools nor generated code.

The client runs as its own process (`python -m plait.testing.grpc_greeter client ...`)
because grpc's xDS client is a per-process singleton configured from the environment
when first used: one process per bootstrap keeps tests independent. It prints `ready`,
then answers each stdin line `call N [key=value ...]` (the pairs become request
metadata) with one JSON line:
{"versions": {"v1": 70, ...}, "errors": {"UNAVAILABLE": 3}, "last_error": "..."}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter

import grpc

METHOD = "/plait.testing.Greeter/SayHello"
SERVICE = "plait.testing.Greeter"


def _handler(version: str) -> grpc.GenericRpcHandler:
    async def say_hello(request: bytes, context) -> bytes:
        return version.encode()

    return grpc.method_handlers_generic_handler(SERVICE, {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
    })


async def start_greeter(version: str, host: str = "127.0.0.1", port: int = 0
                        ) -> tuple[grpc.aio.Server, int]:
    """Start a greeter answering `version`; returns (server, bound port). Stop it with
    `await server.stop(None)`."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_handler(version)])
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


def bootstrap(xds_port: int, *, node_id: str, metadata: dict | None = None) -> str:
    """A gRPC xDS bootstrap (JSON text) pointing at an ADS server on 127.0.0.1."""
    return json.dumps({
        "xds_servers": [{
            "server_uri": f"127.0.0.1:{xds_port}",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": node_id, "metadata": metadata or {}},
    })


def _calls(channel: grpc.Channel, count: int, metadata: list[tuple[str, str]],
           timeout: float) -> dict:
    call = channel.unary_unary(METHOD)
    versions: Counter = Counter()
    errors: Counter = Counter()
    detail = ""
    for _ in range(count):
        try:
            versions[call(b"plait", timeout=timeout, metadata=metadata).decode()] += 1
        except grpc.RpcError as exc:
            errors[exc.code().name] += 1
            detail = exc.details() or ""
    return {"versions": dict(versions), "errors": dict(errors), "last_error": detail}


def run_client(target: str, *, timeout: float) -> int:
    with grpc.insecure_channel(target) as channel:
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] != "call" or len(words) < 2 or not words[1].isdigit():
                print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
                continue
            metadata = [tuple(w.split("=", 1)) for w in words[2:] if "=" in w]
            print(json.dumps(_calls(channel, int(words[1]), metadata, timeout)), flush=True)
    return 0


async def _serve(version: str, port: int) -> int:
    server, bound = await start_greeter(version, port=port)
    print(f"ready port={bound}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plait.testing.grpc_greeter")
    sub = parser.add_subparsers(dest="command", required=True)
    client = sub.add_parser("client", help="call a target; commands on stdin")
    client.add_argument("target", help="e.g. xds:///greeter")
    client.add_argument("--timeout", type=float, default=5.0, help="per-call deadline (s)")
    serve = sub.add_parser("serve", help="run one greeter")
    serve.add_argument("--version", required=True)
    serve.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "client":
        return run_client(args.target, timeout=args.timeout)
    return asyncio.run(_serve(args.version, args.port))


if __name__ == "__main__":
    raise SystemExit(main())
