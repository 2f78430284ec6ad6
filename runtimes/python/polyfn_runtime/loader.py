"""Loading function handlers from their code directories.

``handler: module.function`` names a module relative to the function's
``codedir`` (``pkg.mod.fn`` is ``codedir/pkg/mod.py`` or
``codedir/pkg/mod/__init__.py``) and a callable in it.

Each codedir is imported as its own private package (``_polyfn_0_sayhi``,
named after the first function that uses it) whose ``__path__`` is the
codedir. So two functions whose codedirs both contain an ``index.py`` get two
separate modules, functions that share a codedir share its modules, and
relative imports (``from . import helper``) stay inside the codedir.

The codedir is put at the front of ``sys.path`` while the function loads, and
stays on it afterwards (as in Baetyl) so that imports done lazily inside a
handler keep working.

A function with built dependencies (``dependencies``: the directory the host
installed its requirements into) gets that directory added to ``sys.path``
with ``site.addsitedir`` -- after the runtime's own entries, so the runtime's
packages (grpcio, protobuf) are the ones imported; the host resolves a
function's requirements against those same versions.

Limitation: modules a function imports by absolute name (``import helper``)
are cached in ``sys.modules`` under that name. When two functions served by
ONE worker each have a ``helper.py`` in their codedir, both get the one loaded
first. Use relative imports, or distinct module names, for helpers of
functions that share a worker.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import logging
import re
import site
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import logs
from .config import FunctionConfig

Handler = Callable[[Any, Any], Any]


class HandlerLoadError(Exception):
    """A function's handler cannot be loaded; ``__cause__`` holds the reason."""


@dataclass(frozen=True)
class LoadedFunction:
    name: str
    handler: Handler
    is_async: bool
    logger: logging.Logger


class HandlerLoader:
    """Loads handlers; functions that share a codedir share its private package."""

    def __init__(self) -> None:
        self._packages: dict[Path, str] = {}

    def load(self, function: FunctionConfig) -> LoadedFunction:
        """Import ``function``'s handler; raise :class:`HandlerLoadError` on failure."""
        codedir = Path(function.codedir).resolve()
        if not codedir.is_dir():
            raise HandlerLoadError(f"codedir {str(codedir)!r} is not a directory")
        module_path = function.module
        location = _module_file(codedir, module_path)
        package = self._package(function.name, codedir)

        if function.dependencies and function.dependencies not in sys.path:
            site.addsitedir(function.dependencies)

        scope = logs.Scope(function.name)
        token = logs.current_scope.set(scope)
        path_entry = str(codedir)
        if path_entry in sys.path:
            sys.path.remove(path_entry)
        sys.path.insert(0, path_entry)
        try:
            module = _import(package, module_path, location)
        except BaseException as err:
            raise HandlerLoadError(
                f"cannot import module {module_path!r} from {str(codedir)!r}: {type(err).__name__}: {err}"
            ) from err
        finally:
            logs.current_scope.reset(token)
            logs.end_scope(scope)

        try:
            handler = getattr(module, function.attribute)
        except AttributeError:
            raise HandlerLoadError(f"module {module_path!r} has no attribute {function.attribute!r}") from None
        if not callable(handler):
            raise HandlerLoadError(f"{function.handler!r} is a {type(handler).__name__}, not a function")
        return LoadedFunction(
            name=function.name,
            handler=handler,
            is_async=inspect.iscoroutinefunction(handler),
            logger=logging.getLogger(f"function.{function.name}"),
        )

    def _package(self, name: str, codedir: Path) -> str:
        """The private package whose submodules are the codedir's modules."""
        package = self._packages.get(codedir)
        if package is None:
            package = f"_polyfn_{len(self._packages)}_" + re.sub(r"\W", "_", name)
            spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
            spec.submodule_search_locations = [str(codedir)]
            sys.modules[package] = importlib.util.module_from_spec(spec)
            self._packages[codedir] = package
        return package


def _module_file(codedir: Path, module_path: str) -> Path:
    base = codedir.joinpath(*module_path.split("."))
    candidates = (base.with_name(base.name + ".py"), base / "__init__.py")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(candidate) for candidate in candidates)
    raise HandlerLoadError(f"module {module_path!r} not found: no {tried}")


def _import(package: str, module_path: str, location: Path) -> ModuleType:
    parent_name, _, leaf = f"{package}.{module_path}".rpartition(".")
    # Intermediate packages (``pkg`` of ``pkg.mod``) come through the normal
    # import system, found under the private package's ``__path__``.
    parent = importlib.import_module(parent_name)

    full_name = f"{parent_name}.{leaf}"
    loaded = sys.modules.get(full_name)
    if loaded is not None:
        return loaded  # another function of the same codedir loaded it
    is_package = location.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(
        full_name,
        location,
        submodule_search_locations=[str(location.parent)] if is_package else None,
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {location}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(full_name, None)
        raise
    setattr(parent, leaf, module)
    return module
