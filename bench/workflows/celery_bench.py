#!/usr/bin/env python3
"""Celery side of the workflow benchmark (``bench/run-workflows.sh``).

This file is both the Celery app and its client:

* the app: ``celery -A celery_bench worker --concurrency 4 --pool prefork`` (prefork is
  Celery's default pool; the script names it anyway), run from this directory. Broker and
  result backend are the same Redis (``CELERY_BENCH_REDIS``, default
  ``redis://127.0.0.1:6379/14``). Two tasks, the counterparts of Citadel's built-in kinds:

  - ``noop(submitted)``: returns at once.
  - ``embed_batch(submitted, model, texts)``: ``POST /api/embed`` to the same stand-in Ollama
    server Citadel's model is served by (``CELERY_BENCH_EMBED_URL``), over one keep-alive
    ``requests.Session`` per worker process, and returns the vectors, as Citadel's
    ``embed_batch`` returns them in its result.

  Each records ``time.time()`` when its body starts and ends, in its result.

* the client (``python celery_bench.py run --kind noop --n 2000``): submits ``--n`` tasks with
  ``apply_async`` from one thread (passing ``time.time()`` just before each call), as fast as
  it goes or at ``--rate`` tasks/s (open loop), then waits for every result and prints one
  JSON line in the shape ``citadel-wfbench`` prints::

    {"kind", "n", "concurrency", "seconds", "tasks_per_s", "start_p50_ms", "start_p99_ms",
     "failures", "end_p50_ms", "end_p99_ms", "submit_seconds", "busy_tasks_per_s",
     "successes", "submit_errors", "missing"}

  ``seconds``: from the first ``apply_async`` to the last result received; submit to start:
  the task's start time minus the client's time before ``apply_async`` (one machine, one
  clock); ``end``: the task's end time minus the same; ``submit_seconds``: the submit loop;
  ``busy_tasks_per_s``: successes over the first task start to the last task end (the
  worker's own rate). Percentiles are nearest-rank.

  The client submits from one thread, Celery's plain usage (``apply_async`` returns once the
  message is in Redis; the app's one Redis result consumer subscribes to each task). Compare
  ``busy_tasks_per_s`` with ``tasks_per_s``: when they are close, the worker, not this client,
  sets the pace.

Other commands: ``flush`` empties the Redis database (before the worker starts: the broker
keeps its queue bindings there) and ``ping`` waits until a worker answers a ``noop``.

Settings: Celery's defaults (prefetch multiplier 4, ``acks_late`` off, JSON serializer, results
kept a day, no task events) except the broker and backend URLs,
``broker_connection_retry_on_startup`` (silences a deprecation warning) and the worker's log
level (WARNING, as Citadel's ``warn``: INFO would print two lines per task).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from celery import Celery

REDIS = os.environ.get("CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/14")
EMBED_URL = os.environ.get("CELERY_BENCH_EMBED_URL", "http://127.0.0.1:11434/api/embed")

app = Celery("celery_bench", broker=REDIS, backend=REDIS)
app.conf.broker_connection_retry_on_startup = True

# One keep-alive session per worker process, made after the fork.
_session = None


def _http():
    global _session
    if _session is None:
        import requests

        _session = requests.Session()
    return _session


@app.task(name="noop")
def noop(submitted):
    started = time.time()
    return {"submitted": submitted, "started": started, "finished": time.time()}


@app.task(name="embed_batch")
def embed_batch(submitted, model, texts):
    started = time.time()
    answer = _http().post(EMBED_URL, json={"model": model, "input": texts}, timeout=60)
    answer.raise_for_status()
    embeddings = answer.json()["embeddings"]
    if len(embeddings) != len(texts):
        raise ValueError(f"{len(embeddings)} vectors for {len(texts)} texts")
    return {
        "submitted": submitted,
        "started": started,
        "finished": time.time(),
        "embeddings": embeddings,
    }


def percentile_ms(sorted_s, p):
    if not sorted_s:
        return None
    rank = min(max(math.ceil(p / 100 * len(sorted_s)), 1), len(sorted_s))
    return round(sorted_s[rank - 1] * 1000, 3)


def run(args):
    params = json.loads(args.params)
    task = {"noop": noop, "embed_batch": embed_batch}[args.kind]
    task_args = {"noop": lambda t: (t,), "embed_batch": lambda t: (t, params["model"], params["texts"])}[
        args.kind
    ]
    results, submit_errors = [], 0
    start = time.perf_counter()
    for i in range(args.n):
        if args.rate > 0:  # open loop: task i at i / rate seconds
            time.sleep(max(start + i / args.rate - time.perf_counter(), 0))
        try:
            results.append(task.apply_async(task_args(time.time())))
        except Exception as e:  # noqa: BLE001 - counted and reported
            submit_errors += 1
            if submit_errors == 1:
                print(f"celery_bench: apply_async failed: {e!r}", file=sys.stderr)
    submit_seconds = time.perf_counter() - start

    deadline = time.monotonic() + args.timeout
    successes = failures = missing = 0
    last = start
    starts, ends, started_at, finished_at = [], [], [], []
    for r in results:
        try:
            value = r.get(timeout=max(deadline - time.monotonic(), 0.001), propagate=False)
        except Exception as e:  # noqa: BLE001 - a time-out: counted as missing
            missing += 1
            if missing == 1:
                print(f"celery_bench: no result for {r.id}: {e!r}", file=sys.stderr)
            continue
        last = max(last, time.perf_counter())
        if r.successful() and isinstance(value, dict):
            successes += 1
            starts.append(value["started"] - value["submitted"])
            ends.append(value["finished"] - value["submitted"])
            started_at.append(value["started"])
            finished_at.append(value["finished"])
        else:
            failures += 1
            if failures == 1:
                print(f"celery_bench: task {r.id} failed: {value!r}", file=sys.stderr)
    seconds = last - start
    # The worker's own rate: from the first task start to the last task end.
    busy = (max(finished_at) - min(started_at)) if started_at else 0.0
    starts.sort()
    ends.sort()
    print(
        json.dumps(
            {
                "kind": args.kind,
                "n": args.n,
                "concurrency": 1,
                "rate": args.rate,
                "seconds": round(seconds, 3),
                "tasks_per_s": round(successes / seconds, 3) if seconds > 0 else 0.0,
                "start_p50_ms": percentile_ms(starts, 50),
                "start_p99_ms": percentile_ms(starts, 99),
                "failures": failures,
                "end_p50_ms": percentile_ms(ends, 50),
                "end_p99_ms": percentile_ms(ends, 99),
                "submit_seconds": round(submit_seconds, 3),
                "busy_tasks_per_s": round(successes / busy, 3) if busy > 0 else 0.0,
                "successes": successes,
                "submit_errors": submit_errors,
                "missing": missing,
            }
        ),
        flush=True,
    )
    return 0 if failures == 0 and missing == 0 and submit_errors == 0 else 1


def ping(args):
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            noop.apply_async((time.time(),)).get(timeout=max(deadline - time.monotonic(), 0.1))
            return 0
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() >= deadline:
                print(f"celery_bench: no worker answered within {args.timeout} s: {e!r}", file=sys.stderr)
                return 1


def flush(_args):
    app.backend.client.flushdb()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="submit N tasks, wait for them, print one JSON line")
    p.add_argument("--kind", choices=["noop", "embed_batch"], default="noop")
    p.add_argument("--params", default="{}", help='embed_batch: {"model": ..., "texts": [...]}')
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0.0, help="tasks/s, open loop (0: as fast as it goes)")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=run)
    p = sub.add_parser("ping", help="wait until a worker runs a noop")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=ping)
    sub.add_parser("flush", help="empty the Redis database").set_defaults(func=flush)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
