#!/usr/bin/env bash
# The Ray tests, inside a network namespace that has only loopback: Ray probes outside
# addresses (8.8.8.8, 169.254.169.254) and binds every interface anywhere else.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
if ! "$PY" -c "import ray" 2>/dev/null; then
    echo "SKIPPED the Ray tests (tests/ray): Ray is not installed (pip install -e '.[dev]')" >&2
    exit 0
fi
if ! unshare -n true 2>/dev/null; then
    echo "SKIPPED the Ray tests (tests/ray): 'unshare -n' is not possible here (it needs root" \
        "or user namespaces), and Ray must not run outside a loopback-only namespace" >&2
    exit 0
fi
exec unshare -n sh -c "ip link set lo up && STARFISH_IN_LOOPBACK_NAMESPACE=1 exec $PY -m pytest tests/ray -p no:cacheprovider $*"
