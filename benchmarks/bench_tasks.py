"""FastAPIDriver tasks: submit and poll rates with each task store, side by side in one run.

One FastAPIDriver per store (``memory``, an SQLite file, Redis on 127.0.0.1:6379, PostgreSQL on
127.0.0.1:5432 db ``test``; a server that does not answer is left out), each on the ``local``
runtime serving a 1-cell pipeline (``y = x + 1``), loaded one after the other, in ``--rounds``
alternated rounds (medians reported), from this process with one keep-alive connection:

- **submit+wait**: ``POST /tasks`` then ``GET /tasks/{id}?wait=5`` until done, ``--tasks`` times;
- **burst**: ``--tasks`` ``POST /tasks`` back to back, then each polled (``?wait=5``) until done;
- **poll**: ``GET /tasks/{id}`` of a finished task, ``--polls`` times;

and then each store alone, in this process: microseconds per task of its two writes and per poll
(the least noisy figure on a busy machine).

Prints tasks/s (polls/s) per store and each store's ratio to ``memory``.

    python benchmarks/bench_tasks.py [--tasks 300] [--polls 1000] [--rounds 3] [--runtime local] [--write]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from _report import machine, per_call_seconds, write_section  # noqa: E402
from _toys import inc_chain  # noqa: E402

from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def stores(folder: str) -> dict[str, str]:
    found = {"memory": "memory", "sqlite": f"sqlite:///{folder}/tasks.sqlite3"}
    if _up(6379):
        found["redis"] = "redis://127.0.0.1:6379/0"
    if _up(5432):
        found["postgresql"] = "postgresql://postgres@127.0.0.1:5432/test"
    return found


def submit_wait(http: httpx.Client, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        task = http.post("/tasks", json={"inputs": {"x": i}}).json()
        while http.get(f"/tasks/{task['id']}", params={"wait": 5}).json()["status"] not in ("done", "failed"):
            pass
    return n / (time.perf_counter() - start)


def burst(http: httpx.Client, n: int) -> float:
    start = time.perf_counter()
    ids = [http.post("/tasks", json={"inputs": {"x": i}}).json()["id"] for i in range(n)]
    for task_id in ids:
        while http.get(f"/tasks/{task_id}", params={"wait": 5}).json()["status"] not in ("done", "failed"):
            pass
    return n / (time.perf_counter() - start)


def poll(http: httpx.Client, n: int) -> float:
    task_id = http.post("/tasks", json={"inputs": {"x": 1}}).json()["id"]
    http.get(f"/tasks/{task_id}", params={"wait": 5})
    start = time.perf_counter()
    for _ in range(n):
        assert http.get(f"/tasks/{task_id}").status_code == 200
    return n / (time.perf_counter() - start)


def store_costs(urls: dict[str, str], n: int) -> dict[str, tuple[float, float]]:
    """Per store, microseconds per task of its writes (insert when accepted + update when finished) and per poll
    (one read), measured on the store alone, in this process (median of 5 rounds of ``n``)."""
    from rvai_sdk.extensions.drivers.http.task_store import open_task_backend

    costs: dict[str, tuple[float, float]] = {}
    result = {"y": 1}
    for name, url in urls.items():
        backend = open_task_backend(url, f"bench-{uuid.uuid4().hex[:8]}")
        counter = iter(range(10**9))
        ids: list[str] = []

        def write() -> None:
            task_id = f"{next(counter):032x}"
            record = {"id": task_id, "status": "running", "sid": None, "received": time.time(), "started": time.time(),
                      "finished": None, "result": None, "error": None, "callback": None, "callback_url": None, "owner": "b"}
            backend.insert(record)
            backend.update({**record, "status": "done", "finished": time.time(), "result": result})
            ids.append(task_id)

        writes = per_call_seconds(write, number=n)
        reads = per_call_seconds(lambda: backend.get(ids[-1], 600.0), number=n)
        backend.sweep(0.0)
        backend.close()
        costs[name] = (writes * 1e6, reads * 1e6)
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--polls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", default="local")
    ap.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    args = ap.parse_args()

    pipeline = inc_chain(1, "bench-tasks")
    rates: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder, init(args.runtime) as rt, rt.start_inference(
        Inference(pipeline=pipeline)
    ) as proc:
        urls = stores(folder)
        for round_ in range(args.rounds):
            for name, url in urls.items():
                ref = f"http-{name}"
                driver = proc.add_driver(ref, FastAPIDriver, {"task_store": url, "max_pending_tasks": args.tasks + 10})
                try:
                    with FastAPIClient(process=driver) as client:
                        client.wait(timeout=60)
                        with httpx.Client(base_url=client.base_url, timeout=30) as http:
                            row = rates.setdefault(name, {"submit+wait": [], "burst": [], "poll": []})
                            row["submit+wait"].append(submit_wait(http, args.tasks))
                            row["burst"].append(burst(http, args.tasks))
                            row["poll"].append(poll(http, args.polls))
                finally:
                    proc.remove_driver(ref)
                print(f"round {round_ + 1}/{args.rounds}: {name} done", file=sys.stderr)

        costs = store_costs(urls, args.polls // 2)

    base = {k: statistics.median(v) for k, v in rates["memory"].items()}
    lines = [
        f"Machine: {machine()}; runtime `{args.runtime}`; {args.tasks} tasks, {args.polls} polls, "
        f"medians of {args.rounds} alternated rounds (`python benchmarks/bench_tasks.py`).",
        "",
        "| store | submit+wait tasks/s | burst tasks/s | poll GETs/s | ratio to memory (submit+wait / burst / poll) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, row in rates.items():
        med = {k: statistics.median(v) for k, v in row.items()}
        ratio = " / ".join(f"{med[k] / base[k]:.2f}x" for k in ("submit+wait", "burst", "poll"))
        lines.append(f"| {name} | {med['submit+wait']:.0f} | {med['burst']:.0f} | {med['poll']:.0f} | {ratio} |")
    lines += [
        "",
        "The store alone (in one process, no HTTP; median of 5 rounds): microseconds per task for its two writes "
        "(accepted, finished) and per poll (one read).",
        "",
        "| store | writes per task, us | read per poll, us |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {w:.0f} | {r:.0f} |" for name, (w, r) in costs.items()]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "performance.md", "tasks", "## Task stores\n\n" + table)


if __name__ == "__main__":
    main()
