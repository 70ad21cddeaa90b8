"""Whether telemetry is on, local-only or off, and which setting decided it.

Precedence, highest first: an off switch anywhere in the environment (`TELEMETRY_ENABLED`
false-ish, `DO_NOT_TRACK`), then `TELEMETRY_ENABLED=local|true`, then the choice saved with
`starfish telemetry enable|disable|local`, then the default (on). A `.env` file in the working
directory counts as environment, but real environment variables win over it.

"On" needs a project key to send with: without one (the packaged key is a placeholder until a
release sets the real one), "on" becomes "local", so no process is started and nothing claims to
send. The saved choice is the user's, so it lives in the user config dir, not next to the data.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starfish.paths import app_data_dir

__all__ = [
    "DEFAULT_ENDPOINT",
    "MODES",
    "NO_KEY_REASON",
    "POSTHOG_API_KEY",
    "TelemetrySettings",
    "choice_path",
    "config_dir",
    "env_says_off",
    "has_project_key",
    "is_ci",
    "os_name",
    "resolve",
    "save_choice",
    "saved_choice",
    "saved_choice_and_path",
]

DEFAULT_ENDPOINT = "https://us.i.posthog.com"
PLACEHOLDER_API_KEY = "phc_starfishWriteOnlyProjectKeyPlaceholder0000000"
# The project's write-only ("phc_") PostHog key: it can send events, never read them. A release
# sets the real one here; until then it is the placeholder, and telemetry stays local.
POSTHOG_API_KEY = PLACEHOLDER_API_KEY
NO_KEY_REASON = "no project key is configured; events are kept on this machine"

CONFIG_DIR_ENV = "STARFISH_CONFIG_DIR"
CHOICE_FILE = "telemetry.json"
MODES = ("on", "local", "off")

_OFF = frozenset({"false", "0", "f", "no", "n", "off", "disable", "disabled"})
_ON = frozenset({"true", "1", "t", "yes", "y", "on", "enable", "enabled"})
_DNT = frozenset({"1", "true", "yes"})
_CI_VARS = (
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE",
    "CIRCLECI",
    "TRAVIS",
    "JENKINS_URL",
    "TF_BUILD",
    "TEAMCITY_VERSION",
    "BITBUCKET_BUILD_NUMBER",
)
_KEYS = (
    "TELEMETRY_ENABLED",
    "DO_NOT_TRACK",
    "TELEMETRY_DEBUG",
    "POSTHOG_HOST",
    "STARFISH_TELEMETRY_API_KEY",
    *_CI_VARS,
)


@dataclass(frozen=True)
class TelemetrySettings:
    """The resolved settings; `reason` says in words which setting decided `mode`."""

    mode: str
    reason: str
    endpoint: str
    api_key: str
    debug: bool
    is_ci: bool


def _dotenv(cwd: Path | None) -> dict[str, str]:
    """The relevant keys of `./.env`; python-dotenv is imported only when the file exists."""
    path = (cwd or Path.cwd()) / ".env"
    try:
        if not path.is_file():
            return {}
        from dotenv import dotenv_values

        values = dotenv_values(path)
    except Exception:  # a broken .env must not break the user's job
        return {}
    return {k: v for k, v in values.items() if k in _KEYS and v is not None}


def _lookup(environ: Mapping[str, str], dotenv: Mapping[str, str], key: str) -> tuple[str, str]:
    """(value, where) with real environment first; ("", "") when unset or empty."""
    if environ.get(key, "").strip():
        return environ[key].strip(), "the environment"
    if dotenv.get(key, "").strip():
        return dotenv[key].strip(), ".env"
    return "", ""


def is_ci(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    for key in _CI_VARS:
        value = env.get(key, "").strip().lower()
        if value and value not in ("false", "0"):
            return True
    return False


def has_project_key(key: str) -> bool:
    """Whether `key` can send: a write-only project key ("phc_"), not the placeholder.

    Anything else (a personal "phx_" key would be a secret that can read data) is never sent.
    """
    return key.startswith("phc_") and key != PLACEHOLDER_API_KEY


def config_dir() -> Path:
    """The user's config dir for Starfish (`STARFISH_CONFIG_DIR` overrides the platform's)."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("starfish", appauthor=False))


def choice_path() -> Path:
    return config_dir() / CHOICE_FILE


def _legacy_choice_path() -> Path:
    """Where versions before 0.3 saved the choice: an old `disable` must keep holding."""
    return app_data_dir() / CHOICE_FILE


def _read_choice(path: Path) -> str | None:
    try:
        mode = json.loads(path.read_text()).get("mode")
    except (OSError, ValueError, AttributeError):
        return None
    return mode if mode in MODES else None


def saved_choice_and_path() -> tuple[str, Path] | None:
    """The saved mode and the file it came from: the config dir's, else a legacy one."""
    for path in (choice_path(), _legacy_choice_path()):
        mode = _read_choice(path)
        if mode is not None:
            return mode, path
    return None


def saved_choice() -> str | None:
    """The mode saved by `starfish telemetry enable|disable|local`, if any."""
    found = saved_choice_and_path()
    return found[0] if found else None


def save_choice(mode: str) -> Path:
    """Persist a choice; raises OSError when the app data dir cannot be written."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    path = choice_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"mode": mode}) + "\n")
    os.replace(tmp, path)
    return path


def env_says_off(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the real environment alone switches telemetry off.

    Cheap (no file I/O): lets a job's end skip everything when telemetry is switched off.
    """
    env = os.environ if environ is None else environ
    enabled = env.get("TELEMETRY_ENABLED", "").strip().lower()
    return enabled in _OFF or env.get("DO_NOT_TRACK", "").strip().lower() in _DNT


def resolve(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> TelemetrySettings:
    """Read every source once and decide; never raises on bad values (they are ignored)."""
    env = os.environ if environ is None else environ
    dotenv = _dotenv(cwd)
    enabled, enabled_from = _lookup(env, dotenv, "TELEMETRY_ENABLED")
    dnt, dnt_from = _lookup(env, dotenv, "DO_NOT_TRACK")
    if enabled.lower() in _OFF:
        mode, reason = "off", f"TELEMETRY_ENABLED={enabled} in {enabled_from}"
    elif dnt.lower() in _DNT:
        mode, reason = "off", f"DO_NOT_TRACK={dnt} in {dnt_from}"
    elif enabled.lower() == "local":
        mode, reason = "local", f"TELEMETRY_ENABLED={enabled} in {enabled_from}"
    elif enabled.lower() in _ON:
        mode, reason = "on", f"TELEMETRY_ENABLED={enabled} in {enabled_from}"
    else:
        found = saved_choice_and_path()
        if found is not None:
            mode, reason = found[0], f"saved choice in {found[1]}"
        else:
            mode, reason = "on", "default (nothing opted out)"
    endpoint = _lookup(env, dotenv, "POSTHOG_HOST")[0] or DEFAULT_ENDPOINT
    api_key = _lookup(env, dotenv, "STARFISH_TELEMETRY_API_KEY")[0] or POSTHOG_API_KEY
    if mode == "on" and not has_project_key(api_key):
        mode, reason = "local", NO_KEY_REASON
    debug = _lookup(env, dotenv, "TELEMETRY_DEBUG")[0].lower() in _ON
    merged = {**dotenv, **env}
    return TelemetrySettings(mode, reason, endpoint.rstrip("/"), api_key, debug, is_ci(merged))


def os_name() -> str:
    """`linux`, `darwin`, `windows` or another lowercase family name; never a host name."""
    platform = sys.platform
    if platform.startswith("linux"):
        return "linux"
    if platform.startswith("win"):
        return "windows"
    return platform.rstrip("0123456789") or "unknown"
