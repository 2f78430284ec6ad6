"""Returns the event unchanged: JSON stays JSON, raw bytes stay bytes."""


def handler(event, context):
    return event
