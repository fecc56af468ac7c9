#!/usr/bin/env python3
"""Embeddings benchmark: Citadel's in-process model (over HTTP) vs sentence-transformers.

Both run on this machine in the same invocation, on the same deterministic corpus:

* sentence-transformers: ``SentenceTransformer(model_dir, device="cpu")`` with
  ``torch.set_num_threads(2)`` and ``encode(corpus, batch_size=32)`` -- a library call,
  no HTTP.
* the server: ``POST /v1/embeddings`` (OpenAI shape) with 32 inputs per request from
  ``--concurrency`` threads, each holding one keep-alive ``http.client`` connection;
  ``encoding_format`` "float" (timed over ``--passes`` passes) and "base64" (one pass).
* light-load latency: sequential single-input requests on one thread.
* correctness: minimum cosine between the server's vectors and sentence-transformers'.

Any non-200 answer (or a malformed 200) is a failure: they are counted and printed, and
the script exits non-zero if there was any. Results (and machine info) go to ``--out``.

Usually run through ``bench/run-embeddings.sh``, which builds and starts the server.
Only the standard library plus numpy, torch and sentence-transformers are used.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as _dt
import http.client
import json
import math
import os
import platform
import queue
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

# The model is loaded from a local directory; never try to reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

CORPUS_SEED = 20240611
SHUFFLE_SEED = 7
CORPUS_SIZE = 1024
QUICK_CORPUS_SIZE = 128
MIN_WORDS = 5
MAX_WORDS = 60
BATCH = 32  # inputs per request, and sentence-transformers' batch_size
LATENCY_REQUESTS = 300
LATENCY_WARMUP = 20
QUICK_LATENCY_REQUESTS = 40
QUICK_LATENCY_WARMUP = 5
EMBEDDINGS_PATH = "/v1/embeddings"
COSINE_WARN_BELOW = 0.99

# ---------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------

# A fixed list of common English words: almost all are one WordPiece each in MiniLM's
# uncased vocabulary. The compound words in _LONGER split into 2-5 pieces (2.8 on average);
# with those, numbers and punctuation the corpus averages ~1.35 pieces per word: 32.5 words
# and ~45.9 word pieces per sentence, [CLS] and [SEP] included (~43.9 without).
_COMMON = """
the of and to in is it you that he was for on are with as his they be at one have this
from or had by word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like
so these her long make thing see him two has look more day could go come did number
sound no most people my over know water than call first who may down side been now find
any new work part take get place made live where after back little only round man year
came show every good me give our under name very through just form sentence great think
say help low line differ turn cause much mean before move right boy old too same tell
does set three want air well also play small end put home read hand port large spell add
even land here must big high such follow act why ask men change went light kind off need
house picture try us again animal point mother world near build self earth father head
stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard
start might story saw far sea draw left late run while press close night real life few
north open seem together next white children begin got walk example ease paper group
always music those both mark often letter until mile river car feet care second book
carry took science eat room friend began idea fish mountain stop once base hear horse
cut sure watch color face wood main enough plain girl usual young ready above ever red
list though feel talk bird soon body dog family direct pose leave song measure door
product black short class wind question happen complete ship area half rock order fire
south problem piece told knew pass since top whole king space heard best hour better
true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several vowel toward war lay
against pattern slow center love person money serve appear road map rain rule govern
pull cold notice voice unit power town fine certain fly fall lead cry dark machine note
wait plan figure star box noun field rest correct able pound done beauty drive stood
contain front teach week final gave green quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay
wheel full force blue object decide surface deep moon island foot system busy test
record boat common gold possible plane dry wonder laugh thousand ago ran check game
shape equate hot miss brought heat snow tire bring yes distant fill east paint language
among
""".split()

_LONGER = """
unbelievably reconfiguration thunderstorm wholesome carelessly bookshelves rearranged
sunflowers cobblestones windmills weathervane tablecloth notebooks sandcastles fireflies
moonlit riverbanks snowdrifts overcooked unhurried lamplight beekeepers hillsides rooftops
wildflowers daydreaming breadcrumbs doorsteps seashells stargazing raincoats woodpeckers
buttercups teacups cornfields headlamps meadowlarks sleepwalking undercooked handwritten
pinecones shipwrecks clockmaker timetables overfilled unwrapped reheated misplaced
untangled rewritten unpacked backpacks snowflakes candlesticks toolboxes paintbrushes
spoonfuls
""".split()

WORDS = _COMMON + _LONGER
_END_PUNCT = [".", ".", ".", ".", "!", "?"]
_MID_PUNCT = [",", ",", ",", ",", ";", ":"]
_PROPER = ["Anna", "London", "Monday", "Paris", "Tom", "March", "Oslo", "Maria", "Kyoto", "Friday"]


def _sentence(rng: random.Random) -> str:
    n = rng.randint(MIN_WORDS, MAX_WORDS)  # uniform word count
    words = []
    for i in range(n):
        r = rng.random()
        if r < 0.03:
            w = _PROPER[rng.randrange(len(_PROPER))]
        elif r < 0.045:
            w = str(rng.randint(2, 2024))
        elif r < 0.155:
            w = _LONGER[rng.randrange(len(_LONGER))]
        else:
            w = _COMMON[rng.randrange(len(_COMMON))]
        if i > 0 and i < n - 1 and rng.random() < 0.08:
            w += _MID_PUNCT[rng.randrange(len(_MID_PUNCT))]
        elif i > 0 and rng.random() < 0.02:
            w = '"' + w + '"'
        words.append(w)
    words[0] = words[0][:1].upper() + words[0][1:]
    s = " ".join(words)
    return s + _END_PUNCT[rng.randrange(len(_END_PUNCT))]


def build_corpus(size: int = CORPUS_SIZE, seed: int = CORPUS_SEED) -> list[str]:
    """`size` distinct English-like sentences of MIN_WORDS..MAX_WORDS words, deterministic."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < size:
        s = _sentence(rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo = math.floor(k)
    hi = math.ceil(k)
    if lo == hi:
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 3)


def fmt(v, spec: str = ".1f", none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    mem_total = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    git = None
    try:
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": cpu or platform.processor() or None,
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": mem_total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": git,
        "loadavg_at_start": _loadavg(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------
# Baseline: sentence-transformers, in process
# ---------------------------------------------------------------------------------------


def run_baseline(model_dir: str, corpus: list[str], passes: int, threads: int):
    import numpy as np
    import sentence_transformers
    import torch

    torch.set_num_threads(threads)
    t = time.perf_counter()
    model = sentence_transformers.SentenceTransformer(model_dir, device="cpu")
    load_s = time.perf_counter() - t

    def encode():
        return model.encode(corpus, batch_size=BATCH, show_progress_bar=False, convert_to_numpy=True)

    t = time.perf_counter()
    ref = encode()  # warm-up pass; its vectors are the reference
    warm_s = time.perf_counter() - t
    pass_s = []
    for _ in range(passes):
        t = time.perf_counter()
        encode()
        pass_s.append(time.perf_counter() - t)
    total = sum(pass_s)

    ref = np.asarray(ref, dtype=np.float32)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    tok = model.tokenizer(corpus, add_special_tokens=True, padding=False, truncation=False)["input_ids"]
    lengths = [len(x) for x in tok]
    result = {
        "engine": "sentence-transformers",
        "model_dir": model_dir,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "batch_size": BATCH,
        "passes": passes,
        "load_s": round(load_s, 3),
        "warmup_pass_s": round(warm_s, 3),
        "pass_s": [round(x, 4) for x in pass_s],
        "embeddings": len(corpus) * passes,
        "emb_per_s": len(corpus) * passes / total,
        "dim": int(dim_fn()),
        "max_seq_length": getattr(model, "max_seq_length", None),
        "corpus_tokens_with_special": sum(lengths),
        "corpus_tokens_over_max_seq_length": sum(
            1 for n in lengths if model.max_seq_length and n > model.max_seq_length
        ),
    }
    versions = {
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "numpy": np.__version__,
    }
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except Exception:  # noqa: BLE001 - informational only
        pass
    try:
        import tokenizers

        versions["tokenizers"] = tokenizers.__version__
    except Exception:  # noqa: BLE001
        pass
    return ref, result, versions


# ---------------------------------------------------------------------------------------
# HTTP client
# ---------------------------------------------------------------------------------------


class Failure(Exception):
    pass


class Target:
    def __init__(self, url: str, api_key: str | None, timeout: float):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"--url must look like http://127.0.0.1:PORT, got {url!r}")
        self.host = u.hostname
        self.port = u.port or 80
        self.path = u.path.rstrip("/") + EMBEDDINGS_PATH
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"


class Client:
    """One keep-alive HTTP/1.1 connection (use from one thread only)."""

    def __init__(self, target: Target):
        self.t = target
        self.conn: http.client.HTTPConnection | None = None
        self.connects = 0
        self.retries = 0

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.t.host, self.t.port, timeout=self.t.timeout)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, body: bytes) -> tuple[int, bytes, float]:
        """POST body; returns (status, response body, seconds until the body was read).

        A keep-alive connection the server closed while idle is reopened and the request
        sent once more (as HTTP clients do); such retries are counted. Other errors raise.
        """
        for attempt in (0, 1):
            reused = self.conn is not None
            t0 = time.perf_counter()
            try:
                if self.conn is None:
                    self._connect()
                self.conn.request("POST", self.t.path, body=body, headers=self.t.headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                if reused and attempt == 0:
                    self.retries += 1
                    continue
                raise Failure(f"connection error: {e!r}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise Failure(f"connection error: {e!r}") from e
            elapsed = time.perf_counter() - t0
            if resp.will_close:
                self.close()
            return resp.status, data, elapsed
        raise AssertionError("unreachable")


def request_body(model: str, inputs, encoding_format: str) -> bytes:
    return json.dumps(
        {"model": model, "input": inputs, "encoding_format": encoding_format},
        ensure_ascii=False,
    ).encode("utf-8")


def decode_response(status: int, data: bytes, n_inputs: int, encoding_format: str, dim: int | None):
    """Validate an OpenAI-shaped embeddings answer; returns (list of float32 vectors, usage)."""
    import numpy as np

    if status != 200:
        raise Failure(f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}")
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise Failure(f"HTTP 200 but body is not JSON ({e}): {data[:200]!r}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise Failure(f"HTTP 200 but no 'data' list: {data[:200]!r}")
    items = doc["data"]
    if len(items) != n_inputs:
        raise Failure(f"sent {n_inputs} inputs, got {len(items)} embeddings")
    vecs: list = [None] * n_inputs
    for pos, item in enumerate(items):
        idx = item.get("index", pos) if isinstance(item, dict) else None
        if not isinstance(idx, int) or not 0 <= idx < n_inputs or vecs[idx] is not None:
            raise Failure(f"bad or repeated 'index' {idx!r} in data[{pos}]")
        emb = item.get("embedding")
        if encoding_format == "base64":
            if not isinstance(emb, str):
                raise Failure(f"encoding_format base64 but data[{pos}].embedding is {type(emb).__name__}")
            try:
                raw = base64.b64decode(emb, validate=True)
            except ValueError as e:
                raise Failure(f"data[{pos}].embedding is not valid base64: {e}") from e
            if len(raw) % 4:
                raise Failure(f"data[{pos}].embedding: {len(raw)} bytes is not a float32 array")
            v = np.frombuffer(raw, dtype="<f4")
        else:
            if not isinstance(emb, list):
                raise Failure(f"encoding_format float but data[{pos}].embedding is {type(emb).__name__}")
            v = np.asarray(emb, dtype=np.float32)
        if v.ndim != 1 or (dim is not None and v.shape[0] != dim):
            raise Failure(f"data[{pos}].embedding has {v.shape[0]} dims, expected {dim}")
        if not np.all(np.isfinite(v)):
            raise Failure(f"data[{pos}].embedding has non-finite values")
        vecs[idx] = v
    return vecs, doc.get("usage"), doc.get("model")


class Failures:
    def __init__(self, show: int = 10):
        self.count = 0
        self.by_phase: dict[str, int] = {}
        self.samples: list[str] = []
        self.show = show
        self.lock = threading.Lock()

    def add(self, phase: str, msg: str):
        with self.lock:
            self.count += 1
            self.by_phase[phase] = self.by_phase.get(phase, 0) + 1
            if len(self.samples) < 50:
                self.samples.append(f"[{phase}] {msg}")
            if self.count <= self.show:
                print(f"FAILURE [{phase}] {msg}", file=sys.stderr, flush=True)
            elif self.count == self.show + 1:
                print("FAILURE ... (further failures counted, not printed)", file=sys.stderr, flush=True)


def run_load(target, bodies, warmup_bodies, concurrency, failures: Failures, phase: str):
    """Send `bodies` (list of (key, bytes)) from `concurrency` threads, one keep-alive
    connection each. Each thread first sends its share of `warmup_bodies` (untimed).
    Returns (wall seconds, {key: (status, body, latency)}, connects, retries)."""
    work: queue.Queue = queue.Queue()
    for item in bodies:
        work.put(item)
    results: dict = {}
    res_lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    clients = [Client(target) for _ in range(concurrency)]

    def worker(i: int):
        c = clients[i]
        try:
            for body in warmup_bodies[i::concurrency]:
                try:
                    status, data, _ = c.post(body)
                    if status != 200:
                        failures.add(phase + " warm-up", f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}")
                except Failure as e:
                    failures.add(phase + " warm-up", str(e))
        finally:
            start.wait()
        while True:
            try:
                key, body = work.get_nowait()
            except queue.Empty:
                break
            try:
                res = c.post(body)
            except Failure as e:
                failures.add(phase, str(e))
                continue
            with res_lock:
                results[key] = res
        c.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return wall, results, sum(c.connects for c in clients), sum(c.retries for c in clients)


def throughput(target, args, corpus, batches, encoding_format, passes, dim, failures, phase):
    """Timed passes over the corpus; responses are parsed after the clock stops."""
    import numpy as np

    bodies = [
        ((p, b), request_body(args.model_name, [corpus[i] for i in batch], encoding_format))
        for p in range(passes)
        for b, batch in enumerate(batches)
    ]
    n_warm = max(args.concurrency * 2, 4)
    warm = [
        request_body(args.model_name, [corpus[i] for i in batches[(len(batches) - 1 - k) % len(batches)]], encoding_format)
        for k in range(n_warm)
    ]
    wall, results, connects, retries = run_load(target, bodies, warm, args.concurrency, failures, phase)

    vectors = [[None] * len(corpus) for _ in range(passes)]
    latencies = []
    ok_embeddings = 0
    prompt_tokens = [0] * passes
    usage_missing = 0
    model_names = set()
    for (p, b), (status, data, lat) in sorted(results.items()):
        batch = batches[b]
        try:
            vecs, usage, model_name = decode_response(status, data, len(batch), encoding_format, dim)
        except Failure as e:
            failures.add(phase, str(e))
            continue
        latencies.append(lat)
        ok_embeddings += len(batch)
        model_names.add(model_name)
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            prompt_tokens[p] += usage["prompt_tokens"]
        else:
            usage_missing += 1
        for i, v in zip(batch, vecs):
            vectors[p][i] = v

    # Run-to-run stability of the server's vectors across passes.
    max_pass_diff = None
    for p in range(1, passes):
        for i in range(len(corpus)):
            a, b = vectors[0][i], vectors[p][i]
            if a is not None and b is not None:
                d = float(np.max(np.abs(a - b)))
                max_pass_diff = d if max_pass_diff is None else max(max_pass_diff, d)

    result = {
        "encoding_format": encoding_format,
        "concurrency": args.concurrency,
        "inputs_per_request": BATCH,
        "passes": passes,
        "requests": len(bodies),
        "ok_requests": len(latencies),
        "warmup_requests": n_warm,
        "embeddings": ok_embeddings,
        "wall_s": round(wall, 4),
        "emb_per_s": ok_embeddings / wall if wall > 0 and ok_embeddings else None,
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p90": ms(percentile(latencies, 90)),
            "p99": ms(percentile(latencies, 99)),
            "max": ms(max(latencies) if latencies else None),
        },
        "connections_opened": connects,
        "keepalive_retries": retries,
        "usage_prompt_tokens_per_pass": prompt_tokens,
        "responses_without_usage": usage_missing,
        "response_model": sorted(str(m) for m in model_names),
        "max_abs_diff_between_passes": max_pass_diff,
    }
    return result, vectors[0]


def light_latency(target, args, corpus, order, n_requests, n_warmup, dim, failures):
    """Sequential single-input requests on one thread (one keep-alive connection)."""
    c = Client(target)
    k = 0

    def next_sentence():
        nonlocal k
        i = order[k % len(order)]
        k += 1
        return i

    for _ in range(n_warmup):
        try:
            status, data, _ = c.post(request_body(args.model_name, corpus[next_sentence()], "float"))
            if status != 200:
                failures.add("latency warm-up", f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}")
        except Failure as e:
            failures.add("latency warm-up", str(e))
    samples = []
    for _ in range(n_requests):
        i = next_sentence()
        body = request_body(args.model_name, corpus[i], "float")
        try:
            samples.append((i, c.post(body)))
        except Failure as e:
            failures.add("latency", str(e))
    c.close()
    lat = []
    vecs = {}
    for i, (status, data, t) in samples:
        try:
            v, _, _ = decode_response(status, data, 1, "float", dim)
        except Failure as e:
            failures.add("latency", str(e))
            continue
        lat.append(t)
        vecs[i] = v[0]
    return {
        "requests": n_requests,
        "warmup_requests": n_warmup,
        "ok_requests": len(lat),
        "inputs_per_request": 1,
        "p50": ms(percentile(lat, 50)),
        "p90": ms(percentile(lat, 90)),
        "p99": ms(percentile(lat, 99)),
        "mean": ms(sum(lat) / len(lat) if lat else None),
        "max": ms(max(lat) if lat else None),
        "connections_opened": c.connects,
        "keepalive_retries": c.retries,
    }, vecs


def cosine_report(ref, vectors: dict | list, corpus) -> dict:
    """Min/mean cosine between server vectors (L2-normalised here) and the reference."""
    import numpy as np

    items = vectors.items() if isinstance(vectors, dict) else enumerate(vectors)
    cos = []
    norms = []
    for i, v in items:
        if v is None:
            continue
        n = float(np.linalg.norm(v))
        norms.append(n)
        cos.append((float(np.dot(v / n, ref[i])) if n > 0 else float("nan"), i))
    if not cos:
        return {"compared": 0, "min": None}
    worst, wi = min(cos, key=lambda x: (not math.isnan(x[0]), x[0]))
    return {
        "compared": len(cos),
        "min": worst,
        "mean": sum(c for c, _ in cos) / len(cos),
        "worst_sentence": corpus[wi],
        "server_norm_min": min(norms),
        "server_norm_max": max(norms),
    }


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--model-dir", default="models/all-minilm", help="sentence-transformers model directory")
    ap.add_argument("--out", default="target/bench/embeddings.json", help="JSON results file")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads for throughput (default 4)")
    ap.add_argument("--passes", type=int, default=2, help="timed passes over the corpus (default 2)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--model-name", default="all-minilm", help='"model" sent in requests')
    ap.add_argument("--int8-model", default="all-minilm:int8",
                    help='also measure this quantized model (float, one pass); "" to skip')
    ap.add_argument("--api-key", default=os.environ.get("CITADEL_API_KEY"), help="Bearer token, if needed")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the baseline (default 2)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, seconds")
    args = ap.parse_args(argv)
    if args.concurrency < 1 or args.passes < 1:
        ap.error("--concurrency and --passes must be >= 1")

    size = QUICK_CORPUS_SIZE if args.quick else CORPUS_SIZE
    passes = 1 if args.quick else args.passes
    n_lat, n_lat_warm = (QUICK_LATENCY_REQUESTS, QUICK_LATENCY_WARMUP) if args.quick else (LATENCY_REQUESTS, LATENCY_WARMUP)

    corpus = build_corpus(CORPUS_SIZE)[:size]
    words = [len(s.split()) for s in corpus]
    target = Target(args.url, args.api_key, args.timeout)
    failures = Failures()
    info = machine_info()
    print(
        f"corpus: {len(corpus)} sentences, {min(words)}-{max(words)} words (mean {sum(words) / len(words):.1f}); "
        f"server {args.url}; model dir {args.model_dir}; {info['nproc']} CPUs ({info['cpu_model']})",
        flush=True,
    )

    # 0. one request first, so that an unreachable or broken server fails fast.
    pre = Client(target)
    try:
        status, data, _ = pre.post(request_body(args.model_name, corpus[0], "float"))
        decode_response(status, data, 1, "float", None)
    except Failure as e:
        print(f"FAILED: preflight POST {target.path} to {args.url}: {e}", file=sys.stderr)
        return 1
    finally:
        pre.close()

    # 1. sentence-transformers in process.
    print(f"sentence-transformers: warm-up + {passes} timed pass(es), batch_size {BATCH}, {args.threads} torch threads ...", flush=True)
    ref, baseline, versions = run_baseline(args.model_dir, corpus, passes, args.threads)
    info.update(versions)
    dim = baseline["dim"]
    print(f"  {baseline['emb_per_s']:.1f} emb/s", flush=True)

    # 2. server throughput, float, then base64.
    order = list(range(len(corpus)))
    random.Random(SHUFFLE_SEED).shuffle(order)
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]

    print(f"server float: warm-up + {passes} timed pass(es), {len(batches)} requests of {BATCH} per pass, concurrency {args.concurrency} ...", flush=True)
    srv_float, float_vecs = throughput(target, args, corpus, batches, "float", passes, dim, failures, "float")
    print(f"  {fmt(srv_float['emb_per_s'])} emb/s", flush=True)

    print("server base64: warm-up + 1 timed pass ...", flush=True)
    srv_b64, b64_vecs = throughput(target, args, corpus, batches, "base64", 1, dim, failures, "base64")
    print(f"  {fmt(srv_b64['emb_per_s'])} emb/s", flush=True)

    # 2b. the INT8 variant, same corpus and load, one pass.
    srv_int8, int8_vecs = None, None
    if args.int8_model:
        print(f"server {args.int8_model}, float: warm-up + 1 timed pass ...", flush=True)
        int8_args = copy.copy(args)
        int8_args.model_name = args.int8_model
        srv_int8, int8_vecs = throughput(target, int8_args, corpus, batches, "float", 1, dim, failures, "int8")
        print(f"  {fmt(srv_int8['emb_per_s'])} emb/s", flush=True)

    # 3. light-load latency.
    print(f"light-load latency: {n_lat_warm} warm-up + {n_lat} sequential single-input requests ...", flush=True)
    lat_order = order[::-1]
    light, light_vecs = light_latency(target, args, corpus, lat_order, n_lat, n_lat_warm, dim, failures)

    # 4. correctness.
    cos_float = cosine_report(ref, float_vecs, corpus)
    cos_b64 = cosine_report(ref, b64_vecs, corpus)
    cos_single = cosine_report(ref, light_vecs, corpus)
    cos_int8 = cosine_report(ref, int8_vecs, corpus) if int8_vecs is not None else None
    tokens_server = srv_float["usage_prompt_tokens_per_pass"][0] if srv_float["ok_requests"] else None

    base = baseline["emb_per_s"]

    def ratio(x):
        return None if x is None or not base else x / base

    report = {
        "benchmark": "citadel embeddings vs sentence-transformers",
        "machine": info,
        "config": {
            "url": args.url,
            "model_dir": args.model_dir,
            "model_name": args.model_name,
            "quick": args.quick,
            "corpus_sentences": len(corpus),
            "corpus_seed": CORPUS_SEED,
            "shuffle_seed": SHUFFLE_SEED,
            "words_min": min(words),
            "words_max": max(words),
            "words_mean": sum(words) / len(words),
            "word_pieces_mean_with_special": baseline["corpus_tokens_with_special"] / len(corpus),
            "passes": passes,
            "concurrency": args.concurrency,
            "inputs_per_request": BATCH,
            "note": "server responses are parsed after the clock stops; latency is until the full body is read",
        },
        "sentence_transformers": baseline,
        "server_float": srv_float,
        "server_base64": srv_b64,
        "server_int8": srv_int8,
        "light_load_latency_ms": light,
        "ratios_vs_sentence_transformers": {
            "server_float": ratio(srv_float["emb_per_s"]),
            "server_base64": ratio(srv_b64["emb_per_s"]),
            "server_int8": ratio(srv_int8["emb_per_s"]) if srv_int8 else None,
        },
        "correctness": {
            "cosine_float_vs_sentence_transformers": cos_float,
            "cosine_base64_vs_sentence_transformers": cos_b64,
            "cosine_single_input_vs_sentence_transformers": cos_single,
            "cosine_int8_vs_sentence_transformers": cos_int8,
            "min_cosine": min(
                (c["min"] for c in (cos_float, cos_b64, cos_single) if c.get("min") is not None), default=None
            ),
            "server_prompt_tokens_one_pass": tokens_server,
            "tokenizer_tokens_one_pass": baseline["corpus_tokens_with_special"],
        },
        "failures": {"count": failures.count, "by_phase": failures.by_phase, "samples": failures.samples},
    }

    info["loadavg_at_end"] = _loadavg()
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=str)
            f.write("\n")

    # Markdown summary.
    rows = [
        ("sentence-transformers (library call, no HTTP)", base, ratio(base), "-"),
        (f"server, float (HTTP, {BATCH}/request, concurrency {args.concurrency})", srv_float["emb_per_s"],
         ratio(srv_float["emb_per_s"]), srv_float["requests"] - srv_float["ok_requests"]),
        (f"server, base64 (HTTP, {BATCH}/request, concurrency {args.concurrency})", srv_b64["emb_per_s"],
         ratio(srv_b64["emb_per_s"]), srv_b64["requests"] - srv_b64["ok_requests"]),
    ]
    if srv_int8:
        rows.append((f"server, {args.int8_model} (HTTP, {BATCH}/request, concurrency {args.concurrency})",
                     srv_int8["emb_per_s"], ratio(srv_int8["emb_per_s"]),
                     srv_int8["requests"] - srv_int8["ok_requests"]))
    print()
    print(f"Embeddings: {len(corpus)} sentences ({report['config']['word_pieces_mean_with_special']:.1f} word pieces "
          f"on average), {passes} timed pass(es) (base64: 1); {info['nproc']} CPUs: {info['cpu_model']}; "
          f"load average {info['loadavg_at_start']} at start, {info['loadavg_at_end']} at end")
    print()
    print("| engine | emb/s | vs sentence-transformers | failed requests |")
    print("|---|---:|---:|---:|")
    for name, eps, r, failed in rows:
        print(f"| {name} | {fmt(eps)} | {fmt(r, '.2f')}x | {failed} |" if r is not None
              else f"| {name} | {fmt(eps)} | n/a | {failed} |")
    print()
    fl = srv_float["latency_ms"]
    print(f"- Request latency, {BATCH} inputs, concurrency {args.concurrency} (float): p50 {fmt(fl['p50'])} ms, p99 {fmt(fl['p99'])} ms")
    print(f"- Light-load latency, 1 input, sequential ({light['ok_requests']} requests): "
          f"p50 {fmt(light['p50'], '.2f')} ms, p90 {fmt(light['p90'], '.2f')} ms, p99 {fmt(light['p99'], '.2f')} ms")
    mc = report["correctness"]["min_cosine"]
    print(f"- Min cosine vs sentence-transformers: {fmt(mc, '.6f')} "
          f"(float {fmt(cos_float.get('min'), '.6f')}, base64 {fmt(cos_b64.get('min'), '.6f')}, "
          f"single-input {fmt(cos_single.get('min'), '.6f')})")
    if cos_int8:
        print(f"- {args.int8_model} cosine vs sentence-transformers: min {fmt(cos_int8.get('min'), '.6f')}, "
              f"mean {fmt(cos_int8.get('mean'), '.6f')} (a different model, not in the min above)")
    conns = srv_float["connections_opened"] + srv_b64["connections_opened"] + light["connections_opened"]
    print(f"- HTTP connections opened: {conns} (keep-alive re-sends: "
          f"{srv_float['keepalive_retries'] + srv_b64['keepalive_retries'] + light['keepalive_retries']})")
    print(f"- Versions: python {info['python']}, torch {info.get('torch')}, "
          f"sentence-transformers {info.get('sentence_transformers')}, numpy {info.get('numpy')}")
    if args.out:
        print(f"- Results: {args.out}")
    if mc is not None and mc < COSINE_WARN_BELOW:
        print(f"WARNING: min cosine {mc:.6f} < {COSINE_WARN_BELOW}: worst sentence: "
              f"{(cos_float if cos_float.get('min') == mc else cos_b64 if cos_b64.get('min') == mc else cos_single).get('worst_sentence')!r}")
    if failures.count:
        print(f"FAILED: {failures.count} failed request(s): {failures.by_phase}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
