#!/usr/bin/env python3
"""pivotmt against llama.cpp on the same generated checkpoints, side by side.

llama.cpp is built from source for this comparison only (never a dependency of pivotmt),
for example from PyPI's llama-cpp-python source distribution, which carries it:

    pip download --no-binary :all: --no-deps llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
    cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
    ninja -C build llama-bench llama-batched-bench

and its GGUF converter runs in a Python environment with torch, numpy, sentencepiece and
transformers (--python). Then:

    python3 bench/side_by_side_llamacpp.py --llamacpp PATH/TO/llama.cpp --python VENV/bin/python

With --gguf, the same GGUF files instead (issue 29): SmolLM2-135M-Instruct Q4_1 from
../shared, the same model requantised to Q8_0 (llama-quantize --allow-requantize), and the
7B-shaped model (4 layers) quantised to Q4_0 (--pure: the output layer too) — pivotmt on the
very same file as llama.cpp (needs llama-quantize too), with --weights gguf-q8 (the file's
blocks times int8 activations: llama.cpp's arithmetic, the like-for-like row) and --weights
gguf (F32 activations, transformers' numbers within 1e-4; slower).

Rounds alternate the two engines (and which goes first) on the same cores; the table
gives each figure's median and range over the rounds and the ratio of the medians.
Figures (as in docs/PERFORMANCE.md): prefill of one 512-token prompt; decode of 32 tokens
after a 64-token context at batch 1, 8 and 32 (llama-bench tg32 at depth 64;
llama-batched-bench, 64-token prompts, 32 new tokens, 8 and 32 parallel sequences).
F16 weights against llama.cpp F16; pivotmt's q8 (int8 weights and activations) and int8
(weight-only) against Q8_0. The 7B-shaped model keeps TowerInstruct-7B's matrix shapes
with 4 layers instead of 32 (batch-1 decode streams every matrix once per token, so the
per-layer rate is what the row measures).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout


def make_models(args, only=None):
    pivotmt = os.path.join(args.build, "apps/pivotmt/pivotmt")
    tok = os.path.join(ROOT, "..", "shared", "fixtures", "tokenizers", "llama-2")
    models = {}
    for name, extra in (("small", ["--preset", "small"]), ("7b-shape-4-layers", ["--preset", "7b-shape", "--layers", "4"])):
        if only and name != only:
            continue
        d = os.path.join(args.work, name)
        if not os.path.exists(os.path.join(d, "model.safetensors")):
            run([pivotmt, "dev", "make-model", "--out", d, "--vocab", "32000", "--tokenizer", tok, *extra])
        ggufs = {}
        for outtype in ("f16", "q8_0"):
            g = os.path.join(args.work, f"{name}-{outtype}.gguf")
            if not os.path.exists(g):
                run([args.python, os.path.join(args.llamacpp, "convert_hf_to_gguf.py"), d, "--outtype", outtype, "--outfile", g])
            ggufs[outtype] = g
        models[name] = (d, ggufs)
    return models


def llama_figures(args, gguf, only_b1=False):
    bin_dir = os.path.join(args.llamacpp, "build", "bin")
    t = str(args.threads)
    out = {}
    if not only_b1:
        pp = json.loads(run([os.path.join(bin_dir, "llama-bench"), "-m", gguf, "-p", "512", "-n", "0", "-t", t, "-r", "3", "-o", "json"]))
        out["prefill_tps"] = pp[0]["avg_ts"]
    tg = json.loads(run([os.path.join(bin_dir, "llama-bench"), "-m", gguf, "-p", "0", "-n", "32", "-d", "64", "-t", t, "-r", "3", "-o", "json"]))
    out["decode_b1_tps"] = tg[0]["avg_ts"]
    if not only_b1:
        text = run([os.path.join(bin_dir, "llama-batched-bench"), "-m", gguf, "-c", "4096", "-b", "2048", "-ub", "512",
                    "-npp", "64", "-ntg", "32", "-npl", "8,32", "-t", t, "--output-format", "jsonl"])
        for line in text.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                out[f"decode_b{row['pl']}_tps"] = row["speed_tg"]
    return out


def cell(vals):
    """A figure's median and range over the rounds."""
    return f"{statistics.median(vals):.1f} ({min(vals):.1f}–{max(vals):.1f})"


def make_gguf_models(args):
    """The GGUF comparison's three files: SmolLM2 Q4_1 (the fixture), SmolLM2 Q8_0, 7B-shape Q4_0."""
    quantize = os.path.join(args.llamacpp, "build", "bin", "llama-quantize")
    smol = os.path.join(ROOT, "..", "shared", "fixtures", "models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    smol_q8 = os.path.join(args.work, "smollm2-135m-q8_0.gguf")
    if not os.path.exists(smol_q8):
        run([quantize, "--allow-requantize", smol, smol_q8, "Q8_0"])
    big_dir, big_ggufs = make_models(args, only="7b-shape-4-layers")["7b-shape-4-layers"]
    big_q4 = os.path.join(args.work, "7b-shape-4-layers-q4_0.gguf")
    if not os.path.exists(big_q4):
        run([quantize, "--pure", big_ggufs["f16"], big_q4, "Q4_0"])  # every matrix Q4_0 (no Q6_K output layer)
    return {"SmolLM2-135M Q4_1": smol, "SmolLM2-135M Q8_0": smol_q8, "7B shape (4 layers) Q4_0": big_q4}


def gguf_main(args):
    files = make_gguf_models(args)
    keys = [("prefill 512", "prefill_tps"), ("decode b1 after 64", "decode_b1_tps"), ("decode b8", "decode_b8_tps"),
            ("decode b32", "decode_b32_tps")]
    engines = ["gguf-q8", "gguf", "llama"]
    samples = {}
    for r in range(args.rounds):
        order = engines if r % 2 == 0 else engines[::-1]
        for engine in order:
            for name, path in files.items():
                figs = llama_figures(args, path) if engine == "llama" else pivotmt_figures(args, path, engine)
                for k, v in figs.items():
                    if k.endswith("_tps"):
                        samples.setdefault((engine, name, k), []).append(v)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"threads {args.threads}, {args.rounds} alternating rounds; tokens/s, median (range); the same GGUF file\n")
    print("| model | figure | pivotmt gguf-q8 | llama.cpp | gguf-q8 / llama.cpp | pivotmt gguf (F32 activations) | gguf / llama.cpp |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in files:
        for label, key in keys:
            q, e, b = (samples.get((x, name, key)) for x in engines)
            ratio = lambda a: f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "—"
            print(f"| {name} | {label} | {cell(q) if q else '—'} | {cell(b) if b else '—'} | **{ratio(q)}** | "
                  f"{cell(e) if e else '—'} | {ratio(e)} |")


def pivotmt_figures(args, model_dir, weights, only_b1=False):
    cmd = [os.path.join(args.build, "bench/bench_engine"), "--figures", model_dir, weights, str(args.threads)]
    if only_b1:
        cmd.append("b1")
    return json.loads(run(cmd).strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llamacpp", required=True, help="llama.cpp source tree with build/bin/llama-bench")
    p.add_argument("--python", default=sys.executable, help="Python for convert_hf_to_gguf.py")
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="pivotmt build directory")
    p.add_argument("--work", default="/tmp/pivotmt-side-by-side", help="checkpoints and GGUF files")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--gguf", action="store_true", help="the GGUF comparison (same files, --weights gguf-q8 and gguf)")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.gguf:
        return gguf_main(args)
    models = make_models(args)
    small_dir, small_gguf = models["small"]
    big_dir, big_gguf = models["7b-shape-4-layers"]

    # (row label, pivotmt figures, llama.cpp figures, figure key)
    rows = [
        ("prefill 512, F16", "f16", "f16", "prefill_tps"),
        ("decode b1 after 64, F16", "f16", "f16", "decode_b1_tps"),
        ("decode b8, F16", "f16", "f16", "decode_b8_tps"),
        ("decode b32, F16", "f16", "f16", "decode_b32_tps"),
        ("prefill 512, q8 vs Q8_0", "q8", "q8_0", "prefill_tps"),
        ("decode b1, q8 vs Q8_0", "q8", "q8_0", "decode_b1_tps"),
        ("decode b8, q8 vs Q8_0", "q8", "q8_0", "decode_b8_tps"),
        ("decode b32, q8 vs Q8_0", "q8", "q8_0", "decode_b32_tps"),
        ("prefill 512, int8 (weight-only) vs Q8_0", "int8", "q8_0", "prefill_tps"),
        ("decode b1, int8 vs Q8_0", "int8", "q8_0", "decode_b1_tps"),
        ("decode b8, int8 vs Q8_0", "int8", "q8_0", "decode_b8_tps"),
        ("decode b32, int8 vs Q8_0", "int8", "q8_0", "decode_b32_tps"),
    ]
    samples = {}  # (engine, weights, model, key) -> [values]

    def add(engine, weights, model, figs):
        for k, v in figs.items():
            if k.endswith("_tps"):
                samples.setdefault((engine, weights, model, k), []).append(v)

    for r in range(args.rounds):
        order = ["pivotmt", "llama"] if r % 2 == 0 else ["llama", "pivotmt"]
        for engine in order:
            if engine == "pivotmt":
                for w in ("f16", "q8", "int8"):
                    add("pivotmt", w, "small", pivotmt_figures(args, small_dir, w))
                add("pivotmt", "q8", "7b", pivotmt_figures(args, big_dir, "q8", True))
                add("pivotmt", "int8", "7b", pivotmt_figures(args, big_dir, "int8", True))
            else:
                for w in ("f16", "q8_0"):
                    add("llama", w, "small", llama_figures(args, small_gguf[w]))
                add("llama", "q8_0", "7b", llama_figures(args, big_gguf["q8_0"], True))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"threads {args.threads}, {args.rounds} alternating rounds; tokens/s, median (range)\n")
    print("| figure | pivotmt | llama.cpp | pivotmt / llama.cpp |")
    print("|---|---:|---:|---:|")
    all_rows = [(label, pw, lw, key, "small") for label, pw, lw, key in rows]
    all_rows += [("7B shape (4 layers), decode b1, q8 vs Q8_0", "q8", "q8_0", "decode_b1_tps", "7b"),
                 ("7B shape (4 layers), decode b1, int8 vs Q8_0", "int8", "q8_0", "decode_b1_tps", "7b")]
    for label, pw, lw, key, model in all_rows:
        a, b = samples.get(("pivotmt", pw, model, key)), samples.get(("llama", lw, model, key))
        if not a or not b:
            print(f"| {label} | {cell(a) if a else '—'} | {cell(b) if b else '—'} | — |")
            continue
        print(f"| {label} | {cell(a)} | {cell(b)} | {statistics.median(a) / statistics.median(b):.2f} |")


if __name__ == "__main__":
    main()
