#!/usr/bin/env python3
"""Generate the all-MiniLM-L6-v2 reference fixture with sentence-transformers.

Dev tool, not part of setup. Run it in an env that has sentence-transformers
(+ torch), e.g.:

    /tmp/refvenv/bin/python scripts/make_reference.py tests/fixtures/all-minilm-reference.json \
        [--model-dir models/all-minilm]

The model dir is the one scripts/setup-models.sh unpacks. Embeddings come from
SentenceTransformer.encode() defaults (max_seq_length 256 incl. [CLS]/[SEP],
mean pooling, L2-normalised), rounded to 7 significant digits.
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _long_text():
    # ~400 words of plain English prose, deterministic; > 256 word pieces so
    # truncation (at 256 tokens incl. specials) decides the result.
    sents = [
        "The orchestrator receives embedding requests from many clients at once.",
        "Each request carries a list of texts that must be tokenized and batched.",
        "Batches are sorted by length so that padding wastes as little compute as possible.",
        "A worker pool runs the transformer on the CPU and returns one vector per text.",
        "Vectors are normalised to unit length before they leave the server.",
        "Operators watch latency, throughput and queue depth on a small dashboard.",
        "When the queue grows too long, new requests are rejected with a clear error.",
        "Nothing is written to disk except the models that were installed ahead of time.",
    ]
    words = []
    i = 0
    while len(words) < 400:
        words.extend(f"{sents[i % len(sents)]}".split())
        if i % len(sents) == len(sents) - 1:
            words.append(f"(Round {i // len(sents) + 1}.)")
        i += 1
    return " ".join(words[:400])


def _text_300_tokens(tokenizer):
    # grow a sentence list until the untruncated encoding is ~300 tokens
    base = ("Mean pooling averages the token vectors of the last layer while ignoring "
            "padding positions, and the result is compared with cosine similarity. ")
    extra = "Numbers like 3.14159 and 2718 and words such as tokenization or normalisation add pieces. "
    text = base
    k = 0
    while len(tokenizer(text, truncation=False, verbose=False)["input_ids"]) < 300:
        text += extra if k % 2 else base
        k += 1
    # trim words from the end to land on exactly 300 if possible
    words = text.split()
    while len(words) > 1 and len(tokenizer(" ".join(words), truncation=False, verbose=False)["input_ids"]) > 300:
        words.pop()
    return " ".join(words)


def texts(tokenizer):
    return [
        "Hello, world!",
        "embeddings",
        "The quick brown fox jumps over the lazy dog.",
        "Wait... what?!? No -- really; (yes) [maybe] {never} <always> ... !!! ???",
        "ThIs TeXt HaS MiXeD CaSe AND SHOUTING but also quiet words",
        "In 2024 the 3 servers handled 1,234,567 requests at 99.95% uptime for $12.50/hour.",
        _long_text(),
        _text_300_tokens(tokenizer),
        "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
        "東京は日本の首都で、多くの人々が住んでいます。",
        "تعلم الآلة هو فرع من فروع الذكاء الاصطناعي.",
        "Машинное обучение — это раздел искусственного интеллекта.",
        "मशीन लर्निंग कृत्रिम बुद्धिमत्ता की एक शाखा है।",
        "기계 학습은 인공 지능의 한 분야입니다.",
        "🚀🔥🎉😀",
        "Deploy finished 🚀 all tests green ✅ time for coffee ☕",
        "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}",
        "def add(a: int, b: int) -> int:\n    \"\"\"Return the sum.\"\"\"\n    return a + b\n",
        "{\"model\": \"all-minilm\", \"input\": [\"a\", \"b\"], \"encoding_format\": \"float\", \"dimensions\": 384}",
        "https://example.com/api/v1/embeddings?model=all-minilm&user=42#section-2",
        "Un café crème au lit, naïve façon: déjà vu à l'hôtel Müller in Zürich, São Paulo, Ångström.",
        "   \t  leading and trailing whitespace matters not   \n  ",
        "repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat",
        "A search engine ranks documents by how similar their embeddings are to the query embedding.",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_json")
    ap.add_argument("--model-dir", default=os.path.join(REPO, "models", "all-minilm"))
    args = ap.parse_args()

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    if not os.path.isfile(os.path.join(args.model_dir, "model.safetensors")):
        sys.exit(f"make_reference: {args.model_dir} has no model.safetensors; run scripts/setup-models.sh first")
    model = SentenceTransformer(args.model_dir, device="cpu")
    tok = model.tokenizer
    ts = texts(tok)
    assert all(t for t in ts), "empty text in fixture"
    emb = model.encode(ts, convert_to_numpy=True)  # defaults: normalised (Normalize module), max_seq_length 256
    assert emb.shape == (len(ts), 384), emb.shape

    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "generator": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "texts": ts,
        "embeddings": [[float(f"{x:.7g}") for x in row] for row in emb.tolist()],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    tmp = args.out_json + ".tmp"
    # one text / one embedding per line: valid JSON that still diffs well
    dumps = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
    lines = ["{",
             f'  "model": {dumps(out["model"])},',
             f'  "generator": {dumps(out["generator"])},',
             '  "texts": [',
             ",\n".join("    " + dumps(t) for t in out["texts"]),
             "  ],",
             '  "embeddings": [',
             ",\n".join("    " + dumps(e) for e in out["embeddings"]),
             "  ]",
             "}"]
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    assert json.load(open(tmp, encoding="utf-8")) == out
    os.replace(tmp, args.out_json)
    lens = [len(tok(t, truncation=False, verbose=False)["input_ids"]) for t in ts]
    print(f"wrote {args.out_json}: {len(ts)} texts, untruncated token counts {lens}, "
          f"{os.path.getsize(args.out_json) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
