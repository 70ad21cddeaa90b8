"""`executor="ray"`: the same job, its calls on Ray actors, with the same guarantees."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from starfish import data_factory
from starfish.jobs import list_jobs, load_job

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _job(executor: str, marks: Path):
    """Failures, retries, timeouts, filtered records and dead inputs, decided by the input."""

    def not_seven(records, state):
        return "filtered" if records and records[0]["i"] % 13 == 0 else None

    @data_factory(
        executor=executor,
        storage="local",
        show_progress=False,
        max_concurrency=8,
        task_runner_timeout=3.0,
        job_run_stop_threshold=0,
        on_record_complete=not_seven,
    )
    async def gen(i: int):
        import os

        if i % 7 == 0:
            raise ValueError(f"seven divides {i}")
        if i % 11 == 0:
            await asyncio.sleep(30)  # past task_runner_timeout, every time
        first = os.path.join(marks, f"{i}")
        if i % 5 == 0 and not os.path.exists(first):
            open(first, "w").close()
            raise ConnectionError("flaky once")
        await asyncio.sleep(0.001 * (i % 4))
        return [{"i": i, "square": i * i}]

    return gen


def _outcome(gen):
    info = load_job(gen.job_id)
    failed = sorted(
        (r["index"], r["attempt"], r["error_type"], r["error"])
        for r in gen.get_output_data(filter="failed")
    )
    return {
        "records": gen.get_output_data(),
        "counts": info.counts,
        "errors": info.error_summary,
        "dead": gen.get_index_dead_queue(),
        "failed": failed,
        "filtered": gen.get_output_data(filter="filtered"),
        "status": info.status,
    }


def test_the_same_job_local_and_on_ray_gives_identical_results(tmp_path):
    results = {}
    for executor in ("local", "ray"):
        marks = tmp_path / executor
        marks.mkdir()
        gen = _job(executor, marks)
        returned = gen.run(i=list(range(60)))
        results[executor] = _outcome(gen)
        assert returned == results[executor]["records"]
    local, ray_ = results["local"], results["ray"]
    assert ray_ == local
    assert local["errors"] == {"ValueError": 27, "TimeoutError": 15, "ConnectionError": 9}
    assert [r["i"] for r in local["records"]][:5] == [1, 2, 3, 4, 5]  # input order
    assert load_job(list_jobs()[0].job_id).config["executor"] == "ray"


class _PeakServer:
    """A loopback TCP server that holds each connection 50 ms and records the peak held."""

    def __init__(self) -> None:
        import socketserver

        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.total = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with outer.lock:
                    outer.now += 1
                    outer.total += 1
                    outer.peak = max(outer.peak, outer.now)
                self.request.recv(64)
                time.sleep(0.05)
                with outer.lock:
                    outer.now -= 1
                self.request.sendall(b"ok")

        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_max_concurrency_holds_across_all_workers():
    server = _PeakServer()
    port = server.port
    try:

        @data_factory(executor="ray", storage="in_memory", show_progress=False, max_concurrency=6)
        async def hit(i: int):
            import asyncio

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hi")
            await writer.drain()
            await reader.read(2)
            writer.close()
            return {"i": i}

        assert len(hit.run(i=list(range(60)))) == 60
    finally:
        server.close()
    assert server.total == 60
    assert server.peak == 6  # reached, and never more, though two actors each take many


def test_a_worker_that_dies_mid_job_is_replaced_and_every_input_completes_once(tmp_path):
    marker = tmp_path / "died"
    calls = tmp_path / "calls"
    calls.mkdir()

    @data_factory(executor="ray", storage="local", show_progress=False, max_concurrency=10)
    async def gen(i: int):
        import os

        open(os.path.join(calls, f"{i}-{os.getpid()}-{time.monotonic_ns()}"), "w").close()
        await asyncio.sleep(0.02)
        if i == 25 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies with its batch in flight
        return {"i": i}

    records = gen.run(i=list(range(80)))
    assert records == [{"i": i} for i in range(80)]
    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.counts == {"completed": 80, "failed": 0, "filtered": 0, "duplicate": 0, "dead": 0}
    assert marker.exists()
    runs_of_25 = [p for p in os.listdir(calls) if p.startswith("25-")]
    assert len(runs_of_25) == 2  # sent again after the worker was lost


DRIVER = """
import asyncio, sys
from starfish import data_factory

@data_factory(executor="ray", max_concurrency=10, show_progress=False)
async def gen(i: int):
    import asyncio
    await asyncio.sleep(0.02)
    return {"i": i}

if sys.argv[1] == "run":
    gen.run(i=list(range(400)))
else:
    from starfish.data_factory import resume_from_checkpoint
    records = resume_from_checkpoint(sys.argv[2])
    print(len(records))
"""


def test_kill_9_of_the_driver_then_resume_completes_every_input_exactly_once(tmp_path, ray_cluster):
    import sqlite3

    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"
    proc = subprocess.Popen([sys.executable, str(script), "run"], env=env, cwd=tmp_path)

    def completed() -> int:
        if not db.exists():
            return 0
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute("SELECT count(*) FROM inputs").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

    deadline = time.monotonic() + 120
    while completed() < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_at_kill = completed()
    assert 100 <= done_at_kill < 400
    [job] = list_jobs()
    out = subprocess.run(
        [sys.executable, str(script), "resume", job.job_id],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "400"
    info = load_job(job.job_id)
    assert info.status == "completed" and info.counts["completed"] == 400
    from starfish.jobs import iter_records

    assert sorted(r["i"] for r in iter_records(job.job_id)) == list(range(400))


def test_the_namespace_has_nothing_but_loopback():
    """The guarantee every other test here leans on: no address but loopback exists."""
    assert [name for _, name in __import__("socket").if_nameindex()] == ["lo"]
    with pytest.raises(OSError):
        import socket

        socket.create_connection(("10.0.0.1", 9), timeout=1)
