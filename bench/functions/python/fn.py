"""The benchmark's Python functions (bench/polyfn.yaml)."""


def noop(event, context):
    """Does nothing: the benchmark measures the host and the runtime around it."""
    return None


def echo(event, context):
    """Returns the event: raw bytes (the harness sends non-JSON) come back as they are."""
    return event
