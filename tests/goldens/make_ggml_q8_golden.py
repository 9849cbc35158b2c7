#!/usr/bin/env python3
"""Goldens for `--weights gguf-q8`: GGUF weight blocks times activations quantised to Q8_0
blocks, as llama.cpp's CPU backend multiplies them.

The activations are quantised as ggml-cpu's x86 quantize_row_q8_0 does (what llama.cpp
runs on AVX2 / AVX-512 machines): d = amax / 127 stored as F16, q = x · (127 / amax)
rounded to nearest even — written out here in numpy, because gguf-py's
`quants.quantize(x, Q8_0)` follows the other function, ggml's quantize_row_q8_0_ref
(x · (1 / d), halves away from zero), which gives other bytes at ties and now and then
at the last bit of 1 / d (the script prints how many). gguf-py's `dequantize` turns both
sides back into F32 values, and the golden product is their float64 matrix product —
what ggml computes, up to the order of the sums.

Writes tests/goldens/ggml_q8/golden.safetensors:
  x            F32 [M, K]  activations (normal rows of different scales, a row of exact
                           ties: |x| / d = n + 0.5, where roundf and round-to-even differ,
                           a zero block)
  x.q8_0       U8  [M, K / 32 * 34]  x's Q8_0 blocks as ggml-cpu's x86 quantiser makes them
                                     (F16 d, then 32 int8)
  TYPE.blocks  U8  [N, K / 32 * bytes]  random weight blocks (finite F16 scales / mins)
  TYPE.y       F64 [M, N]  dequantize(TYPE.blocks) · dequantize(x.q8_0)ᵀ (Q4_1: its minimum
                           times Q8_1's F16 s = d · Σ q, as ggml's vec_dot_q4_1_q8_1)
for TYPE in Q8_0, Q4_0, Q4_1.

Run: python tests/goldens/make_ggml_q8_golden.py   (gguf, numpy, safetensors)
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
M, N, K = 6, 37, 160  # N: two groups of 16 and a partial one; K: 5 blocks


def finite_halves(rng, n, scale):
    return (rng.standard_normal(n).astype(np.float32) * np.float32(scale)).astype(np.float16)


def quantize_q8_0_x86(x):
    """ggml-cpu/arch/x86/quants.c quantize_row_q8_0 (AVX2 / AVX-512 builds)."""
    blocks = x.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        id = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * id).astype(np.int8)  # _mm256_round_ps(_MM_ROUND_NEAREST): halves to even
    out = np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1)
    return out.reshape(x.shape[0], -1)


def main():
    rng = np.random.default_rng(20261206)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[1] *= np.float32(30.0)   # large activations (real models' outliers)
    x[2] *= np.float32(1e-3)
    x[3, 5] = np.float32(400.0)  # one outlier dominating its block
    # Row 4, block 0: amax 127 gives d = 1, id = 1, so n + 0.5 is an exact tie (to even).
    x[4, :32] = np.array([(i % 9) - 4 + 0.5 for i in range(32)], dtype=np.float32)
    x[4, 0] = np.float32(127.0)
    x[4, 32:64] = 0  # a zero block: d = 0, id = 0
    xq = quantize_q8_0_x86(x)
    ref = quantize(x, T.Q8_0).reshape(M, -1, 34)
    print("blocks where quantize_row_q8_0_ref's bytes differ:", int((ref != xq.reshape(M, -1, 34)).any(axis=2).sum()))
    tensors = {"x": x, "x.q8_0": np.ascontiguousarray(xq)}
    xd = dequantize(xq.reshape(-1), T.Q8_0).astype(np.float64).reshape(M, K)
    for t, fields in [(T.Q8_0, [0]), (T.Q4_0, [0]), (T.Q4_1, [0, 2])]:
        block, size = GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(N * K // block, size), dtype=np.uint8)
        if t == T.Q8_0:  # ggml's quantiser never writes -128; a crafted file may
            raw[5, 2] = 0x80
        for off in fields:
            raw[:, off:off + 2] = finite_halves(rng, raw.shape[0], 0.02).view(np.uint8).reshape(-1, 2)
        raw = raw.reshape(N, -1)
        w = dequantize(raw.reshape(-1), t).astype(np.float64).reshape(N, K)
        tensors[t.name + ".blocks"] = np.ascontiguousarray(raw)
        if t != T.Q4_1:
            tensors[t.name + ".y"] = xd @ w.T
            continue
        # Q4_1 pairs with Q8_1 activations: the same d and q, and s = d · Σ q (d before
        # its F16 rounding) stored as F16; the minimum's term is m · s.
        m = raw.reshape(N, -1, size)[:, :, 2:4].copy().view(np.float16).astype(np.float64)[:, :, 0]  # [N, blocks]
        q = xq.reshape(M, -1, 34)[:, :, 2:].view(np.int8).astype(np.int64)
        d32 = np.abs(x.reshape(M, -1, 32)).max(axis=2) / np.float32(127)
        s_q8_1 = (d32 * q.sum(axis=2).astype(np.float32)).astype(np.float16).astype(np.float64)  # [M, blocks]
        w_dq = w - np.repeat(m, 32, axis=1)  # d · q
        tensors[t.name + ".y"] = xd @ w_dq.T + s_q8_1 @ m.T
    out = os.path.join(HERE, "ggml_q8", "golden.safetensors")
    save_file(tensors, out, metadata={"source": "gguf-py quants.quantize / dequantize"})
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
