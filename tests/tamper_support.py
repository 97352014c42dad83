"""A tampering proxy: forwards every unary RPC to the real server and lets a test edit responses."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from consent_ledger.v1 import access_pb2, consent_pb2, log_pb2  # noqa: F401 - registers the descriptors

Mutation = Callable[[str, Message], None]


def _response_class(method: str) -> type[Message]:
    """The response message class of "/package.Service/Method"."""
    _, service, name = method.split("/")
    desc = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    return message_factory.GetMessageClass(desc.output_type)


class TamperProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mutate: Mutation = lambda method, resp: None
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: self.loop.run_until_complete(self._serve()), daemon=True)

    @contextlib.contextmanager
    def tampering(self, method: str, mutation: Callable[[Message], None]) -> Iterator[None]:
        """Apply ``mutation`` to every response of ``method`` (e.g. "CheckAccess") inside the block."""
        self.mutate = lambda m, resp: mutation(resp) if m == method else None
        try:
            yield
        finally:
            self.mutate = lambda m, resp: None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        channel = grpc.aio.insecure_channel(self.upstream)
        proxy = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):  # type: ignore[no-untyped-def]
                method = details.method
                cls = _response_class(method)
                upstream = channel.unary_unary(method)

                async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                    md = tuple((k, v) for k, v in context.invocation_metadata() or () if k.startswith("x-"))
                    try:
                        raw = await upstream(request, metadata=md)
                    except grpc.aio.AioRpcError as e:
                        await context.abort(e.code(), e.details() or "")
                    resp = cls.FromString(raw)
                    proxy.mutate(method.rsplit("/", 1)[1], resp)
                    return resp.SerializeToString()

                return grpc.unary_unary_rpc_method_handler(call)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((Handler(),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)
        await channel.close()

    def __enter__(self) -> TamperProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
