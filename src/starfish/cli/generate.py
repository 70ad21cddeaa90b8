"""`starfish generate`: records from a model over the rows of a file, no code needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from starfish.cli._output import fail
from starfish.cli.run import input_option, no_cache_option, stop_threshold_option

__all__ = ["generate"]


def generate(
    model: Annotated[
        str,
        typer.Option(metavar="PROVIDER/MODEL", help="e.g. openai/gpt-4o-mini", show_default=False),
    ],
    prompt: Annotated[
        str,
        typer.Option(
            metavar="TEXT",
            help="Jinja2 template; {{column}} is a column of --input, {{num_records}} is "
            "--num-records. @path reads it from a file.",
            show_default=False,
        ),
    ],
    input_file: Annotated[
        Path, input_option("Rows: .jsonl, .csv or .parquet; one model call per row.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write the records here.", show_default=False
        ),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(
            metavar="NAME:TYPE,...",
            help="Fields of each record, e.g. 'question:str,answer:str' (types: str, int, "
            'float, bool, list, dict), or the JSON list form \'[{"name": "question", '
            '"type": "str"}, ...]\' (@path reads it from a file). Without it each record '
            "is {'text': ...}.",
            show_default=False,
        ),
    ] = None,
    structured_output: Annotated[
        str,
        typer.Option(
            metavar="MODE",
            help="How the schema is asked for: auto (the best the server accepts), "
            "json_schema, json_object or prompt.",
        ),
    ] = "auto",
    num_records: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Given to the prompt as {{num_records}}."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Any OpenAI-compatible server.", show_default=False),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            metavar="VAR",
            help="Send the key held in this environment variable (for a --base-url server or "
            "proxy that wants one). The key itself never goes on the command line.",
            show_default=False,
        ),
    ] = None,
    rpm: Annotated[
        float | None,
        typer.Option(min=0.001, metavar="N", help="Requests per minute (default: learned)."),
    ] = None,
    tpm: Annotated[
        float | None,
        typer.Option(min=0.001, metavar="N", help="Tokens per minute (default: learned)."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            metavar="SECONDS",
            help="Longest wait for one answer from the server (request_timeout).",
        ),
    ] = 120.0,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="Send the requests through the provider's batch API at half price (openai/, "
            "groq/, together/, anthropic/, or a --base-url server with OpenAI's Files and "
            "Batches endpoints); results may take up to 24 h, and a killed run resumes its "
            "batches with `starfish jobs resume`.",
        ),
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="With --batch: requests per batch (default: the provider's limit).",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[float | None, typer.Option(metavar="T")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, metavar="N")] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, metavar="N")] = 20,
    samples: Annotated[
        int,
        typer.Option(min=1, metavar="N", help="Independent samples (model calls) per row."),
    ] = 1,
    no_cache: Annotated[bool, no_cache_option()] = False,
    input_columns: Annotated[
        bool,
        typer.Option(
            "--input-columns/--no-input-columns",
            help="Keep the input row's columns on each record (input_NAME where a record "
            "field has the same name).",
        ),
    ] = True,
    dedupe: Annotated[
        str | None,
        typer.Option(
            metavar="FIELD[,FIELD]",
            help="Keep no record whose FIELDs repeat a kept one's (case, spacing and "
            "punctuation aside); a duplicate row is tried again.",
            show_default=False,
        ),
    ] = None,
    near: Annotated[
        float | None,
        typer.Option(
            metavar="X",
            help="With --dedupe: also near duplicates, at estimated Jaccard similarity X of "
            "word pairs (0.5-1.0; 0.8 catches a few changed words).",
            show_default=False,
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            metavar="RUBRIC",
            help="Score each record 1-5 against RUBRIC with a model (stored beside it).",
            show_default=False,
        ),
    ] = None,
    min_score: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="With --judge: records scored under N are filtered and tried again."
        ),
    ] = None,
    judge_model: Annotated[
        str | None,
        typer.Option(
            metavar="PROVIDER/MODEL",
            help="With --judge: the judge's model (default: --model, same server and key).",
            show_default=False,
        ),
    ] = None,
    stop_threshold: Annotated[float, stop_threshold_option()] = 0.9,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job as JSON on stdout.")
    ] = False,
) -> None:
    """Call a model once per row of --input and keep the records as a normal job
    (resumable, listed, exportable). The API key comes from the provider's variable
    (e.g. OPENAI_API_KEY) or from --api-key-env VAR, never from the command line."""
    from starfish.cli.run import check_output, run_over_file
    from starfish.data_factory import data_factory
    from starfish.llm import LLMConfigError
    from starfish.llm.generate import build, generate, parse_schema

    if output is not None:
        check_output(output)
    if prompt.startswith("@"):
        try:
            prompt = Path(prompt[1:]).read_text()
        except OSError as e:
            fail(f"--prompt {prompt}: {e.strerror or e}")
    model_kwargs: dict[str, Any] = {}
    if temperature is not None:
        model_kwargs["temperature"] = temperature
    if max_tokens is not None:
        model_kwargs["max_tokens"] = max_tokens
    settings: dict[str, Any] = {"model_name": model, "prompt": prompt, "base_url": base_url}
    if structured_output != "auto":
        settings["structured_output"] = structured_output
    if timeout != 120.0:
        settings["request_timeout"] = timeout
    if api_key_env is not None:
        settings["api_key_env"] = api_key_env
    if model_kwargs:
        settings["model_kwargs"] = model_kwargs
    if batch_size is not None and not batch:
        fail("--batch-size needs --batch")
    if batch:
        settings["batch"] = True
    if batch_size is not None:
        settings["batch_size"] = batch_size
    if rpm is not None:
        settings["rpm"] = rpm
    if tpm is not None:
        settings["tpm"] = tpm
    try:
        if schema is not None:
            if schema.startswith("@"):
                try:
                    schema = Path(schema[1:]).read_text()
                except OSError as e:
                    fail(f"--schema {schema}: {e.strerror or e}")
            settings["output_schema"] = parse_schema(schema)
        llm = build(settings)  # every setup error here, before any row runs
    except LLMConfigError as e:
        fail(str(e))
    params: dict[str, Any] = {"num_records": num_records} if num_records is not None else {}

    def check_columns(names: tuple[str, ...]) -> None:
        missing = sorted(llm.variables - {*names, *params})
        if missing:
            hint = " (give it with --num-records N)" if "num_records" in missing else ""
            fail(
                f"--prompt uses {', '.join('{{' + m + '}}' for m in missing)} but {input_file} "
                f"has no such column (columns: {', '.join(names) or 'none'}){hint}"
            )
        # `llm` is the job's own parameter, `self` StructuredLLM.run's: a column of either
        # name would reach a call twice and fail every row
        taken = sorted({"llm", "self"} & set(names))
        if taken:
            fail(
                f"{input_file}: a column cannot be named {taken[0]!r} (generate uses that name); "
                "rename the column"
            )
        if input_columns:
            params["llm"]["columns"] = list(names)

    # One dict for every row; the columns to keep are known once the file is open.
    params["llm"] = {"settings": settings, "columns": [], "samples": samples}
    hooks = _quality_hooks(dedupe, near, judge, min_score, judge_model or model, settings)
    gen = data_factory(
        max_concurrency=max_concurrency,
        show_progress=not no_progress,
        stop_threshold=stop_threshold,
        llm_cache=not no_cache,
        on_record_complete=hooks or None,
    )(generate)
    run_over_file(gen, input_file, params, output, as_json, check_columns)


def _quality_hooks(
    dedupe: str | None,
    near: float | None,
    judge: str | None,
    min_score: int | None,
    judge_model: str,
    settings: dict[str, Any],
) -> list[Any]:
    """--dedupe/--near and --judge/--min-score as starfish.quality hooks: dedupe first, so a
    duplicate is never judged."""
    from starfish.errors import OptionsError

    if near is not None and dedupe is None:
        fail("--near needs --dedupe FIELD (the fields compared)")
    if min_score is not None and judge is None:
        fail("--min-score needs --judge RUBRIC")
    hooks: list[Any] = []
    try:
        from starfish.quality import Dedupe, Judge

        if dedupe is not None:
            fields = [f.strip() for f in dedupe.split(",") if f.strip()]
            hooks.append(Dedupe(*fields, near=near))
        if judge is not None:
            hooks.append(
                Judge(
                    model=judge_model,
                    rubric=judge,
                    min_score=min_score,
                    base_url=settings.get("base_url"),
                    api_key_env=settings.get("api_key_env"),
                )
            )
    except OptionsError as e:
        fail(str(e).replace("Dedupe(near=", "--near ").replace("Judge(min_score=", "--min-score "))
    return hooks
