#!/usr/bin/env python3
"""Build an FP32 ONNX graph for a BERT sentence encoder (all-MiniLM-L6-v2)
straight from SRC_DIR/model.safetensors, using only `onnx` and `numpy`.

Usage: build_onnx_minilm.py SRC_DIR OUT_ONNX

Graph contract (the Rust runtime depends on it exactly):
  inputs   input_ids       int64   [batch, seq]
           attention_mask  int64   [batch, seq]
  output   sentence_embedding float32 [batch, hidden]
           = sum(h * mask) / max(sum(mask), 1e-9) over seq (mean pooling of
           the last hidden state), NOT L2-normalised.
token_type_ids are implicitly all zero: token_type_embeddings row 0 is folded
into the position-embedding table as a constant.

seq must be <= max_position_embeddings (512); callers truncate at 256.

Opset 17, plain ai.onnx ops only (no com.microsoft contrib ops); the op
pattern follows the HF/PyTorch BERT export so ONNX Runtime's own
session-level fusions apply (with ORT 1.31 at the default level: Erf-GELU +
bias -> BiasGelu, QK^T / sqrt(d) -> FusedMatMul; SkipLayerNorm/Attention
fusions need a static seq dim and do not fire, which is fine).
"""
import json
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

_ST_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def die(msg):
    print(f"build_onnx_minilm: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    """Parse a .safetensors file by hand: u64 LE header length, JSON header,
    then the raw little-endian tensor bytes (offsets relative to data start)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        die(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        die(f"{path}: header length {n} exceeds file size (truncated download?)")
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            die(f"{path}: tensor {name} has unsupported dtype {dt}")
        start, end = info["data_offsets"]
        if base + end > len(blob):
            die(f"{path}: tensor {name} runs past end of file (truncated download?)")
        arr = np.frombuffer(blob, dtype=np.dtype(_ST_DTYPES[dt]).newbyteorder("<"),
                            count=(end - start) // np.dtype(_ST_DTYPES[dt]).itemsize,
                            offset=base + start)
        arr = arr.reshape(info["shape"]).astype(_ST_DTYPES[dt], copy=True)
        # accept both bare BertModel names and BertFor* names with "bert." prefix
        if name.startswith("bert."):
            name = name[len("bert."):]
        out[name] = arr
    return out


class G:
    """Tiny graph-builder helper."""

    def __init__(self):
        self.nodes = []
        self.inits = []
        self._n = 0

    def _name(self, hint):
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const(self, hint, arr):
        return self.init(self._name(hint), np.asarray(arr))

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self._name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out


def build(src_dir, out_path):
    cfg_path = os.path.join(src_dir, "config.json")
    st_path = os.path.join(src_dir, "model.safetensors")
    for p in (cfg_path, st_path):
        if not os.path.isfile(p):
            die(f"missing {p}")
    with open(cfg_path) as f:
        cfg = json.load(f)
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    layers = int(cfg["num_hidden_layers"])
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        die(f"hidden_act={act!r} not supported (only exact erf 'gelu')")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        die("only absolute position embeddings are supported")
    if hidden % heads:
        die("hidden_size not divisible by num_attention_heads")
    head_dim = hidden // heads

    w = read_safetensors(st_path)

    def t(name):
        if name not in w:
            die(f"tensor {name} missing from {st_path}")
        a = w[name]
        if a.dtype != np.float32:
            a = a.astype(np.float32)
        return a

    g = G()
    f32 = np.float32

    # ---- embeddings --------------------------------------------------------
    word = g.init("word_embeddings", t("embeddings.word_embeddings.weight"))
    # token_type_ids are all zero -> add token_type row 0 into the position table
    pos_tab = t("embeddings.position_embeddings.weight") + t("embeddings.token_type_embeddings.weight")[0][None, :]
    pos = g.init("position_plus_type0_embeddings", pos_tab.astype(f32))

    x = g.op("Gather", [word, "input_ids"], "word_emb", axis=0)  # [B,S,H]
    # positions 0..seq-1: take the first `seq` rows of the table with Slice.
    # (Range -> Gather would be the literal form, but ORT 1.31's GatherToSlice
    # fusion rewrites that pattern into an invalid Slice that fails at run time.)
    seq_len = g.op("Shape", ["input_ids"], "seq_len", start=1, end=2)  # [1] = [seq]
    pe = g.op("Slice", [pos, g.const("zero_1d", np.array([0], np.int64)), seq_len,
                        g.const("axis0", np.array([0], np.int64))], "pos_emb")  # [S,H]
    x = g.op("Add", [x, pe], "emb_sum")
    x = g.op("LayerNormalization",
             [x, g.init("emb_ln_w", t("embeddings.LayerNorm.weight")), g.init("emb_ln_b", t("embeddings.LayerNorm.bias"))],
             "emb_ln", axis=-1, epsilon=eps)

    # ---- additive attention mask (HF style) ------------------------------
    m4 = g.op("Unsqueeze", ["attention_mask", g.const("axes12", np.array([1, 2], np.int64))], "mask_unsq")  # [B,1,1,S]
    m4 = g.op("Cast", [m4], "mask_f", to=TensorProto.FLOAT)
    inv = g.op("Sub", [g.const("one_f", np.array(1.0, f32)), m4], "mask_inv")
    ext_mask = g.op("Mul", [inv, g.const("neg_big", np.array(np.finfo(np.float32).min, f32))], "ext_mask")

    shape_heads = g.const("shape_heads", np.array([0, 0, heads, head_dim], np.int64))
    shape_merge = g.const("shape_merge", np.array([0, 0, hidden], np.int64))
    scale = g.const("sqrt_head_dim", np.array(np.sqrt(head_dim), f32))
    sqrt2 = g.const("sqrt2", np.array(np.sqrt(2.0), f32))
    one_f = g.const("one_f", np.array(1.0, f32))
    half_f = g.const("half_f", np.array(0.5, f32))

    def linear(inp, prefix, hint):
        W = g.init(f"{prefix}.weight_T", t(prefix + ".weight").T.copy())
        B = g.init(f"{prefix}.bias", t(prefix + ".bias"))
        y = g.op("MatMul", [inp, W], hint + "_mm")
        return g.op("Add", [y, B], hint)

    def layernorm(inp, prefix, hint):
        return g.op("LayerNormalization",
                    [inp, g.init(prefix + ".weight", t(prefix + ".weight")), g.init(prefix + ".bias", t(prefix + ".bias"))],
                    hint, axis=-1, epsilon=eps)

    # ---- encoder -----------------------------------------------------------
    for i in range(layers):
        p = f"encoder.layer.{i}"
        q = linear(x, f"{p}.attention.self.query", f"l{i}_q")
        k = linear(x, f"{p}.attention.self.key", f"l{i}_k")
        v = linear(x, f"{p}.attention.self.value", f"l{i}_v")
        q = g.op("Transpose", [g.op("Reshape", [q, shape_heads], f"l{i}_q_r")], f"l{i}_q_t", perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, shape_heads], f"l{i}_k_r")], f"l{i}_k_t", perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, shape_heads], f"l{i}_v_r")], f"l{i}_v_t", perm=[0, 2, 1, 3])
        s = g.op("MatMul", [q, k], f"l{i}_qk")  # [B,h,S,S]
        s = g.op("Div", [s, scale], f"l{i}_scaled")
        s = g.op("Add", [s, ext_mask], f"l{i}_masked")
        a = g.op("Softmax", [s], f"l{i}_probs", axis=-1)
        c = g.op("MatMul", [a, v], f"l{i}_ctx")  # [B,h,S,d]
        c = g.op("Transpose", [c], f"l{i}_ctx_t", perm=[0, 2, 1, 3])
        c = g.op("Reshape", [c, shape_merge], f"l{i}_ctx_r")
        o = linear(c, f"{p}.attention.output.dense", f"l{i}_attn_out")
        o = g.op("Add", [o, x], f"l{i}_attn_res")
        x = layernorm(o, f"{p}.attention.output.LayerNorm", f"l{i}_attn_ln")
        # feed-forward with exact (erf) GELU: x * 0.5 * (1 + erf(x / sqrt(2)))
        h = linear(x, f"{p}.intermediate.dense", f"l{i}_ff1")
        e = g.op("Erf", [g.op("Div", [h, sqrt2], f"l{i}_gelu_div")], f"l{i}_gelu_erf")
        e = g.op("Add", [e, one_f], f"l{i}_gelu_add")
        h = g.op("Mul", [h, e], f"l{i}_gelu_mul")
        h = g.op("Mul", [h, half_f], f"l{i}_gelu")
        o = linear(h, f"{p}.output.dense", f"l{i}_ff2")
        o = g.op("Add", [o, x], f"l{i}_ff_res")
        x = layernorm(o, f"{p}.output.LayerNorm", f"l{i}_out_ln")

    # ---- mean pooling ------------------------------------------------------
    m3 = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const("axis2", np.array([2], np.int64))], "pool_mask_u")],
              "pool_mask_f", to=TensorProto.FLOAT)  # [B,S,1]
    axis1 = g.const("axis1", np.array([1], np.int64))
    num = g.op("ReduceSum", [g.op("Mul", [x, m3], "pool_masked"), axis1], "pool_sum", keepdims=0)  # [B,H]
    den = g.op("ReduceSum", [m3, axis1], "pool_count", keepdims=0)  # [B,1]
    den = g.op("Max", [den, g.const("min_count", np.array(1e-9, f32))], "pool_count_clamped")
    g.nodes.append(helper.make_node("Div", [num, den], ["sentence_embedding"], name="sentence_embedding_node"))

    unused = sorted(n for n in w if not n.startswith(("embeddings.", "encoder.layer.")))
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])]
    graph = helper.make_graph(g.nodes, "sentence_encoder", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="citadel-build_onnx_minilm", producer_version="1")
    model.ir_version = 8  # opset 17 era; readable by any ORT >= 1.13
    onnx.checker.check_model(model)

    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{out_path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    size_mb = os.path.getsize(out_path) / 1e6
    extra = f", ignored {unused}" if unused else ""
    print(f"wrote {out_path} ({layers} layers, hidden {hidden}, {len(g.nodes)} nodes, {size_mb:.1f} MB){extra}")


def main():
    if len(sys.argv) != 3:
        print("usage: build_onnx_minilm.py SRC_DIR OUT_ONNX", file=sys.stderr)
        sys.exit(2)
    build(sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    main()
