"""Returns the context the function saw, and its environment."""

import os


def handler(event, context):
    return {
        "context": dict(context),
        "env": {k: os.environ.get(k) for k in ("GREETING", "RUNTIME_VAR", "POLYFN_SECRET", "BAETYL_SERVICE_INSTANCE_NAME", "FUNCTIONS_WORKER_DIRECTORY")},
        "cwd": os.getcwd(),
    }
