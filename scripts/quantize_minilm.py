#!/usr/bin/env python3
"""Dynamic INT8 quantization of the FP32 all-minilm graph: scripts/quantize_minilm.py IN OUT.

Weights of every MatMul become per-channel INT8; activations are quantized at run time (VNNI
on CPUs that have it). The result is served as its own model, `all-minilm:int8`: faster, and
close to but not equal to sentence-transformers' vectors, so never in place of `all-minilm`.
Writes OUT atomically. Needs onnx and onnxruntime (the tools venv of setup-models.sh).
"""
import os
import sys

from onnxruntime.quantization import QuantType, quantize_dynamic


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, target = sys.argv[1], sys.argv[2]
    partial = target + ".partial"
    print(f"quantizing {source} -> {target} (dynamic INT8, per-channel MatMul)", flush=True)
    quantize_dynamic(
        source,
        partial,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )
    os.replace(partial, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
