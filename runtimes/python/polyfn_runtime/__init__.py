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

__version__ = "0.1.0"

from .response import Response

__all__ = ["Response", "__version__"]
