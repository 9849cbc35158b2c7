#!/usr/bin/env python3
"""A Llama-family GGUF file with random quantised blocks, for speed and memory benchmarks
of `--weights gguf` / `gguf-q8` on shapes no fixture has (TowerInstruct-7B's matrices).

The blocks are random bytes with small finite F16 scales: the model's answers are
gibberish, its arithmetic and memory traffic are a real file's. Layouts:
  q4_k_m  llama.cpp's Q4_K_M recipe: Q4_K projections and embedding; Q6_K for the output
          layer and for attn_v / ffn_down in the layers llama.cpp gives more bits (the
          first and last eighth, every third between)
  q4_0    Q4_0 everywhere but the output layer (Q6_K), as llama.cpp's Q4_0 files
  q8_0    Q8_0 everywhere
Needs the `gguf` and `numpy` packages (gguf-py, llama.cpp's own writer): benchmarking
only, never a dependency of pivotmt.

  python3 bench/make_gguf_model.py --layout q4_k_m --layers 4 --out /tmp/tower-shape-q4km.gguf
"""
import argparse

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

# Where each type keeps its F16 scales (byte offsets in a block).
SCALES = {Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208], Q.Q4_0: [0], Q.Q8_0: [0], Q.Q4_1: [0, 2]}


def blocks(rng, qtype, rows, cols):
    block_values, block_bytes = GGML_QUANT_SIZES[qtype]
    assert cols % block_values == 0, f"{cols} columns are not whole {qtype.name} blocks"
    n = rows * cols // block_values
    raw = rng.integers(0, 256, size=(n, block_bytes), dtype=np.uint8)
    scale = 2e-4 if qtype == Q.Q6_K else 1e-3
    for at in SCALES[qtype]:
        halves = (np.abs(rng.standard_normal(n)) * scale).astype(np.float16)
        raw[:, at:at + 2] = halves.view(np.uint8).reshape(n, 2)
    return raw.reshape(rows, cols // block_values * block_bytes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layout", choices=["q4_k_m", "q4_0", "q8_0"], default="q4_k_m")
    ap.add_argument("--layers", type=int, default=4, help="of TowerInstruct-7B's 32")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    head_dim = a.hidden // a.heads
    w = GGUFWriter(a.out, "llama")
    w.add_context_length(4096)
    w.add_embedding_length(a.hidden)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(a.vocab)

    def main_type(i, more_bits_tensor):
        if a.layout == "q8_0":
            return Q.Q8_0
        if a.layout == "q4_0":
            return Q.Q4_0
        more = i < a.layers // 8 or i >= 7 * a.layers // 8 or (i - a.layers // 8) % 3 == 2
        return Q.Q6_K if more_bits_tensor and more else Q.Q4_K

    def add(name, qtype, rows, cols):
        w.add_tensor(name, blocks(rng, qtype, rows, cols), raw_dtype=qtype)  # shape from the bytes

    add("token_embd.weight", Q.Q8_0 if a.layout == "q8_0" else Q.Q4_K if a.layout == "q4_k_m" else Q.Q4_0,
        a.vocab, a.hidden)
    for i in range(a.layers):
        p = f"blk.{i}."
        norm = (1.0 + 0.1 * rng.standard_normal(a.hidden)).astype(np.float32)
        w.add_tensor(p + "attn_norm.weight", norm)
        add(p + "attn_q.weight", main_type(i, False), a.hidden, a.hidden)
        add(p + "attn_k.weight", main_type(i, False), a.kv_heads * head_dim, a.hidden)
        add(p + "attn_v.weight", main_type(i, True), a.kv_heads * head_dim, a.hidden)
        add(p + "attn_output.weight", main_type(i, False), a.hidden, a.hidden)
        w.add_tensor(p + "ffn_norm.weight", norm.copy())
        add(p + "ffn_gate.weight", main_type(i, False), a.ffn, a.hidden)
        add(p + "ffn_up.weight", main_type(i, False), a.ffn, a.hidden)
        add(p + "ffn_down.weight", main_type(i, True), a.hidden, a.ffn)
    w.add_tensor("output_norm.weight", (1.0 + 0.1 * rng.standard_normal(a.hidden)).astype(np.float32))
    add("output.weight", Q.Q8_0 if a.layout == "q8_0" else Q.Q6_K, a.vocab, a.hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
