"""Same module name as kinds/index.py: the two must not clash."""


def whoami(event, context):
    return {"module": "kinds2"}
