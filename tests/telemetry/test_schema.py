"""The allow-list: what a job event may carry, with which types."""

from __future__ import annotations

import json
import uuid

from starfish.telemetry import Event, TelemetryConfig, TelemetryData
from starfish.telemetry.schema import (
    CONFIG_FIELDS,
    JOB_EVENT,
    LLM_PROVIDERS,
    MAX_ERROR_TYPES,
    clean_job,
    clean_properties,
    clean_wire_properties,
    error_type_counts,
)

JOB_ID = str(uuid.uuid4())


def test_clean_job_keeps_allow_listed_fields_with_their_types() -> None:
    data = TelemetryData(
        job_id=JOB_ID,
        target_reached=True,
        run_mode="normal",
        run_time_platform="jupyter",
        num_inputs=20,
        library_version="0.2.0",
        config={"batch_size": 1, "target_count": None, "task_runner_timeout": 60.0},
        execution_time=1.23456,
        count_summary={"completed": 18, "failed": 2, "filtered": 0, "duplicate": 0},
        error_summary={"TimeoutError": 2},
        executor="ray",
    )
    props = clean_job(data)
    assert props == {
        "job_id": JOB_ID,
        "target_reached": True,
        "run_mode": "normal",
        "run_time_platform": "jupyter",
        "num_inputs": 20,
        "library_version": "0.2.0",
        "config": {"batch_size": 1, "target_count": None, "task_runner_timeout": 60.0},
        "execution_time": 1.235,
        "count_summary": {"completed": 18, "failed": 2, "filtered": 0, "duplicate": 0},
        "error_summary": {"TimeoutError": 2},
        "executor": "ray",
    }
    assert clean_properties(JOB_EVENT, data.to_dict()) == props


def test_the_original_one_tuple_bug_is_dropped_not_sent() -> None:
    data = TelemetryData(job_id=JOB_ID)
    data.num_inputs = (5,)  # type: ignore[assignment]
    data.target_reached = (True,)  # type: ignore[assignment]
    props = clean_job(data)
    assert "num_inputs" not in props
    assert "target_reached" not in props


def test_wrongly_typed_or_shaped_values_are_dropped() -> None:
    props = clean_properties(
        JOB_EVENT,
        {
            "job_id": "my-secret-job-name",
            "run_mode": "Normal Mode!",
            "executor": "ray://head.internal:10001",
            "num_inputs": True,
            "execution_time": float("nan"),
            "config": {"batch_size": "10", "api_key": 3, "max_concurrency": 8},
            "count_summary": {"completed": -1, "failed": 2, "extra": 1},
            "error_summary": {"not a type name": 1, "KeyError": "3", "OSError": 4},
            "inputs": ["x"],
        },
    )
    assert props == {
        "config": {"max_concurrency": 8},
        "count_summary": {"failed": 2},
        "error_summary": {"OSError": 4},
    }


def test_unknown_events_are_not_allowed() -> None:
    assert clean_properties("page_view", {"job_id": JOB_ID}) is None
    assert clean_wire_properties("page_view", {"os": "linux"}) is None


def test_error_summary_is_bounded_keeping_the_most_frequent() -> None:
    errors = {f"Error{i}": i + 1 for i in range(MAX_ERROR_TYPES + 10)}
    kept = clean_properties(JOB_EVENT, {"error_summary": errors})["error_summary"]
    assert len(kept) == MAX_ERROR_TYPES
    assert "Error0" not in kept and f"Error{MAX_ERROR_TYPES + 9}" in kept


def test_error_type_counts_uses_type_names_never_messages() -> None:
    counts = error_type_counts([ValueError("password=hunter2"), ValueError("x"), TimeoutError])
    assert counts == {"ValueError": 2, "TimeoutError": 1}
    assert "hunter2" not in json.dumps(counts)


def test_all_config_fields_survive() -> None:
    config = {name: i for i, name in enumerate(CONFIG_FIELDS)}
    assert clean_properties(JOB_EVENT, {"config": config}) == {"config": config}


def test_event_defaults_to_the_persisted_client_id() -> None:
    event = Event(name=JOB_EVENT, data={})
    assert event.client_id == str(TelemetryConfig.generate_client_id())
    assert TelemetryConfig.config_path().read_text().strip() == event.client_id


def test_llm_fields_keep_counts_and_a_fixed_provider_word_only() -> None:
    good = {
        "requests": 7,
        "cache_hits": 3,
        "prompt_tokens": 120,
        "completion_tokens": 0,
        "batch_requests": 5,
    }
    data = TelemetryData(job_id=JOB_ID, llm_summary=good, llm_provider="vllm")
    props = clean_job(data)
    assert props["llm_summary"] == good and props["llm_provider"] == "vllm"
    assert clean_properties(JOB_EVENT, data.to_dict()) == props
    bad = clean_properties(
        JOB_EVENT,
        {
            "llm_summary": {
                "requests": -1,
                "cache_hits": True,
                "prompt_tokens": 1.5,
                "completion_tokens": "9",
                "batch_requests": -2,
                "cost_usd": 3,
                "model": 1,
            },
            "llm_provider": "openai/gpt-4o-mini",
        },
    )
    assert bad == {"llm_summary": {}}
    for word in ("OpenAI", "http://127.0.0.1:8000/v1", "azure", "", None, 3):
        assert "llm_provider" not in clean_properties(JOB_EVENT, {"llm_provider": word})
    assert "llm_summary" not in clean_properties(JOB_EVENT, {"llm_summary": "requests=3"})


def test_a_job_that_called_no_model_sends_no_llm_fields() -> None:
    props = clean_job(TelemetryData(job_id=JOB_ID))
    assert "llm_summary" not in props and "llm_provider" not in props


def test_llm_provider_words_are_the_provider_table_plus_other() -> None:
    from starfish.llm.providers import PROVIDERS

    assert (*PROVIDERS, "other") == LLM_PROVIDERS
