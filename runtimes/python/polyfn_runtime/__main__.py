"""Command line: ``polyfn-python [-c FILE]`` (or ``python -m polyfn_runtime``).

Call mode (Baetyl): ``-c FILE`` names the config file listing the functions to
serve; the address to listen on comes from ``BAETYL_SERVICE_INSTANCE_ADDRESS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import DEFAULT_CONFIG_PATH


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyfn-python",
        description="polyfn's Python runtime: serves Python functions to the polyfn host.",
    )
    call = parser.add_argument_group("call mode (baetyl.Function/Call server)")
    call.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=DEFAULT_CONFIG_PATH,
        help=f"the worker's config file (default: {DEFAULT_CONFIG_PATH})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # One argument group and one branch per mode: a stream mode (the host
    # starts the worker with --host/--port) adds its group in build_parser()
    # and a branch here.
    args = build_parser().parse_args(argv)
    # Imported here so that --help does not pay for importing grpc.
    from . import server

    return server.run(args.config)


if __name__ == "__main__":
    sys.exit(main())
