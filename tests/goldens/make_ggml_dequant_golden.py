#!/usr/bin/env python3
"""Goldens for ggml's block formats: gguf-py's own `quants.dequantize` on random blocks.

Writes tests/goldens/ggml_dequant/golden.safetensors: for each type, `TYPE.blocks` (the
raw bytes, U8) and `TYPE.values` (F32, what gguf-py's numpy code makes of them). The block
bytes are random except the F16 scale fields, which get random finite values (a random
bit pattern would make NaNs and infinities, whose payloads say nothing about the layout);
F16 and BF16 "blocks" are random finite values too. Values near ±2^-14 (F16 subnormals)
and exact zeros are included.

Run: python tests/goldens/make_ggml_dequant_golden.py   (gguf, numpy, safetensors)
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKS = 6
# Offsets of the F16 fields (scales, mins) inside each block.
F16_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
              T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def finite_halves(rng, n):
    v = rng.standard_normal(n).astype(np.float32) * np.float32(0.05)
    v[::7] = 0
    v[3::11] = np.float32(6.1e-5) * rng.standard_normal(len(v[3::11])).astype(np.float32)  # subnormal-ish
    return v.astype(np.float16)


def main():
    rng = np.random.default_rng(20261206)
    tensors = {}
    for t in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]:
        block, size = GGML_QUANT_SIZES[t]
        n = BLOCKS * block if block > 1 else 96
        if t == T.F32:
            raw = rng.standard_normal(n).astype(np.float32).view(np.uint8)
        elif t == T.F16:
            raw = finite_halves(rng, n).view(np.uint8)
        elif t == T.BF16:
            raw = (rng.standard_normal(n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        else:
            raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
            for off in F16_FIELDS[t]:
                raw[:, off:off + 2] = finite_halves(rng, BLOCKS).view(np.uint8).reshape(BLOCKS, 2)
            raw = raw.reshape(-1)
        values = dequantize(raw, t).astype(np.float32).reshape(-1)
        assert values.size == n, (t.name, values.size, n)
        tensors[t.name + ".blocks"] = np.ascontiguousarray(raw)
        tensors[t.name + ".values"] = values
    out = os.path.join(HERE, "ggml_dequant", "golden.safetensors")
    save_file(tensors, out, metadata={"source": "gguf-py quants.dequantize"})
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
