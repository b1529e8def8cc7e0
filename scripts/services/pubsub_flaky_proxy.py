"""A gRPC proxy in front of the Pub/Sub emulator that ends streaming pulls, for Sluice's tests.

    python pubsub_flaky_proxy.py UPSTREAM PORT MODE [SECONDS]

Every RPC is forwarded to UPSTREAM (`127.0.0.1:8085`) as raw bytes. A StreamingPull stream is
ended by the proxy after its first response with messages, or after SECONDS (1.0) without one,
with the next status of MODE's cycle:

    cycle   OK (a clean end), UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, OK, ...
    ok      always a clean end
    deny    every StreamingPull is refused at once with PERMISSION_DENIED (a permanent error)

Prints `listening on PORT` once it serves; runs until killed. Needs grpcio (the cloudbox venv
has it).
"""

import asyncio
import itertools
import sys

import grpc

STREAMING_PULL = "/google.pubsub.v1.Subscriber/StreamingPull"


async def main():
    upstream, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    idle = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    channel = grpc.aio.insecure_channel(upstream)
    statuses = itertools.cycle(
        {
            "cycle": [None, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                      grpc.StatusCode.DEADLINE_EXCEEDED],
            "ok": [None],
            "deny": [grpc.StatusCode.PERMISSION_DENIED],
        }[mode]
    )

    def unary(method):
        call = channel.unary_unary(method)

        async def handle(request, context):
            try:
                return await call(request, timeout=30)
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")

        return grpc.unary_unary_rpc_method_handler(handle)

    async def streaming_pull(requests, context):
        status = next(statuses)
        if mode == "deny":
            await context.abort(status, "the flaky proxy refuses this stream")
        call = channel.stream_stream(STREAMING_PULL)(requests)
        try:
            while True:
                try:
                    response = await asyncio.wait_for(call.read(), timeout=idle)
                except asyncio.TimeoutError:
                    break
                if response is grpc.aio.EOF:
                    return
                yield response
                break
        finally:
            call.cancel()
        if status is not None:
            await context.abort(status, "the flaky proxy ended this stream")

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            if details.method == STREAMING_PULL:
                return grpc.stream_stream_rpc_method_handler(streaming_pull)
            return unary(details.method)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([Handler()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
