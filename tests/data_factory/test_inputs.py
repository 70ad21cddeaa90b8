"""Inputs and options: zip/broadcast, every InputError, decorator validation."""

from __future__ import annotations

import pytest

from starfish import InputError, OutputError, data_factory
from starfish.data_factory import DataFactory


def make(**options):
    calls: list[dict] = []

    @data_factory(storage="in_memory", show_progress=False, **options)
    async def gen(city: str, n: int = 1):
        calls.append({"city": city, "n": n})
        return [{"city": city, "i": i} for i in range(n)]

    return gen, calls


def test_lists_are_zipped_and_scalars_broadcast_in_input_order():
    gen, _ = make(max_concurrency=3)
    cities = [f"c{i}" for i in range(30)]
    records = gen.run(city=cities, n=2)
    assert records == [{"city": c, "i": i} for c in cities for i in range(2)]


def test_two_lists_zip_pairwise():
    gen, calls = make()
    assert gen.run(city=["a", "b"], n=[1, 2]) == [
        {"city": "a", "i": 0},
        {"city": "b", "i": 0},
        {"city": "b", "i": 1},
    ]
    assert sorted(c["n"] for c in calls) == [1, 2]


def test_only_scalars_is_one_input():
    gen, calls = make()
    assert gen.run(city="x", n=1) == [{"city": "x", "i": 0}]
    assert len(calls) == 1


def test_a_single_dict_counts_as_one_record():
    @data_factory(storage="in_memory", show_progress=False)
    async def one(x):
        return {"x": x}

    assert one.run(x=[1, 2]) == [{"x": 1}, {"x": 2}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"city": ["a", "b"], "n": [1, 2, 3]}, "unequal lengths"),
        ({"n": [1, 2]}, "missing required parameter(s): city"),
        ({"city": ["a"], "colour": "red"}, "does not take 'colour'"),
        ({}, "no inputs"),
        ({"city": []}, "no inputs"),
    ],
)
def test_input_errors_are_raised_before_any_call(kwargs, message):
    gen, calls = make()
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gen.run(**kwargs)
    assert calls == []


def test_non_async_function_is_an_input_error():
    with pytest.raises(InputError, match="not an async function"):

        @data_factory()
        def sync(x):
            return [{"x": x}]


def test_bare_decorator_works():
    @data_factory
    async def bare(x):
        return [{"x": x}]

    assert isinstance(bare, DataFactory)
    assert bare.with_options(storage="in_memory", show_progress=False).run(x=[1]) == [{"x": 1}]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("storage", "s3"),
        ("batch_size", 0),
        ("target_count", -1),
        ("dead_queue_threshold", 0),
        ("max_concurrency", 0),
        ("max_concurrency", 2.5),
        ("max_concurrency", True),
        ("task_runner_timeout", 0),
        ("task_runner_timeout", "60"),
        ("job_run_stop_threshold", -1),
        ("initial_state_values", [1]),
        ("on_record_complete", "not callable"),
        ("on_record_error", [print, 3]),
        ("show_progress", "yes"),
        ("colour", 1),
    ],
)
def test_bad_decorator_values_fail_at_decoration_naming_the_parameter(option, value):
    with pytest.raises(ValueError, match=option):
        data_factory(**{option: value})
    gen, _ = make()
    with pytest.raises(ValueError, match=option):
        gen.with_options(**{option: value})


def test_wrong_return_type_fails_the_task_naming_function_and_type():
    @data_factory(storage="in_memory", show_progress=False, dead_queue_threshold=1)
    async def bad(x):
        return "text"

    with pytest.raises(OutputError):
        bad.run(x=[1])
    [failure] = bad.get_output_data(filter="failed")
    assert failure["error_type"] == "TypeError"
    assert "bad" in failure["error"] and "str" in failure["error"]


def test_with_options_copies_and_keeps_the_function():
    gen, _ = make(max_concurrency=3)
    other = gen.with_options(max_concurrency=7)
    assert other.func is gen.func
    assert other.options["max_concurrency"] == 7
    assert gen.options["max_concurrency"] == 3


def test_streamed_rows_are_checked_against_the_signature_before_any_call():
    from starfish.data_factory.inputs import stream_inputs

    gen, calls = make()
    rows = iter([({"city": "a", "zone": 1}, None)])
    with pytest.raises(InputError, match="does not take 'zone'"):
        stream_inputs(gen.func, ("city", "zone"), rows, {})
    with pytest.raises(InputError, match="'n' is given both as a column and as a scalar"):
        stream_inputs(gen.func, ("city", "n"), rows, {"n": 2})
    with pytest.raises(InputError, match=r"missing required parameter.*city"):
        stream_inputs(gen.func, ("n",), rows, {})
    assert calls == []


def test_streamed_rows_run_in_memory_storage_in_order_with_scalars():
    from starfish.data_factory.inputs import stream_inputs

    gen, _ = make(max_concurrency=4)
    rows = (({"city": f"c{i}"}, None) for i in range(50))
    gen.run_rows(stream_inputs(gen.func, ("city",), rows, {"n": 2}))
    assert gen.get_output_data() == [{"city": f"c{i}", "i": j} for i in range(50) for j in range(2)]
