#!/usr/bin/env python3
"""The peer of bench_train: PyTorch + PEFT LoRA training of the same checkpoint on the same
sequences, as the original recipe runs it on a CPU (F32, LoRA on all projections, gradient
checkpointing, AdamW, batch x accumulation with a token-mean loss). Prints one JSON line:
tokens/s over the timed steps and peak RSS. Development machine only (torch, transformers,
peft); bench_train runs it when given --python.

usage: bench_train_pytorch.py MODEL_DIR SEQUENCES.json STEPS BATCH ACCUM THREADS [checkpointing|no-checkpointing]
"""
import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM


def main(model_dir, seq_path, steps, batch, accum, threads, mode="checkpointing"):
    torch.set_num_threads(threads)
    seqs = [torch.tensor(s, dtype=torch.long) for s in json.load(open(seq_path))]
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    if mode == "checkpointing":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    cfg = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
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
            logits = model(input_ids=ids).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                     reduction="sum") / n
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if step > 0:
            timed_seconds += time.perf_counter() - t0
            timed_tokens += sum(len(s) for s in window)
    print(json.dumps({"tokens_per_second": timed_tokens / timed_seconds,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "torch": torch.__version__, "threads": threads, "mode": mode}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
         sys.argv[7] if len(sys.argv) > 7 else "checkpointing")
