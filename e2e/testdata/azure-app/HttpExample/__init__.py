# An Azure Functions (v1 model) function: polyfn's own runtime cannot load
# it, which is what the --index test relies on.
def main(req):
    return "hello"
