"""The official `openai` SDK against Citadel's LLM routes, unchanged: chat and text
completions, unary and streamed, tools round trip, models, and errors raising the SDK's own
exceptions. Citadel routes to a stand-in vLLM server (crates/standin) over a real socket."""
import json
import urllib.request

import openai
import pytest

MODEL = "standin-llm"


def client(server):
    return openai.OpenAI(base_url=f"http://{server['http']}/v1", api_key="unused", max_retries=0)


def set_behaviour(vllm, **behaviour):
    request = urllib.request.Request(
        f"{vllm}/_standin/behaviour", data=json.dumps(behaviour).encode(),
        headers={"content-type": "application/json"}, method="POST",
    )
    urllib.request.urlopen(request, timeout=5).read()


def test_chat_unary(server):
    answer = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "say something"}], max_tokens=3)
    assert answer.choices[0].message.content == "tok0 tok1 tok2 "
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3
    assert answer.model == MODEL


def test_chat_streamed_with_usage(server):
    stream = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], max_tokens=5, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_text_completions_unary_and_streamed(server):
    c = client(server)
    answer = c.completions.create(model=MODEL, prompt="once upon a time", max_tokens=2)
    assert answer.choices[0].text == "tok0 tok1 "
    text = "".join(chunk.choices[0].text for chunk in
                   c.completions.create(model=MODEL, prompt="once", max_tokens=4, stream=True)
                   if chunk.choices)
    assert text == "tok0 tok1 tok2 tok3 "


TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Looks a word up",
    "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_tools_round_trip(server, stream):
    c = client(server)
    messages = [{"role": "user", "content": "what is citadel"}]
    if stream:
        calls = {}
        for chunk in c.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, stream=True):
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                entry["name"] = (call.function.name or "") or entry["name"]
                entry["arguments"] += call.function.arguments or ""
        call = calls[0]
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
    else:
        answer = c.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        assert answer.choices[0].finish_reason == "tool_calls"
        tool_call = answer.choices[0].message.tool_calls[0]
        call_id, name, arguments = tool_call.id, tool_call.function.name, tool_call.function.arguments
    assert name == "lookup"
    assert json.loads(arguments) == {"input": "what is citadel"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "an orchestrator"},
    ]
    answer = c.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert answer.choices[0].message.content == "tool result: an orchestrator "


def test_models_list_llm_and_embedding_models(server):
    ids = [m.id for m in client(server).models.list()]
    assert MODEL in ids and "all-minilm" in ids
    assert client(server).models.retrieve(MODEL).id == MODEL


def test_errors_raise_the_sdk_exceptions(server, vllm):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        c.chat.completions.create(model="no-such-llm", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as long:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "w " * 5000}])
    assert long.value.body["code"] == "context_length_exceeded"
    # A stream that breaks after its first chunk: the SDK raises on the in-band error event.
    set_behaviour(vllm, ttft_ms=20, itl_ms=2, cut_after=2)
    try:
        with pytest.raises(openai.APIError):
            for _ in c.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=8):
                pass
    finally:
        set_behaviour(vllm, ttft_ms=20, itl_ms=2)
