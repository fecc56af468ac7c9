"""The clients users actually point at Citadel: the official OpenAI SDK and grpcio's health stub."""
import base64

import grpc
import numpy as np
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc


def client(server):
    return openai.OpenAI(base_url=f"http://{server['http']}/v1", api_key="unused", max_retries=0)


def min_cosine(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    return float((got * want).sum(axis=1).min())


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_sdk_embeddings_match_sentence_transformers(server, reference, encoding_format):
    texts, expected = reference
    kwargs = {} if encoding_format is None else {"encoding_format": encoding_format}
    result = client(server).embeddings.create(model="all-minilm", input=texts, **kwargs)
    vectors = [item.embedding for item in sorted(result.data, key=lambda d: d.index)]
    if encoding_format == "base64":
        # Asked for explicitly, the SDK hands back the little-endian f32 string as sent.
        vectors = [np.frombuffer(base64.b64decode(v), dtype="<f4") for v in vectors]
    assert all(len(v) == 384 for v in vectors)
    assert min_cosine(vectors, expected) >= 0.999
    assert result.model == "all-minilm"
    assert result.usage.prompt_tokens > 0


def test_openai_sdk_single_string(server):
    result = client(server).embeddings.create(model="all-minilm", input="hello world")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 384


def test_openai_sdk_errors_raise_the_documented_exceptions(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as not_found:
        c.embeddings.create(model="no-such-model", input="x")
    assert not_found.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        c.embeddings.create(model="all-minilm", input=[])
    assert bad.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="all-minilm", input=[[1, 2, 3]])


def test_openai_sdk_models(server):
    c = client(server)
    assert "all-minilm" in [m.id for m in c.models.list()]
    assert c.models.retrieve("all-minilm").id == "all-minilm"


@pytest.mark.parametrize(
    "service", ["", "citadel.v1.EmbeddingService", "citadel.v1.EmbeddingService/all-minilm"]
)
def test_grpc_health_probe_reports_serving(server, service):
    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
