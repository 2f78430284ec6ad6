"""Greets whoever is named in the event, and shows the context it saw."""

import os


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {
        "message": f"{os.environ.get('GREETING', 'Hello')}, {name}!",
        "context": dict(context),
    }
