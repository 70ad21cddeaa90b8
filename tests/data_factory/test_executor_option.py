"""`executor=`: checked at decoration, before any job or call (Ray itself is not started here)."""

from __future__ import annotations

import sys
import threading

import pytest

from starfish import OptionsError, data_factory


def test_executor_ray_without_ray_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like
    with pytest.raises(OptionsError, match=r"pip install 'starfish-datagen\[ray\]'"):

        @data_factory(executor="ray")
        async def gen(i):
            return {"i": i}


def test_an_unknown_executor_is_an_options_error():
    with pytest.raises(OptionsError, match="executor must be 'local' or 'ray'"):

        @data_factory(executor="dask")
        async def gen(i):
            return {"i": i}


def test_a_function_that_cannot_be_pickled_is_refused_before_any_call():
    pytest.importorskip("ray")
    lock = threading.Lock()
    calls = []

    async def gen(i):
        with lock:  # a lock in the closure cannot travel to another process
            calls.append(i)
        return {"i": i}

    with pytest.raises(OptionsError, match=r"cannot be pickled.*create them inside the function"):
        data_factory(executor="ray")(gen)
    base = data_factory(gen)
    with pytest.raises(OptionsError, match="cannot be pickled"):
        base.with_options(executor="ray")
    assert calls == []
