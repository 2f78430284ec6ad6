"""Warm round-trip latency of a no-op invocation, stream mode vs call mode.

    python tests/bench_stream.py [-n 3000] [--rounds 5]

Stream mode: an in-process grpc.aio HOST accepts the worker's EventStream,
loads a plain no-op twice (in the thread pool, and at ``polyfn.concurrency``
1, on the event loop's thread) and an ``async def`` one, then sends one
InvocationRequest at a time and waits for its InvocationResponse; the cases
take turns in rounds of ``n / rounds`` invocations, and each also reports the
worker's CPU time per invocation (``/proc/PID/stat``, utime + stime). Call mode, for comparison: a
grpc.aio client calls ``baetyl.Function/Call`` one at a time. Both measure on
the host side, from just before the request is written to just after the
response is read, after a warm-up. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from stream_host import MAX_MESSAGE_LENGTH, SERVICE, fill_metadata, launch_args

from polyfn_runtime.protos.azure import FunctionRpc_pb2 as rpc
from polyfn_runtime.protos.baetyl.function_pb2 import FunctionMessage

CODE = """
def noop(event, context):
    return None


async def anoop(event, context):
    return None
"""
WARMUP = 300


def summary(name: str, samples: list[float]) -> str:
    samples = sorted(samples)
    us = [s * 1e6 for s in samples]

    def pct(p: float) -> float:
        return us[min(len(us) - 1, int(p * len(us)))]

    return (
        f"{name:<28} n={len(us):>5}  mean {statistics.fmean(us):7.1f} µs  p50 {pct(0.5):7.1f}  "
        f"p90 {pct(0.9):7.1f}  p99 {pct(0.99):7.1f}"
    )


def start(command: list[str], workdir: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "stderr.log", "ab"),
        start_new_session=True,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def bench_stream(workdir: Path, count: int, rounds: int) -> list[str]:
    streams: asyncio.Queue[grpc.aio.ServicerContext] = asyncio.Queue()
    finished = asyncio.Event()

    async def event_stream(request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await streams.put(context)
        await finished.wait()

    server = grpc.aio.server(
        options=(
            ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
            ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
        )
    )
    handler = grpc.stream_stream_rpc_method_handler(
        event_stream,
        request_deserializer=rpc.StreamingMessage.FromString,
        response_serializer=rpc.StreamingMessage.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"EventStream": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    process = start([sys.executable, "-m", "polyfn_runtime", *launch_args(port, "w1", "r1")], workdir)
    try:
        stream = await asyncio.wait_for(streams.get(), 15)

        async def until(content: str) -> rpc.StreamingMessage:
            while True:
                message = await stream.read()
                if message.WhichOneof("content") == content:
                    return message

        await until("start_stream")
        init = rpc.StreamingMessage(request_id="init")
        init.worker_init_request.host_version = "bench"
        await stream.write(init)
        await until("worker_init_response")
        for function_id, entry_point, concurrency in (
            ("noop", "code.noop", "8"),
            ("noop-inline", "code.noop", "1"),
            ("anoop", "code.anoop", "8"),
        ):
            load = rpc.StreamingMessage(request_id=f"load-{function_id}")
            load.function_load_request.function_id = function_id
            fill_metadata(load.function_load_request.metadata, function_id, str(workdir), entry_point)
            load.function_load_request.metadata.properties["polyfn.concurrency"] = concurrency
            await stream.write(load)
            response = await until("function_load_response")
            assert response.function_load_response.result.status == rpc.StatusResult.Success, response

        cases = (
            ("noop", "stream, def, thread"),
            ("noop-inline", "stream, def, inline (c=1)"),
            ("anoop", "stream, async def handler"),
        )
        samples: dict[str, list[float]] = {function_id: [] for function_id, _ in cases}
        cpu: dict[str, float] = {function_id: 0.0 for function_id, _ in cases}
        per_round = max(1, count // rounds)
        for round_ in range(rounds + 1):  # round 0 is the warm-up
            for function_id, _ in cases:
                before = cpu_seconds(process.pid)
                kept = await invoke_n(stream, until, function_id, WARMUP if round_ == 0 else per_round, round_)
                if round_:
                    cpu[function_id] += cpu_seconds(process.pid) - before
                    samples[function_id] += kept
        lines = []
        for function_id, label in cases:
            per_invocation = cpu[function_id] / len(samples[function_id])
            lines.append(f"{summary(label, samples[function_id])}  worker CPU {per_invocation * 1e6:5.0f} µs")
        return lines
    finally:
        kill(process)
        finished.set()
        await server.stop(0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def invoke_n(stream: Any, until: Any, function_id: str, n: int, round_: int) -> list[float]:
    """Invoke ``function_id`` ``n`` times, one at a time; the round trips."""
    samples = []
    for i in range(n):
        request = rpc.StreamingMessage(request_id=f"r{i}")
        invocation = request.invocation_request
        invocation.invocation_id = f"inv-{function_id}-{round_}-{i}"
        invocation.function_id = function_id
        invocation.input_data.add(name="event").data.bytes = b'{"n": 1}'
        invocation.trigger_metadata["trigger"].string = "invoke"
        invocation.trigger_metadata["functionName"].string = function_id
        invocation.trigger_metadata["deadline"].string = "2099-01-01T00:00:00Z"
        began = time.perf_counter()
        await stream.write(request)
        response = await until("invocation_response")
        elapsed = time.perf_counter() - began
        assert response.invocation_response.result.status == rpc.StatusResult.Success, response
        samples.append(elapsed)
    return samples


async def bench_call(workdir: Path, count: int) -> list[str]:
    results = []
    for engine in ("threads", "asyncio"):
        with socket_port() as port:
            config = workdir / f"service-{engine}.yml"
            functions = [
                {"name": "noop", "handler": "code.noop", "codedir": str(workdir)},
                {"name": "anoop", "handler": "code.anoop", "codedir": str(workdir)},
            ]
            config.write_text(yaml.safe_dump({"functions": functions, "server": {"engine": engine}}))
            process = start(
                [sys.executable, "-m", "polyfn_runtime", "-c", str(config)],
                workdir,
                {"BAETYL_SERVICE_INSTANCE_ADDRESS": f"127.0.0.1:{port}"},
            )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await asyncio.wait_for(channel.channel_ready(), 15)
                stub = channel.unary_unary(
                    "/baetyl.Function/Call",
                    request_serializer=FunctionMessage.SerializeToString,
                    response_deserializer=FunctionMessage.FromString,
                )
                function_id = "noop" if engine == "threads" else "anoop"
                samples = []
                for i in range(WARMUP + count):
                    request = FunctionMessage(FunctionName=function_id, FunctionInvokeID=f"i{i}", Payload=b'{"n": 1}')
                    began = time.perf_counter()
                    await stub(request, timeout=10)
                    elapsed = time.perf_counter() - began
                    if i >= WARMUP:
                        samples.append(elapsed)
                kind = "def" if engine == "threads" else "async def"
                results.append(summary(f"call ({engine}), {kind} handler", samples))
        finally:
            kill(process)
    return results


@contextlib.contextmanager
def socket_port():  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000, help="measured invocations per case")
    parser.add_argument("--rounds", type=int, default=5, help="turns the stream cases take")
    parser.add_argument("--no-call", action="store_true", help="skip the call-mode comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="polyfn-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "code.py").write_text(textwrap.dedent(CODE))
        lines = asyncio.run(bench_stream(workdir, args.n, args.rounds))
        if not args.no_call:
            lines += asyncio.run(bench_call(workdir, args.n))
    print(f"python {sys.version.split()[0]}, grpcio {grpc.__version__}, {os.cpu_count()} CPUs")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
