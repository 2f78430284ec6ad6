"""polyfn's Python language runtime.

The runtime is started by the polyfn host as a worker process. In call mode it
is a gRPC server for ``baetyl.Function/Call`` and serves the functions listed in
its config file (see :mod:`polyfn_runtime.config`).
"""

__version__ = "0.1.0"
