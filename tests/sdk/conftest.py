"""Starts the real `citadel` binary on free loopback ports for the client tests."""
import json
import os
import pathlib
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "citadel"
VLLM_STANDIN = ROOT / "target" / "debug" / "citadel-vllm-standin"


@pytest.fixture(scope="session")
def vllm():
    """A stand-in vLLM server (crates/standin) serving `standin-llm`, paced like a real one."""
    proc = subprocess.Popen(
        [str(VLLM_STANDIN), "--model", "standin-llm=4096", "--ttft-ms", "20", "--itl-ms", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"the vLLM stand-in did not start: {line}")
    try:
        yield "http://" + line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def server(vllm, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
    env["RUST_LOG"] = "info"
    config = tmp_path_factory.mktemp("citadel") / "llm.toml"
    config.write_text(f'[[llm.servers]]\nname = "llm-01"\nurl = "{vllm}"\n')
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
         "--config", str(config)],
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
