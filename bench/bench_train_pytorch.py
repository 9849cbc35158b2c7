#!/usr/bin/env python3
"""The peer of bench_train: PyTorch + PEFT LoRA training of the same checkpoint on the same
sequences, as the original recipe runs it (LoRA r 16 on all projections, gradient
checkpointing, AdamW, batch x accumulation with a token-mean loss): on a CPU in F32; on a GPU
(`cuda`) with the base in F16 and F16 autocast, PyTorch's SDPA attention — QLoRA's compute
without bitsandbytes' NF4 storage (bitsandbytes adds a dequantisation per product: this peer
is if anything faster). Without peft (the GPU machine has torch and transformers only) the
LoRA layers are written here as PEFT's do it: base(x) + B(A(dropout(x))) · alpha / r, A
Kaiming-uniform, B zero, F32 parameters. Prints one JSON line: tokens/s over the timed steps
and peak memory (RSS on a CPU, torch's peak allocated device memory on a GPU). Development
and GPU machines only; bench_train runs it when given --python.

usage: bench_train_pytorch.py MODEL_DIR SEQUENCES.json STEPS BATCH ACCUM THREADS [checkpointing|no-checkpointing] [cpu|cuda]
"""
import json
import resource
import sys
import time

import math

import torch
from transformers import LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraLinear(torch.nn.Module):
    """PEFT's LoRA Linear: the frozen base plus B(A(dropout(x))) · alpha / r (F32 parameters)."""

    def __init__(self, base, r=16, alpha=16, dropout=0.05):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        self.lora_A = torch.nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = torch.nn.Dropout(dropout)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_A.t().to(x.dtype) @ self.lora_B.t().to(x.dtype)) * self.scaling


def add_lora(model):
    """PEFT when it is installed, else LoraLinear on every target projection; returns (model, peer name)."""
    try:
        from peft import LoraConfig, get_peft_model
        cfg = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM", target_modules=TARGETS)
        return get_peft_model(model, cfg), "PEFT"
    except ImportError:
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.model.layers:
            for holder in (layer.self_attn, layer.mlp):
                for name in TARGETS:
                    if hasattr(holder, name):
                        setattr(holder, name, LoraLinear(getattr(holder, name)))
        return model, "LoRA layers as PEFT's (peft absent)"


def main(model_dir, seq_path, steps, batch, accum, threads, mode="checkpointing", device="cpu"):
    torch.set_num_threads(threads)
    gpu = device == "cuda"
    seqs = [torch.tensor(s, dtype=torch.long, device=device) for s in json.load(open(seq_path))]
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float16 if gpu else torch.float32,
                                             attn_implementation="sdpa" if gpu else "eager").to(device)
    if mode == "checkpointing":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model, peer = add_lora(model)
    if gpu:  # LoRA's parameters in F32, as PEFT keeps them (autocast computes in F16)
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        torch.cuda.reset_peak_memory_stats()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0)
    W = batch * accum
    timed_tokens, timed_seconds = 0, 0.0
    for step in range(steps + 1):  # step 0 warms up (allocations, thread pools)
        window = [seqs[(step * W + j) % len(seqs)] for j in range(W)]
        n = sum(len(s) - 1 for s in window)
        t0 = time.perf_counter()
        for j in range(0, W, batch):
            ids = torch.stack(window[j:j + batch])  # equal lengths: no padding
            with torch.autocast("cuda", dtype=torch.float16, enabled=gpu):
                logits = model(input_ids=ids).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                     reduction="sum") / n
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if gpu:
            torch.cuda.synchronize()
        if step > 0:
            timed_seconds += time.perf_counter() - t0
            timed_tokens += sum(len(s) for s in window)
    peak = torch.cuda.max_memory_allocated() if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"tokens_per_second": timed_tokens / timed_seconds, "peak_rss_bytes": peak,
                      "torch": torch.__version__, "threads": threads, "mode": mode, "device": device, "peer": peer}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
         sys.argv[7] if len(sys.argv) > 7 else "checkpointing", sys.argv[8] if len(sys.argv) > 8 else "cpu")
