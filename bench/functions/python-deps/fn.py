"""A no-op Python function with a third-party dependency (bench/polyfn.yaml)."""

import six  # noqa: F401  (imported at load: the cold start includes it)


def noop(event, context):
    """Does nothing: the benchmark measures the host and the runtime around it."""
    return None
