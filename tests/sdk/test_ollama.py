"""The official `ollama` Python client pointed at Citadel's Ollama-compatible routes, unchanged."""
import numpy as np
import ollama
import openai
import pytest


def ollama_client(server):
    return ollama.Client(host=f"http://{server['http']}")


def openai_vectors(server, texts):
    c = openai.OpenAI(base_url=f"http://{server['http']}/v1", api_key="unused", max_retries=0)
    result = c.embeddings.create(model="all-minilm", input=texts, encoding_format="float")
    return [item.embedding for item in sorted(result.data, key=lambda d: d.index)]


def min_cosine(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    return float((got * want).sum(axis=1).min())


def test_embed_list_and_str_match_the_openai_sdk(server, reference):
    texts, _ = reference
    c = ollama_client(server)
    want = openai_vectors(server, texts)

    batch = c.embed(model="all-minilm", input=texts)
    assert batch.model == "all-minilm"
    assert len(batch.embeddings) == len(texts)
    assert min_cosine(batch.embeddings, want) > 0.9999
    # Ollama's /api/embed documents unit-length vectors.
    assert np.allclose(np.linalg.norm(np.asarray(batch.embeddings), axis=1), 1.0, atol=1e-4)
    assert batch.prompt_eval_count > 0 and batch.total_duration > 0

    single = c.embed(model="all-minilm", input=texts[0], truncate=True, keep_alive="5m")
    assert len(single.embeddings) == 1 and len(single.embeddings[0]) == 384
    assert min_cosine(single.embeddings, want[:1]) > 0.9999


def test_legacy_embeddings_point_the_same_way(server):
    text = "Citadel routes embeddings for the fleet."
    legacy = ollama_client(server).embeddings(model="all-minilm", prompt=text)
    assert len(legacy.embedding) == 384
    assert min_cosine([legacy.embedding], openai_vectors(server, [text])) > 0.9999


def test_list_shows_all_minilm(server):
    models = ollama_client(server).list().models
    minilm = next(m for m in models if m.model == "all-minilm")
    assert minilm.modified_at is not None and minilm.modified_at.year >= 2020
    assert len(minilm.digest) == 64
    assert minilm.details.format == "onnx"


def test_unknown_model_raises_response_error_404(server):
    with pytest.raises(ollama.ResponseError) as error:
        ollama_client(server).embed(model="no-such-model", input="x")
    assert error.value.status_code == 404
    assert "no-such-model" in error.value.error
