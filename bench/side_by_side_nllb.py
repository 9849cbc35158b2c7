#!/usr/bin/env python3
"""NLLB-200 speed side by side: pivotmt (bench_nllb) and Hugging Face transformers translate
the same sentences with the same randomly initialised model shaped like
facebook/nllb-200-distilled-600M (d_model 1024, 12 + 12 layers, 16 heads, FFN 4096, the
256,206-token vocabulary), greedy and with 4 beams, one sentence at a time and 16 at a
time, on the same cores. Prints a Markdown table (sentences/s, the ratio, how many outputs
are token for token the same) for docs/PERFORMANCE.md.

The tokenizer is the tiny model's of tests/goldens/nllb_tiny (its ids are a subset of the
vocabulary; the work per token does not depend on which ids they are). A random model never
chooses </s>, so every sentence runs to max_length on both sides: the same work.

With --device cuda both run on the GPU, in F32 (transformers' F32 model, pivotmt's F32
weights: the CPU's tokens) and in F16 (transformers' model.half(), pivotmt's F16 weights on
the tensor cores: both round differently, so "same tokens" counts the F16 pair's agreement);
the GPU machine has no ../shared, so the sentences are then the golden's (tests/goldens/
nllb_tiny), repeated to --sentences.

Needs torch and transformers (the development machine; the GPU machine has them):

  python3 bench/side_by_side_nllb.py BUILD_DIR WORK_DIR [--sentences 16] [--max-length 64] [--threads 2]
                                     [--device cpu|cuda]
"""
import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import torch
from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_model(model_dir):
    if os.path.exists(os.path.join(model_dir, "model.safetensors")):
        return
    os.makedirs(model_dir, exist_ok=True)
    config = M2M100Config(vocab_size=256206, d_model=1024, encoder_layers=12, decoder_layers=12,
                          encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                          decoder_ffn_dim=4096, activation_function="relu", max_position_embeddings=1024,
                          scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                          decoder_start_token_id=2, dropout=0.0, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(config).eval()
    model.save_pretrained(model_dir)
    model.generation_config.max_length = 200
    model.generation_config.save_pretrained(model_dir)
    tiny = os.path.join(ROOT, "tests/goldens/nllb_tiny")
    for name in ["sentencepiece.bpe.model", "special_tokens_map.json", "tokenizer_config.json", "tokenizer.json"]:
        shutil.copy(os.path.join(tiny, name), model_dir)


def sentences(n):
    path = os.path.join(ROOT, "../shared/fixtures/original/konkani_full/k_0/results_k0.csv")
    if os.path.exists(path):
        csv.field_size_limit(1 << 30)
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r["mar"] for r in csv.DictReader(f) if r["mar"]]
    else:  # the GPU machine: the golden's sources
        with open(os.path.join(ROOT, "tests/goldens/nllb_tiny/golden.json"), encoding="utf-8") as f:
            rows = [s["text"] for g in json.load(f)["generation"] for s in g["sources"]]
    return (rows * (n // len(rows) + 1))[:n]


def run_transformers(model, tok, texts, beams, batch, max_length, device):
    tok.src_lang = "mar_Deva"
    forced = tok.convert_tokens_to_ids("gom_Deva")
    ids = []
    if device == "cuda":  # warm-up: kernels loaded, cuBLAS handles made
        with torch.inference_mode():
            model.generate(**tok(texts[:1], return_tensors="pt").to(device), forced_bos_token_id=forced, max_length=8)
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(texts), batch):
            enc = tok(texts[b:b + batch], return_tensors="pt", padding=True, truncation=True).to(device)
            out = model.generate(**enc, forced_bos_token_id=forced, max_length=max_length, num_beams=beams)
            for row in out.cpu().tolist():
                while row and row[-1] == 1:
                    row.pop()
                ids.append(row)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, ids


def run_pivotmt(build, model_dir, sentences_file, weights, beams, batch, max_length, threads, work, device, extra=()):
    out = os.path.join(work, f"pivotmt_{weights}_{beams}_{batch}{'_'.join([''] + list(extra))}.json")
    env = dict(os.environ, PIVOTMT_THREADS=str(threads), OMP_NUM_THREADS="1")
    # PIVOTMT_BENCH_LAUNCH: a prefix for the program (gpu-check.sh's loader of a bundle's libraries).
    cmd = shlex.split(os.environ.get("PIVOTMT_BENCH_LAUNCH", "")) + [os.path.join(build, "bench/bench_nllb"), model_dir, sentences_file, out, "--weights", weights, "--beams",
           str(beams), "--batch", str(batch), "--max-length", str(max_length), "--device",
           "cuda:0" if device == "cuda" else "cpu"] + list(extra)
    line = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    figures = json.loads(line)
    with open(out) as f:
        figures["ids"] = json.load(f)["ids"]
    return figures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("work")
    ap.add_argument("--sentences", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = os.path.join(args.work, "nllb-600M-random")
    make_model(model_dir)
    texts = sentences(args.sentences)
    sentences_file = os.path.join(args.work, "sentences.txt")
    with open(sentences_file, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    model = M2M100ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval().to(args.device)
    # On a GPU each pivotmt storage has its transformers twin: F32, and F16 (model.half()).
    model_f16 = (M2M100ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float16).eval().to(args.device)
                 if args.device == "cuda" else None)
    weight_kinds = ["f32", "f16"]
    tok = NllbTokenizer.from_pretrained(model_dir)

    rows = []
    for beams, batch in [(1, 1), (1, 16), (4, 1), (4, 16)]:
        hf_s, hf_ids = run_transformers(model, tok, texts, beams, batch, args.max_length, args.device)
        line = {"beams": beams, "batch": batch, "transformers_s": hf_s}
        if model_f16 is not None:
            line["transformers_f16_s"], hf16_ids = run_transformers(model_f16, tok, texts, beams, batch,
                                                                    args.max_length, args.device)
        for weights in weight_kinds:
            p = run_pivotmt(args.build, model_dir, sentences_file, weights, beams, batch, args.max_length,
                            args.threads, args.work, args.device)
            same = sum(a == b for a, b in zip(p["ids"], hf16_ids if weights == "f16" and model_f16 is not None
                                              else hf_ids))
            line[weights] = {"s": p["seconds"], "same": same, "floor_s": p["bandwidth_floor_s"],
                             "bandwidth_gbs": p["bandwidth_gbs"]}
        rows.append(line)
        print(json.dumps(line), file=sys.stderr, flush=True)

    n = len(texts)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{args.threads} threads"
    print(f"{n} sentences (Marathi → Konkani, max_length {args.max_length}), {where}, "
          f"torch {torch.__version__}\n")
    if args.device == "cuda":
        print("| decoding | batch | transformers F32 sent/s | pivotmt F32 sent/s | ratio | same tokens | "
              "transformers F16 sent/s | pivotmt F16 sent/s | ratio | same tokens | bandwidth floor F16 (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            decoding = "greedy" if r["beams"] == 1 else f"{r['beams']} beams"
            hf, f32 = n / r["transformers_s"], n / r["f32"]["s"]
            hf16, f16 = n / r["transformers_f16_s"], n / r["f16"]["s"]
            print(f"| {decoding} | {r['batch']} | {hf:.3f} | {f32:.3f} | {f32 / hf:.2f}× | {r['f32']['same']}/{n} | "
                  f"{hf16:.3f} | {f16:.3f} | {f16 / hf16:.2f}× | {r['f16']['same']}/{n} | "
                  f"{r['f16']['floor_s']:.2f} of {r['f16']['s']:.2f} |")
        # Batch-1 greedy decode steps as CUDA graphs (the default) against every kernel
        # launched one by one: the launch overhead the graphs remove.
        launched = run_pivotmt(args.build, model_dir, sentences_file, "f16", 1, 1, args.max_length, args.threads,
                               args.work, args.device, ("--graphs", "off"))
        with_graphs = rows[0]["f16"]["s"]
        print(f"\nCUDA graphs: F16 greedy batch 1: {with_graphs:.2f} s with graphs, {launched['seconds']:.2f} s "
              f"launched op by op ({launched['seconds'] / with_graphs:.2f}×)")
        return
    print("| decoding | batch | transformers F32 sent/s | pivotmt F32 sent/s | ratio | same tokens | "
          "pivotmt F16 weights sent/s | ratio | bandwidth floor F16 (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        decoding = "greedy" if r["beams"] == 1 else f"{r['beams']} beams"
        hf = n / r["transformers_s"]
        f32 = n / r["f32"]["s"]
        f16 = n / r["f16"]["s"]
        print(f"| {decoding} | {r['batch']} | {hf:.3f} | {f32:.3f} | {f32 / hf:.2f}× | {r['f32']['same']}/{n} | "
              f"{f16:.3f} | {f16 / hf:.2f}× | {r['f16']['floor_s']:.1f} of {r['f16']['s']:.1f} |")


if __name__ == "__main__":
    main()
