#!/usr/bin/env bash
# `make demo`: the main job end to end, on an embedded generator with no key and no network.
#
# Runs examples/qa_pairs.py over examples/topics.jsonl (QA_PAIRS_MODEL=embedded: never a model,
# even with a key in your environment or a local Ollama running), shows the stored job, exports its
# records to JSONL, and shows the telemetry event that would have been sent. Telemetry is
# `local`: events go to a log on this machine and no host is contacted. Everything the demo
# stores lives in .demo/ (gitignored; STARFISH_DEMO_DIR overrides), so your own jobs are left alone.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
if [[ -x "$ROOT/.venv/bin/starfish" ]]; then
    STARFISH=("$ROOT/.venv/bin/starfish")
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON="${PYTHON:-python3}"
    STARFISH=("$PYTHON" -m starfish)
fi

DEMO_DIR="${STARFISH_DEMO_DIR:-$ROOT/.demo}"
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
export STARFISH_LOCAL_STORAGE_DIR="$DEMO_DIR/appdata"
export TELEMETRY_ENABLED=local
export QA_PAIRS_MODEL=embedded

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step starfish run examples/qa_pairs.py:qa_pairs --input examples/topics.jsonl --max-concurrency 4
"${STARFISH[@]}" run examples/qa_pairs.py:qa_pairs --input examples/topics.jsonl --max-concurrency 4

JOB_ID="$("${STARFISH[@]}" jobs list --json | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)[0]["job_id"])')"

step starfish jobs show "$JOB_ID"
"${STARFISH[@]}" jobs show "$JOB_ID"

step starfish jobs export "$JOB_ID" --output .demo/qa_pairs.jsonl
"${STARFISH[@]}" jobs export "$JOB_ID" --output "$DEMO_DIR/qa_pairs.jsonl"
echo "first two records:"
head -n 2 "$DEMO_DIR/qa_pairs.jsonl"

step starfish telemetry log
"${STARFISH[@]}" telemetry log

DEMO_REL="${DEMO_DIR#"$ROOT"/}"
cat <<NEXT

Done. The demo kept its files in $DEMO_REL (delete it any time).

What to try next:
  source .venv/bin/activate     # the starfish command, in this shell (or call .venv/bin/starfish)
  STARFISH_LOCAL_STORAGE_DIR=$DEMO_REL/appdata starfish jobs list     # the demo's job
  STARFISH_LOCAL_STORAGE_DIR=$DEMO_REL/appdata starfish jobs export $JOB_ID --output qa.csv
  starfish run examples/qa_pairs.py:qa_pairs --input examples/topics.jsonl --output qa.jsonl
  QA_PAIRS_MODEL=openai/gpt-4o-mini starfish run examples/qa_pairs.py:qa_pairs \\
      --input examples/topics.jsonl      # the same job against a model (needs OPENAI_API_KEY)
  Then your own function: the README's quick start, and docs/cli.md for every command.
NEXT
