"""Does nothing: the function benchmarks measure the host around it."""


def handler(event, context):
    return None
