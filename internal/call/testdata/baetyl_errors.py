"""Regenerates baetyl_errors.json, the table TestParseBaetylError reads:

    python3 internal/call/testdata/baetyl_errors.py > internal/call/testdata/baetyl_errors.json

For each sample exception it records the gRPC status message a
Baetyl-convention Python runtime sends when a function raises it: the
runtime raises Exception("[UserCodeInvoke] ", err) and grpc's sync server
reports "Exception calling application: {}".format(exception) (see
grpc/_server.py, _call_behavior). Next to it, what the host must report:
the exception's type, and its message as the builtin base class's __str__
gives it from the arguments that repr shows (a custom __str__, and
OSError's filename, are not in the repr). Samples whose repr is not one the
host can read expect the raw message, type FunctionError.
"""

import json
import sys

PREFIX = "Exception calling application: "


class MyError(Exception):
    pass


class Pretty(Exception):
    def __str__(self):
        return "pretty, but the repr does not say so"


class Weird(Exception):
    def __repr__(self):
        return "<Weird code=5>"


class Odd(Exception):
    def __repr__(self):
        return "Odd('unterminated)"


class Kw(Exception):
    def __repr__(self):
        return "Kw(code=5)"


SAMPLES = [
    "ValueError('bad input')",
    "ValueError(\"it's\")",
    "ValueError('say \"hi\"')",
    "ValueError('both \\' and \"')",
    "ValueError('line1\\nline2\\r\\n')",
    "ValueError('a', 2)",
    "ValueError()",
    "ValueError(42)",
    "KeyError('missing')",
    "KeyError(('a', 1))",
    "RuntimeError('tab\\there, back\\\\slash')",
    "ValueError('unicode: é ü 日本 🎉')",
    "ValueError('\\x00\\x07\\x7f\\x9f control')",
    "ValueError('zero\\u200bwidth \\U000e0001 tag')",
    "TypeError(None)",
    "ValueError([1, 'two', {'k': (3,)}, {4}])",
    "ValueError((1, 2))",
    "ValueError(b'bytes\\xff\\n')",
    "MyError('mine')",
    "Pretty('x')",
    "RuntimeError(KeyError('k'))",
    "RuntimeError(ValueError('inner', 1))",
    "ValueError(frozenset({1}))",
    "OSError(2, 'No such file or directory')",
    "FileNotFoundError(2, 'No such file or directory')",
    "PermissionError('denied')",
    "ValueError(1.5e-10, float('inf'), float('nan'), 1j, -3)",
    "ValueError(...)",
    "ValueError('f(x), g(y)')",
    "ValueError(\"('[UserCodeInvoke] ', ValueError('x'))\")",
    "ValueError(object())",
    "ZeroDivisionError('division by zero')",
    "Weird()",
    "Odd()",
    "Kw()",
]


def base_str(err):
    """str(err) as the first builtin class in err's MRO defines it."""
    for cls in type(err).__mro__:
        if cls.__module__ == "builtins" and "__str__" in cls.__dict__:
            return cls.__str__(err)
    return str(err)


def main():
    out = []
    for source in SAMPLES:
        err = eval(source)
        details = PREFIX + "{}".format(Exception("[UserCodeInvoke] ", err))
        readable = type(err) not in (Weird, Odd, Kw)
        if "object at 0x" in details:
            # The address differs on every run: keep one.
            details = details[: details.index("object at 0x")] + "object at 0x7f0000000000>))"
        out.append(
            {
                "raise": source,
                "details": details,
                "type": type(err).__name__ if readable else "FunctionError",
                "message": base_str(err) if readable else details,
            }
        )
        if "object at 0x" in out[-1]["message"]:
            out[-1]["message"] = "<object object at 0x7f0000000000>"
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
