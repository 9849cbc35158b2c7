#!/usr/bin/env python3
"""Goldens for `--weights gguf-q8` on the real model: what llama.cpp itself computes for
SmolLM2-135M-Instruct's GGUF file (the fixture, Q4_1 with a Q8_0 embedding).

Builds tests/goldens/llamacpp_probe.cpp against a llama.cpp tree that has been built
(bench/side_by_side_llamacpp.py builds one: its build/bin holds libllama.so), runs it on
the four prompts of tests/goldens/smollm2/golden.safetensors (their token ids, so the
tokenizer is not what is compared) with F32 caches, flash attention off and 2 threads,
and writes tests/goldens/smollm2_llamacpp/golden.safetensors:
  r{i}.input_ids      I64 [prompt]    the prompt (the smollm2 golden's)
  r{i}.greedy_tokens  I64 [33]        llama.cpp's greedy tokens
  r{i}.logit_ids      I64 [n]         the smollm2 golden's vocabulary subset
  r{i}.logits         F32 [3, n]      llama.cpp's logits there: after the prompt, then
                                      after each of the first two greedy tokens
metadata: the llama.cpp tree's version.

Run: python tests/goldens/make_smollm2_llamacpp_golden.py --llamacpp DIR   (numpy, safetensors)
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "models", "smollm2-135m-instruct",
                     "SmolLM2-135M-Instruct.Q4_1.gguf")
STEPS = 32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamacpp", required=True, help="llama.cpp source tree with build/bin/libllama.so")
    args = ap.parse_args()
    lib = os.path.join(args.llamacpp, "build", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe")
        subprocess.run(["g++", "-O2", "-std=c++17", os.path.join(HERE, "llamacpp_probe.cpp"),
                        "-I" + os.path.join(args.llamacpp, "include"), "-I" + os.path.join(args.llamacpp, "ggml", "include"),
                        "-L" + lib, "-lllama", "-lggml", "-lggml-base", "-Wl,-rpath," + lib, "-o", probe], check=True)
        src = load_file(os.path.join(HERE, "smollm2", "golden.safetensors"))
        prompts = [src[f"r{r}.input_ids"] for r in range(4)]
        text = "".join(" ".join(str(int(t)) for t in p) + "\n" for p in prompts)
        out = subprocess.run([probe, os.path.abspath(MODEL), str(STEPS), "2"], input=text, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    tensors = {}
    for r, line in enumerate(out):
        j = json.loads(line)
        assert j["prompt"] == len(prompts[r])
        ids = src[f"r{r}.logit_ids"]
        tensors[f"r{r}.input_ids"] = prompts[r]
        tensors[f"r{r}.greedy_tokens"] = np.array([s["token"] for s in j["steps"]], dtype=np.int64)
        tensors[f"r{r}.logit_ids"] = ids
        tensors[f"r{r}.logits"] = np.stack([np.asarray(s["logits"], dtype=np.float32)[ids] for s in j["steps"][:3]])
    version = subprocess.run([os.path.join(lib, "llama-bench"), "--version"], capture_output=True, text=True)
    meta = {"source": "llama.cpp via tests/goldens/llamacpp_probe.cpp (F32 caches, no flash attention, 2 threads)",
            "llama.cpp": (version.stdout + version.stderr).strip().splitlines()[0] if version.returncode == 0 else "unknown",
            "tree": os.path.basename(os.path.abspath(os.path.join(args.llamacpp, "..", "..")))}
    os.makedirs(os.path.join(HERE, "smollm2_llamacpp"), exist_ok=True)
    path = os.path.join(HERE, "smollm2_llamacpp", "golden.safetensors")
    save_file(tensors, path, metadata=meta)
    print("wrote", path, os.path.getsize(path), "bytes;", meta)


if __name__ == "__main__":
    main()
