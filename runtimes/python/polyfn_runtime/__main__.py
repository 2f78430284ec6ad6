"""Command line: ``polyfn-python [-c FILE]`` (or ``python -m polyfn_runtime``).

Call mode (Baetyl): ``-c FILE`` names the config file listing the functions to
serve; the address to listen on comes from ``BAETYL_SERVICE_INSTANCE_ADDRESS``.
With ``--standby`` the worker imports what call mode needs, then waits for its
environment on its standard input (polyfn's host; see
:mod:`polyfn_runtime.standby`).

Stream mode (Azure Functions language worker): chosen when the host passes
``--host H --port P`` or ``--functions-uri http://H:P/``, with the worker id
(``--workerId`` / ``--functions-worker-id``, or the ``POLYFN_WORKER_ID``
environment variable, where polyfn's host puts it), the request id
(``--requestId`` / ``--functions-request-id``) and the max message size
(``--grpcMaxMessageLength`` / ``--functions-grpc-max-message-length``). Either
spelling is enough. The functions come from the host over the stream.

Unknown arguments are ignored with a warning, in either mode.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .config import DEFAULT_CONFIG_PATH, WORKER_ID_ENV, ConfigError, StreamOptions, stream_options

EXIT_USAGE = 2

log = logging.getLogger("polyfn_runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyfn-python",
        description="polyfn's Python runtime: serves Python functions to the polyfn host.",
        # Hosts pass extra arguments of their own: no prefix matching against ours.
        allow_abbrev=False,
    )
    call = parser.add_argument_group("call mode (baetyl.Function/Call server)")
    call.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=DEFAULT_CONFIG_PATH,
        help=f"the worker's config file (default: {DEFAULT_CONFIG_PATH})",
    )
    call.add_argument(
        "--standby",
        action="store_true",
        help="wait for the environment on standard input before reading the config (polyfn's host)",
    )
    stream = parser.add_argument_group(
        "stream mode (Azure Functions language worker; the host passes these, either spelling)"
    )
    stream.add_argument("--host", help="the host's address")
    stream.add_argument("--port", type=int, help="the host's port")
    stream.add_argument("--workerId", dest="worker_id", metavar="ID", help="this worker's id")
    stream.add_argument("--requestId", dest="request_id", metavar="ID", help="the id of the StartStream message")
    stream.add_argument(
        "--grpcMaxMessageLength", dest="max_message_length", type=int, metavar="N", help="max message size, bytes"
    )
    stream.add_argument("--functions-uri", dest="functions_uri", metavar="URI", help="http://HOST:PORT/")
    stream.add_argument("--functions-worker-id", dest="functions_worker_id", metavar="ID")
    stream.add_argument("--functions-request-id", dest="functions_request_id", metavar="ID")
    stream.add_argument(
        "--functions-grpc-max-message-length", dest="functions_max_message_length", type=int, metavar="N"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    # Imported here so that --help does not pay for it (logs is light; grpc is not).
    from . import logs

    logs.install()
    if unknown:
        log.warning("ignoring unknown arguments: %s", " ".join(unknown))
    try:
        options: StreamOptions | None = stream_options(
            host=args.host,
            port=args.port,
            worker_id=args.worker_id,
            request_id=args.request_id,
            max_message_length=args.max_message_length,
            functions_uri=args.functions_uri,
            functions_worker_id=args.functions_worker_id,
            functions_request_id=args.functions_request_id,
            functions_max_message_length=args.functions_max_message_length,
            # Taken out of the environment: the functions and what they start
            # need not see it.
            env_worker_id=os.environ.pop(WORKER_ID_ENV, None),
        )
    except ConfigError as err:
        log.error("%s", err)
        return EXIT_USAGE

    if options is not None:
        from . import stream

        return stream.run(options)

    from . import server

    if not args.standby:
        return server.run(args.config)
    from . import standby

    standby.warm()
    try:
        env = standby.claim()
    except (standby.HandshakeError, OSError) as err:
        log.error("standby: %s", err)
        return EXIT_USAGE
    if env is None:
        standby.leave()
    standby.apply(env)
    return server.run(args.config, on_listening=standby.serving)


if __name__ == "__main__":
    sys.exit(main())
