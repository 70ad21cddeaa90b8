"""The provider table: `provider/model` -> where to send it and which key to use.

Every row speaks the OpenAI chat-completions API (Anthropic and Gemini through their
OpenAI-compatible endpoints). Any other server: pass `base_url=` (and `api_key=` if needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from starfish.llm.errors import LLMConfigError


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    key_env: str | None  # None: no key needed (local servers)
    base_env: str | None = None  # an environment variable that overrides base_url


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
        Provider("ollama", "http://localhost:11434/v1", None, "OLLAMA_BASE_URL"),
        Provider("vllm", "http://localhost:8000/v1", None, "VLLM_BASE_URL"),
        Provider("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        Provider("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        Provider("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        Provider("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        Provider(
            "gemini", "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"
        ),
        Provider("anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
    )
}


@dataclass(frozen=True)
class Target:
    """Where one `StructuredLLM` sends its requests."""

    family: str  # a provider name from the table, or "other"
    model: str  # the model name the server expects
    base_url: str
    api_key: str | None

    def __repr__(self) -> str:  # never show the key
        return f"Target(family={self.family!r}, model={self.model!r}, base_url={self.base_url!r})"


GIVEN_KEYS: set[str] = set()
"""Every `api_key=` given in this process: a job refuses to store one (data_factory/secrets)."""


def known_keys() -> set[str]:
    """The keys in use: those given, and the providers' key variables that are set."""
    env = {os.environ.get(p.key_env) for p in PROVIDERS.values() if p.key_env}
    return {k for k in env if k} | GIVEN_KEYS


def resolve(model_name: str, base_url: str | None, api_key: str | None) -> Target:
    """Find the provider of `model_name`, its base URL and key; a clear error if one is missing."""
    if api_key:
        GIVEN_KEYS.add(api_key)
    if not isinstance(model_name, str) or not model_name.strip():
        raise LLMConfigError(
            f"model_name must be 'provider/model' (e.g. 'openai/gpt-4o-mini'), not {model_name!r}"
        )
    prefix, sep, rest = model_name.partition("/")
    provider = PROVIDERS.get(prefix) if sep else None
    if provider is None:
        if base_url:
            return Target("other", model_name, base_url.rstrip("/"), api_key)
        raise LLMConfigError(
            f"unknown provider in model_name={model_name!r}: use one of "
            f"{', '.join(p + '/' for p in PROVIDERS)}, or pass base_url= for any other "
            "OpenAI-compatible server."
        )
    url = base_url or (provider.base_env and os.environ.get(provider.base_env)) or provider.base_url
    key = api_key or (os.environ.get(provider.key_env) if provider.key_env else None)
    if provider.key_env and not key:
        raise LLMConfigError(
            f"no API key for {model_name!r}: set the environment variable {provider.key_env} "
            "or pass api_key= to StructuredLLM."
        )
    return Target(provider.name, rest, url.rstrip("/"), key or None)
