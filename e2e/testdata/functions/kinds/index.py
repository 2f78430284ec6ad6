"""Functions that exercise every payload and return kind."""

import asyncio


def echo(event, context):
    return event


def returns(event, context):
    kind = event.get("kind") if isinstance(event, dict) else None
    if kind == "none":
        return None
    if kind == "bytes":
        return b"\x00raw\xffbytes"
    if kind == "str":
        return "hello"
    return {"kind": "dict", "n": [1, 2, 3]}


def fail(event, context):
    raise ValueError("bad input: " + str(event.get("why", "none")))


def fail_args(event, context):
    """Raises with arguments whose repr needs care: quotes, escapes, several of them."""
    raise ValueError(event.get("why", "none"), 2)


async def async_echo(event, context):
    await asyncio.sleep(0)
    return {"async": True, "event": event}


def whoami(event, context):
    return {"module": "kinds"}


def respond(event, context):
    return context.response({"created": event.get("name")}, status=201, headers={"x-kind": "py"})


def slow(event, context):
    import time

    time.sleep(0.3)
    return "done"


def thread(event, context):
    import threading

    return {"main": threading.current_thread() is threading.main_thread()}
