"""Starts the real `citadel` binary on free loopback ports for the client tests."""
import json
import os
import pathlib
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "citadel"


@pytest.fixture(scope="session")
def server():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
    env["RUST_LOG"] = "info"
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    ready = threading.Event()
    addrs = {}

    def pump():
        for line in proc.stdout:
            if "citadel ready" in line and not ready.is_set():
                fields = json.loads(line)["fields"]
                addrs["http"], addrs["grpc"] = fields["http_addr"], fields["grpc_addr"]
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(90):
            raise RuntimeError("citadel did not become ready (is `make models` done?)")
        yield addrs
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def reference():
    fixture = json.loads((ROOT / "tests" / "fixtures" / "all-minilm-reference.json").read_text())
    return fixture["texts"], fixture["embeddings"]
