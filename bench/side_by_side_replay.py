#!/usr/bin/env python3
"""The original Tower study's workload, pivotmt against Hugging Face transformers (issue 27 §3).

pivotmt replays the whole study (bench_gpu --replay: 3,355 requests, exact prompt ids,
forced response lengths). transformers runs a fixed sample of the same requests
(bench_gpu --export-sample: every 52nd by default) on the same randomly initialised model
shape, two ways:

  * as the original ran it: the text-generation pipeline's way — FP16, batches of 4 in the
    study's order, left-padded, each batch generating until its longest response;
  * at its best: batches of 32 sorted by prompt length (less padding), SDPA attention
    (halved while a batch does not fit in memory; the table says which size ran).

Its time is extrapolated to the whole study by the sample's share of the requests (stated
as such in the output: the sample is a uniform stride over the file). A random model's
tokens differ from the real one's, but the work per token does not depend on which tokens
they are; both sides ignore EOS and generate the forced lengths.

Runs where the device is (development machine at a tiny scale: --preset tiny --device cpu):

  python3 bench/side_by_side_replay.py BUILD_DIR|BENCH_GPU [--preset 7b-shape|tiny] [--arch llama|llama3]
         [--device cuda|cpu] [--sample 64] [--skip-pivotmt]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPLAY = os.path.join(ROOT, "bench", "data", "tower_study.replay.zst")

# The shapes of src/models/make_model.cpp's presets (TowerInstruct-7B, Hermes-2-Pro-Llama-3-8B).
SHAPES = {
    ("7b-shape", "llama"): dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                                intermediate_size=11008, vocab_size=32007, rope_theta=10000.0),
    ("7b-shape", "llama3"): dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                                 intermediate_size=14336, vocab_size=128288, rope_theta=500000.0),
    ("tiny", "llama"): dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                            intermediate_size=172, vocab_size=32007, rope_theta=10000.0),
    ("tiny", "llama3"): dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=172, vocab_size=128288, rope_theta=500000.0),
}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def generate_batches(model, batches, device, pad_id):
    """Each batch left-padded, generating exactly its longest forced length."""
    for batch in batches:
        width = max(len(r["prompt"]) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, width - len(r["prompt"]):] = torch.tensor(r["prompt"])
            mask[i, width - len(r["prompt"]):] = 1
        new = max(1, max(r["response_tokens"] for r in batch))
        with torch.no_grad():
            model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, pad_token_id=pad_id)


def time_transformers(model, sample, device, batch, order_by_length, pad_id):
    requests = sorted(sample, key=lambda r: len(r["prompt"])) if order_by_length else list(sample)
    while True:
        batches = [requests[i:i + batch] for i in range(0, len(requests), batch)]
        try:
            sync(device)
            t0 = time.perf_counter()
            generate_batches(model, batches, device, pad_id)
            sync(device)
            return time.perf_counter() - t0, batch
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir", help="the build folder, or the bench_gpu program")
    ap.add_argument("--preset", default="7b-shape")
    ap.add_argument("--arch", default="llama")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sample", type=int, default=64)
    ap.add_argument("--skip-pivotmt", action="store_true")
    a = ap.parse_args()
    # A build folder, or bench_gpu itself (the GPU bundle's bin/bench_gpu, its libraries on
    # LD_LIBRARY_PATH as scripts/gpu-check.sh sets them).
    bench = a.build_dir if os.path.isfile(a.build_dir) else os.path.join(a.build_dir, "bench", "bench_gpu")
    with tempfile.TemporaryDirectory() as work:
        sample_file = os.path.join(work, "sample.json")
        subprocess.run([bench, "--replay", REPLAY, "--export-sample", sample_file, "--limit", str(a.sample)], check=True,
                       stdout=subprocess.DEVNULL)
        data = json.load(open(sample_file))
    sample, full = data["sample"], data["replay"]
    share = len(sample) / full["requests"]

    pivotmt = None
    if not a.skip_pivotmt:
        out = subprocess.run([bench, "--replay", REPLAY, "--preset", a.preset, "--arch", a.arch, "--device",
                              "cuda:0" if a.device == "cuda" else "cpu"], check=True, capture_output=True, text=True).stdout
        m = re.search(r"^replay wall ([0-9.]+) s", out, re.M)
        pivotmt = float(m.group(1))
        print(out, file=sys.stderr)

    config = LlamaConfig(**SHAPES[(a.preset, a.arch)], max_position_embeddings=16384, rms_norm_eps=1e-5,
                         torch_dtype=torch.float16, tie_word_embeddings=False)
    torch.manual_seed(0)
    dtype = torch.float16 if a.device == "cuda" else torch.float32  # FP16 matmuls are not a CPU's
    rows = []
    precision = "FP16" if dtype == torch.float16 else "F32"
    for label, batch, by_length, attention in ((f"as the original ran it (pipeline-style, batch 4, {precision})", 4, False, "sdpa"),
                                               (f"at its best (batch 32 sorted by length, SDPA, {precision})", 32, True, "sdpa")):
        config._attn_implementation = attention
        model = LlamaForCausalLM(config).to(dtype=dtype, device=a.device).eval()
        seconds, ran = time_transformers(model, sample, a.device, batch, by_length, pad_id=0)
        del model
        if a.device == "cuda":
            torch.cuda.empty_cache()
        rows.append((label, ran, seconds, seconds / share))

    print(f"Sample: {len(sample)} of the {full['requests']} requests (every {full['requests'] // len(sample)}th), "
          f"{sum(len(r['prompt']) for r in sample)} prompt and {sum(r['response_tokens'] for r in sample)} response "
          f"tokens; transformers' times extrapolated to the whole study by the sample's share ({share:.4f}).")
    print(f"Model: {a.preset} {a.arch}, random weights, {a.device}.\n")
    print("| runner | batch | sample (s) | whole study (s) | pivotmt's speed-up |")
    print("|---|---|---|---|---|")
    if pivotmt is not None:
        print(f"| pivotmt bench_gpu --replay (measured on all {full['requests']}) | 64 | — | {pivotmt:.1f} | 1.0 |")
    for label, ran, seconds, whole in rows:
        ratio = f"{whole / pivotmt:.1f}" if pivotmt else "—"
        print(f"| transformers {transformers_version()}, {label} | {ran} | {seconds:.1f} | {whole:.0f} (extrapolated) | {ratio} |")


def transformers_version():
    import transformers
    return transformers.__version__


if __name__ == "__main__":
    main()
