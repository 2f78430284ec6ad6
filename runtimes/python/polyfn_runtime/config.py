"""The worker's config file (Baetyl ``service.yml``) and its environment overrides.

Example::

    name: sayhi-runtime            # optional
    functions:
      - name: sayhi
        handler: sayhi.handler     # module.function, relative to codedir
        codedir: var/db/baetyl/function-sayhi
    server:                        # optional
      address: 127.0.0.1:50051     # overridden by BAETYL_SERVICE_INSTANCE_ADDRESS
      grace: 30                    # seconds to finish in-flight calls on SIGTERM
      workers: 32                  # threads that run synchronous handlers
      engine: auto                 # auto | asyncio | threads (see polyfn_runtime.server)

Unknown keys are ignored, so config files written for Baetyl load unchanged.

Stream mode has no config file: the host passes where to connect on the
command line (see :class:`StreamOptions`) and the functions in
``FunctionLoadRequest`` messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CONFIG_PATH = "etc/baetyl/service.yml"
ADDRESS_ENV = "BAETYL_SERVICE_INSTANCE_ADDRESS"
NAME_ENV = "BAETYL_SERVICE_INSTANCE_NAME"
# polyfn's host passes the worker id here rather than on the command line,
# which every local user can read (/proc/PID/cmdline).
WORKER_ID_ENV = "POLYFN_WORKER_ID"

DEFAULT_GRACE = 30.0
DEFAULT_WORKERS = 32
DEFAULT_MAX_MESSAGE_LENGTH = 2**31 - 1
ENGINES = ("auto", "asyncio", "threads")


class ConfigError(Exception):
    """The config file cannot be read or does not have the expected shape."""


@dataclass(frozen=True)
class FunctionConfig:
    name: str
    handler: str
    codedir: str
    # The directory of the function's built dependencies ("" when none): added to
    # sys.path after the runtime's own entries.
    dependencies: str = ""

    @property
    def module(self) -> str:
        return self.handler.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass(frozen=True)
class ServerConfig:
    address: str | None = None
    grace: float = DEFAULT_GRACE
    workers: int = DEFAULT_WORKERS
    engine: str = "auto"


@dataclass(frozen=True)
class ServiceConfig:
    name: str | None
    functions: tuple[FunctionConfig, ...]
    server: ServerConfig


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> ServiceConfig:
    """Read and validate the config file at ``path``, then apply environment overrides."""
    import yaml  # here: stream mode has no config file, and needs no YAML parser in memory

    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    try:
        return parse_config(data, environ)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_config(data: Any, environ: Mapping[str, str] = os.environ) -> ServiceConfig:
    """Validate an already decoded config document."""
    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a mapping with a 'functions' list")
    name = _optional_str(data, "name", "name")
    functions = _functions(data.get("functions"))
    server = _server(data.get("server"))
    name = environ.get(NAME_ENV) or name
    address = environ.get(ADDRESS_ENV) or server.address
    return ServiceConfig(
        name=name,
        functions=functions,
        server=ServerConfig(address=address, grace=server.grace, workers=server.workers, engine=server.engine),
    )


def valid_handler(handler: str) -> bool:
    """Whether ``handler`` has the ``module.function`` shape (``pkg.mod.function`` too)."""
    module, _, attribute = handler.rpartition(".")
    return bool(module and attribute) and all(part.isidentifier() for part in handler.split("."))


def _functions(raw: Any) -> tuple[FunctionConfig, ...]:
    if raw is None:
        raise ConfigError("functions: required, a list of {name, handler, codedir}")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("functions: must be a non-empty list of {name, handler, codedir}")
    functions: list[FunctionConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"functions[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be a mapping with name, handler and codedir")
        name = _required_str(item, "name", f"{where}.name")
        if name in seen:
            raise ConfigError(f"{where}.name: duplicate function name {name!r}")
        seen.add(name)
        handler = _required_str(item, "handler", f"{where}.handler")
        if not valid_handler(handler):
            raise ConfigError(f"{where}.handler: expected 'module.function', got {handler!r}")
        codedir = _optional_str(item, "codedir", f"{where}.codedir") or "."
        dependencies = _optional_str(item, "dependencies", f"{where}.dependencies") or ""
        functions.append(FunctionConfig(name=name, handler=handler, codedir=codedir, dependencies=dependencies))
    return tuple(functions)


def _server(raw: Any) -> ServerConfig:
    if raw is None:
        return ServerConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("server: must be a mapping")
    address = _optional_str(raw, "address", "server.address")

    grace = raw.get("grace", DEFAULT_GRACE)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
        raise ConfigError(f"server.grace: must be a non-negative number of seconds, got {grace!r}")

    workers = raw.get("workers", DEFAULT_WORKERS)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"server.workers: must be a positive integer, got {workers!r}")

    engine = _optional_str(raw, "engine", "server.engine") or "auto"
    if engine not in ENGINES:
        raise ConfigError(f"server.engine: must be one of {', '.join(ENGINES)}, got {engine!r}")

    return ServerConfig(address=address, grace=float(grace), workers=workers, engine=engine)


def _required_str(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = _optional_str(mapping, key, where)
    if not value:
        raise ConfigError(f"{where}: required, a non-empty string")
    return value


def _optional_str(mapping: Mapping[str, Any], key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class StreamOptions:
    """Stream mode's launch arguments: where the host listens and who this worker is."""

    host: str
    port: int
    worker_id: str
    request_id: str
    max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH

    @property
    def target(self) -> str:
        """The gRPC target: ``host:port``, IPv6 literals in brackets."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


def stream_options(
    *,
    host: str | None = None,
    port: int | None = None,
    worker_id: str | None = None,
    request_id: str | None = None,
    max_message_length: int | None = None,
    functions_uri: str | None = None,
    functions_worker_id: str | None = None,
    functions_request_id: str | None = None,
    functions_max_message_length: int | None = None,
    env_worker_id: str | None = None,
) -> StreamOptions | None:
    """Combine the two argument spellings the host passes; ``None`` when neither asks for stream mode.

    ``--host/--port`` and ``--functions-uri`` are alternatives (the host sends
    both); when both are given, ``--host/--port`` win. The worker id comes
    from ``--workerId``, ``--functions-worker-id`` or, as polyfn's host
    passes it, ``env_worker_id`` (``POLYFN_WORKER_ID``). Raises
    :class:`ConfigError` when stream mode is asked for but cannot run.
    """
    if host is None and port is None and functions_uri is None:
        return None
    if host is None or port is None:
        if functions_uri is None:
            raise ConfigError("--host and --port go together (or pass --functions-uri http://HOST:PORT/)")
        host, port = _split_uri(functions_uri)
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range")
    worker = worker_id or functions_worker_id or env_worker_id
    if not worker:
        raise ConfigError(f"stream mode needs a worker id: --workerId, --functions-worker-id or {WORKER_ID_ENV}")
    length = max_message_length or functions_max_message_length or DEFAULT_MAX_MESSAGE_LENGTH
    if length < 1:
        raise ConfigError(f"max message length must be positive, got {length}")
    return StreamOptions(
        host=host,
        port=port,
        worker_id=worker,
        request_id=request_id or functions_request_id or "",
        max_message_length=min(length, DEFAULT_MAX_MESSAGE_LENGTH),
    )


def _split_uri(uri: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri if "//" in uri else f"//{uri}")
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise ConfigError(f"--functions-uri {uri!r}: {err}") from None
    if not host or port is None:
        raise ConfigError(f"--functions-uri {uri!r}: expected http://HOST:PORT/")
    return host, port
