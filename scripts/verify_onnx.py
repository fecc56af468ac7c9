#!/usr/bin/env python3
"""Check models/all-minilm/model.onnx against the sentence-transformers fixture
and compare CPU throughput of ONNX Runtime vs sentence-transformers (torch).

Dev tool, not part of setup. Needs an env with onnxruntime, tokenizers, numpy
and (for the throughput comparison) sentence-transformers + torch, e.g.:

    /tmp/refvenv/bin/pip install onnxruntime==1.31.1
    /tmp/refvenv/bin/python scripts/verify_onnx.py [--model-dir models/all-minilm]
        [--fixture tests/fixtures/all-minilm-reference.json] [--bench 512] [--threads 2]

Tokenisation mirrors what the Rust server does with tokenizer.json: the file's
built-in fixed padding/truncation (128) is switched off, then truncation at 256
tokens (incl. [CLS]/[SEP]) and padding to the longest text in the batch.
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import onnxruntime as ort

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LEN = 256


def make_tokenizer(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tok.enable_truncation(max_length=MAX_LEN)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to longest in batch
    return tok


def encode_batch(tok, texts):
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


def l2n(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def make_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_embed(sess, tok, texts, batch=32):
    out = []
    for i in range(0, len(texts), batch):
        ids, mask = encode_batch(tok, texts[i : i + batch])
        out.append(sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0])
    return l2n(np.concatenate(out))


def gen_sentences(n, seed=1234):
    rng = random.Random(seed)
    words = ("the a server request model vector embedding token batch queue latency fast slow "
             "compute memory network client returns sends receives quickly carefully under over "
             "between during system data search query document index similarity language text "
             "engine worker thread process cache store read write metric dashboard alert error "
             "user account billing report weekly daily million thousand small large simple "
             "complex river mountain city coffee morning evening music painting history science").split()
    out = []
    for _ in range(n):
        k = rng.randint(5, 60)
        s = " ".join(rng.choice(words) for _ in range(k))
        out.append(s[0].upper() + s[1:] + ".")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=os.path.join(REPO, "models", "all-minilm"))
    ap.add_argument("--fixture", default=os.path.join(REPO, "tests", "fixtures", "all-minilm-reference.json"))
    ap.add_argument("--bench", type=int, default=512, help="number of generated sentences (0 = skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="benchmark rounds (best is reported)")
    ap.add_argument("--min-cos", type=float, default=0.9999)
    args = ap.parse_args()

    onnx_path = os.path.join(args.model_dir, "model.onnx")
    tok = make_tokenizer(args.model_dir)
    sess = make_session(onnx_path, args.threads)
    print("inputs :", [(i.name, i.type, i.shape) for i in sess.get_inputs()])
    print("outputs:", [(o.name, o.type, o.shape) for o in sess.get_outputs()])

    with open(args.fixture, encoding="utf-8") as f:
        fx = json.load(f)
    texts = fx["texts"]
    ref = np.array(fx["embeddings"], dtype=np.float64)
    print(f"fixture: {len(texts)} texts, generator: {fx['generator']}")

    # whole fixture in one padded batch, and one text at a time (no padding)
    full = ort_embed(sess, tok, texts, batch=len(texts))
    single = ort_embed(sess, tok, texts, batch=1)
    cos_full = (full * l2n(ref)).sum(1)
    cos_single = (single * l2n(ref)).sum(1)
    worst = int(np.argmin(np.minimum(cos_full, cos_single)))
    print(f"min cosine vs fixture: padded batch {cos_full.min():.9f}, batch=1 {cos_single.min():.9f} "
          f"(worst text #{worst}: {texts[worst][:40]!r})")
    print(f"max |diff|: {np.abs(full - ref).max():.2e}")
    ok = min(cos_full.min(), cos_single.min()) >= args.min_cos

    try:  # token ids must match what sentence-transformers feeds the model
        from sentence_transformers import SentenceTransformer as _ST
        st_tok = _ST(args.model_dir, device="cpu").tokenizer
        bad = [t for t in texts
               if st_tok(t, truncation=True, max_length=MAX_LEN)["input_ids"] != tok.encode(t).ids]
        print(f"token ids vs sentence-transformers tokenizer: {len(texts) - len(bad)}/{len(texts)} identical")
        ok = ok and not bad
    except ImportError:
        pass

    if args.bench:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError:
            print("sentence-transformers/torch not installed: skipping throughput comparison")
            torch = None
        sents = gen_sentences(args.bench)
        order = sorted(range(len(sents)), key=lambda i: len(tok.encode(sents[i]).ids))
        sorted_sents = [sents[i] for i in order]
        ntok = sum(len(tok.encode(s).ids) for s in sents)
        print(f"bench: {len(sents)} sentences of 5-60 words ({ntok / len(sents):.1f} tokens avg), "
              f"batch 32 sorted by length, {args.threads} threads")
        st = None
        if torch is not None:
            torch.set_num_threads(args.threads)
            st = SentenceTransformer(args.model_dir, device="cpu")
            st.encode(sorted_sents[:64], batch_size=32)  # warm-up
        ort_embed(sess, tok, sorted_sents[:64])  # warm-up
        # alternate the engines for a few rounds and keep each one's best time,
        # so background load on a shared machine hurts both alike
        best_ort = best_st = float("inf")
        for _ in range(args.rounds):
            t = time.perf_counter()
            e_ort = ort_embed(sess, tok, sorted_sents, batch=32)
            best_ort = min(best_ort, time.perf_counter() - t)
            if st is not None:
                t = time.perf_counter()
                e_st = st.encode(sorted_sents, batch_size=32, convert_to_numpy=True)
                best_st = min(best_st, time.perf_counter() - t)
        n = len(sents)
        print(f"  onnxruntime {ort.__version__} (tokenize+run): {n / best_ort:8.1f} emb/s  (best of {args.rounds}: {best_ort:.2f} s)")
        if st is not None:
            print(f"  sentence-transformers (torch {torch.__version__}): {n / best_st:8.1f} emb/s  "
                  f"(best of {args.rounds}: {best_st:.2f} s)")
            print(f"  bench min cosine ort vs st: {(e_ort * e_st).sum(1).min():.9f}")

    print("OK" if ok else f"FAIL: min cosine below {args.min_cos}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
