"""The event loop the runtime picks: uvloop's when installed, unless POLYFN_UVLOOP=0."""

from __future__ import annotations

import asyncio
import sys

import pytest

from polyfn_runtime import loops


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_off_keeps_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loops.UVLOOP_ENV, "0")
    assert loops.loop_factory() is None
    assert loops.name() == "asyncio"
    assert loops.run(_loop_module()).startswith("asyncio")


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(loops.UVLOOP_ENV, raising=False)
    assert loops.name() == "uvloop"
    assert loops.run(_loop_module()).startswith("uvloop")


def test_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loops.UVLOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loops.loop_factory() is None
    assert loops.run(_loop_module()).startswith("asyncio")


def test_run_returns_and_raises() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loops.run(fail())
