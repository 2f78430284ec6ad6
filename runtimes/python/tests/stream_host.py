"""A small stream-protocol HOST for tests: the gRPC server a worker dials into.

:class:`Host` listens on 127.0.0.1 and accepts ``EventStream`` calls; each is
a :class:`HostStream` that records what the worker sends and sends what the
test tells it to. :class:`StreamWorker` starts the real runtime with the
host's launch arguments, in its own process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from polyfn_runtime.protos.azure import FunctionRpc_pb2 as rpc

StreamingMessage = rpc.StreamingMessage
MAX_MESSAGE_LENGTH = 2**31 - 1
TIMEOUT = 10.0
SERVICE = "AzureFunctionsRpcMessages.FunctionRpc"


def new_id(prefix: str = "id") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def kind(message: StreamingMessage) -> str | None:
    return message.WhichOneof("content")


class HostStream:
    """One worker's EventStream, seen from the host."""

    def __init__(self, request_iterator: Iterator[StreamingMessage], context: grpc.ServicerContext) -> None:
        self.context = context
        self.received: list[StreamingMessage] = []
        self.ended = False  # the worker closed its side (or the call ended)
        self._cond = threading.Condition()
        self._outbox: queue.SimpleQueue[StreamingMessage | None] = queue.SimpleQueue()
        threading.Thread(target=self._pump, args=(request_iterator,), daemon=True).start()

    def _pump(self, request_iterator: Iterator[StreamingMessage]) -> None:
        try:
            for message in request_iterator:
                with self._cond:
                    self.received.append(message)
                    self._cond.notify_all()
        except grpc.RpcError:
            pass
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()
            self._outbox.put(None)  # the worker is done: end the call

    def responses(self) -> Iterator[StreamingMessage]:
        while (message := self._outbox.get()) is not None:
            yield message

    # -- sending -----------------------------------------------------------

    def send(self, message: StreamingMessage) -> str:
        if not message.request_id:
            message.request_id = new_id("req")
        self._outbox.put(message)
        return message.request_id

    def close(self) -> None:
        self._outbox.put(None)

    # -- receiving ---------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[StreamingMessage], bool], timeout: float = TIMEOUT, what: str = "a message"
    ) -> StreamingMessage:
        found = self.wait_for_all(predicate, 1, timeout, what)
        return found[0]

    def wait_for_all(
        self,
        predicate: Callable[[StreamingMessage], bool],
        count: int,
        timeout: float = TIMEOUT,
        what: str = "messages",
    ) -> list[StreamingMessage]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [message for message in self.received if predicate(message)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [kind(message) for message in self.received]
                    pytest.fail(f"timed out after {timeout}s waiting for {count} x {what}; received {kinds}")
                self._cond.wait(remaining)

    def wait_ended(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"the worker did not close the stream within {timeout}s")
                self._cond.wait(remaining)

    def response_to(self, request_id: str, content: str, timeout: float = TIMEOUT) -> Any:
        message = self.wait_for(
            lambda m: m.request_id == request_id and kind(m) == content, timeout, f"{content} to {request_id}"
        )
        return getattr(message, content)

    def logs(self, predicate: Callable[[rpc.RpcLog], bool] = lambda r: True) -> list[rpc.RpcLog]:
        with self._cond:
            return [m.rpc_log for m in self.received if kind(m) == "rpc_log" and predicate(m.rpc_log)]

    def wait_for_log(self, predicate: Callable[[rpc.RpcLog], bool], what: str = "an RpcLog") -> rpc.RpcLog:
        return self.wait_for(lambda m: kind(m) == "rpc_log" and predicate(m.rpc_log), what=what).rpc_log

    # -- conversations -----------------------------------------------------

    def init(self) -> rpc.WorkerInitResponse:
        request = StreamingMessage()
        request.worker_init_request.host_version = "test-host"
        request.worker_init_request.capabilities["RpcHttpBodyOnly"] = "true"
        return self.response_to(self.send(request), "worker_init_response")

    def load(
        self,
        function_id: str,
        directory: str,
        entry_point: str,
        name: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> Any:
        request = StreamingMessage()
        load = request.function_load_request
        load.function_id = function_id
        fill_metadata(load.metadata, function_id if name is None else name, directory, entry_point)
        load.metadata.properties.update(properties or {})
        return self.response_to(self.send(request), "function_load_response")

    def invoke(
        self,
        function_id: str,
        payload: bytes | None = b"",
        metadata: Mapping[str, Any] | None = None,
        invocation_id: str | None = None,
    ) -> tuple[str, str]:
        """Send an InvocationRequest; return (invocation id, request id)."""
        invocation_id = invocation_id or new_id("inv")
        request = StreamingMessage()
        invocation = request.invocation_request
        invocation.invocation_id = invocation_id
        invocation.function_id = function_id
        if payload is not None:
            binding = invocation.input_data.add(name="event")
            binding.data.bytes = payload
        for key, value in (metadata or {}).items():
            set_typed(invocation.trigger_metadata[key], value)
        return invocation_id, self.send(request)

    def result(self, invocation_id: str, timeout: float = TIMEOUT) -> rpc.InvocationResponse:
        message = self.wait_for(
            lambda m: kind(m) == "invocation_response" and m.invocation_response.invocation_id == invocation_id,
            timeout,
            f"the response to {invocation_id}",
        )
        return message.invocation_response

    def call(self, function_id: str, payload: bytes | None = b"", **kwargs: Any) -> rpc.InvocationResponse:
        invocation_id, _ = self.invoke(function_id, payload, **kwargs)
        return self.result(invocation_id)


def fill_metadata(metadata: rpc.RpcFunctionMetadata, name: str, directory: str, entry_point: str) -> None:
    """RpcFunctionMetadata as polyfn's host sends it (docs/protocols.md)."""
    metadata.name = name
    metadata.directory = directory
    metadata.entry_point = entry_point
    metadata.language = "python"
    metadata.bindings["event"].type = "polyfn"
    metadata.bindings["event"].direction = rpc.BindingInfo.Direction.Value("in")
    metadata.bindings["event"].data_type = rpc.BindingInfo.binary
    metadata.bindings["$return"].type = "polyfn"
    metadata.bindings["$return"].direction = rpc.BindingInfo.out
    metadata.bindings["$return"].data_type = rpc.BindingInfo.binary
    metadata.properties["polyfn"] = "1"


def set_typed(data: rpc.TypedData, value: Any) -> None:
    """The TypedData polyfn's host uses: string, int, or json for objects."""
    if isinstance(value, str):
        data.string = value
    elif isinstance(value, bool) or not isinstance(value, int):
        data.json = json.dumps(value)
    else:
        data.int = value


class Host:
    """The gRPC server end of the stream protocol."""

    def __init__(self) -> None:
        self._streams: queue.SimpleQueue[HostStream] = queue.SimpleQueue()
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="test-host")
        self.server = grpc.server(
            self._executor,
            options=(
                ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
                ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
            ),
        )
        handler = grpc.stream_stream_rpc_method_handler(
            self._event_stream,
            request_deserializer=StreamingMessage.FromString,
            response_serializer=StreamingMessage.SerializeToString,
        )
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"EventStream": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _event_stream(
        self, request_iterator: Iterator[StreamingMessage], context: grpc.ServicerContext
    ) -> Iterator[StreamingMessage]:
        stream = HostStream(request_iterator, context)
        self._streams.put(stream)
        yield from stream.responses()

    def accept(self, worker: StreamWorker | None = None, timeout: float = TIMEOUT) -> HostStream:
        """The next stream a worker opens."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._streams.get(timeout=0.05)
            except queue.Empty:
                pass
            if worker is not None and worker.process.poll() is not None:
                pytest.fail(f"worker exited with {worker.process.returncode}; stderr:\n{worker.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no stream within {timeout}s" + (f"; stderr:\n{worker.stderr()}" if worker else ""))

    def stop(self) -> None:
        self.server.stop(0).wait()
        self._executor.shutdown(wait=False, cancel_futures=True)


def launch_args(port: int, worker_id: str, request_id: str, spelling: str = "both") -> list[str]:
    """The worker arguments polyfn's host passes (docs/protocols.md), in one or both spellings.

    ``polyfn``: both spellings without the worker id, which polyfn's host
    passes to its own runtimes in ``POLYFN_WORKER_ID`` (see :class:`StreamWorker`).
    """
    if spelling == "polyfn":
        return [
            arg
            for arg in launch_args(port, worker_id, request_id, "both")
            if arg not in (worker_id, "--workerId", "--functions-worker-id")
        ]
    classic = ["--host", "127.0.0.1", "--port", str(port), "--workerId", worker_id, "--requestId", request_id]
    classic += ["--grpcMaxMessageLength", str(MAX_MESSAGE_LENGTH)]
    functions = [f"--functions-uri=http://127.0.0.1:{port}/", "--functions-worker-id", worker_id]
    functions += ["--functions-request-id", request_id, "--functions-grpc-max-message-length", str(MAX_MESSAGE_LENGTH)]
    return {"both": classic + functions, "classic": classic, "functions": functions}[spelling]


class StreamWorker:
    """The real runtime in stream mode, in its own process group (always kill() it)."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        *,
        spelling: str = "both",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.worker_id = new_id("worker")
        self.request_id = new_id("start")
        self.stderr_path = workdir / f"{self.worker_id}.stderr"
        self.stdout_path = workdir / f"{self.worker_id}.stdout"
        process_env = {key: value for key, value in os.environ.items() if not key.startswith("BAETYL_")}
        process_env.update(env or {})
        if spelling == "polyfn":
            process_env["POLYFN_WORKER_ID"] = self.worker_id
        command = [sys.executable, "-m", "polyfn_runtime"]
        command += launch_args(port, self.worker_id, self.request_id, spelling) + list(extra_args)
        with open(self.stderr_path, "wb") as stderr, open(self.stdout_path, "wb") as stdout:
            self.process = subprocess.Popen(
                command,
                cwd=workdir,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )

    def kill(self) -> None:
        """Kill the whole process group; safe to call more than once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=TIMEOUT)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not exit within {timeout}s; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr().splitlines() if line.startswith("{")]
