"""Local storage: one SQLite database in WAL mode for every job.

Layout, chosen for write speed:
- `jobs`: one row per job; `specs`: the pickled call spec (function, inputs, config).
- `inputs`: one row per *finished* input, keyed by `jid << 32 | index` as the rowid, so an
  insert touches one b-tree and reading a job in input order is a rowid range scan. The
  completed records are one JSON array per input.
- `attempts`: attempts that did not complete (failed / filtered / duplicate).
- `state`: the job state, one row per key (JSON), written per changed key in the same
  transaction as the outcomes whose hooks changed it. (`jobs.state` is read only for jobs
  stored before this table existed.)
- `input_rows`: the rows of an input file, one per input (see `input_rows`).
- `llm_cache`, `llm_counts`: model answers and per-job model counts (see `cache`), written by
  the job's writer with the outcomes.

Writes are committed on the event loop once per turn of the loop (group commit, see
`writer`): a finished input is durable before the loop starts anything else.
`synchronous=NORMAL` under WAL: a commit survives a process crash (kill -9); only a power
loss can drop the last transactions.

Modules: `connection` (schema, connection, keys, the transaction helper), `cache` (model
answers and counts), `errors` (one-line
storage errors), `codec` (JSON text in and out), `writer` (a job's outcomes), `reads`
(everything read back), `input_rows` (input files streamed in and read back), `reserve`
(disk space for the final row), `store` (`SqliteStorage`, the interface over them).
"""

from __future__ import annotations

from starfish.data_factory.storage.sqlite.connection import connect
from starfish.data_factory.storage.sqlite.errors import storage_error
from starfish.data_factory.storage.sqlite.store import SqliteStorage

__all__ = ["SqliteStorage", "connect", "storage_error"]
