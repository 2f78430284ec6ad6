"""polyfn's Python language runtime.

The runtime is started by the polyfn host as a worker process, in one of two
modes with the same programming model:

* call mode (:mod:`polyfn_runtime.server`): a gRPC server for
  ``baetyl.Function/Call`` serving the functions listed in its config file
  (see :mod:`polyfn_runtime.config`);
* stream mode (:mod:`polyfn_runtime.stream`): an Azure Functions language
  worker that dials the host and serves the functions the host loads over one
  ``EventStream``.

A function may return a :class:`Response` (also ``context.response(...)``)
to set the HTTP status code and headers along with the body.
"""

import os

__version__ = "0.1.0"

# A function that forks (subprocess, multiprocessing) must not make gRPC stop
# and restart its threads around each fork: at the worker's limit of
# processes and threads (limits.pids) they cannot be restarted, and the
# worker stops answering. The runtime never uses gRPC in a forked child.
# Set before anything imports grpc; an explicit setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from .response import Response

__all__ = ["Response", "__version__"]
