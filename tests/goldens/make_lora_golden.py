#!/usr/bin/env python3
"""LoRA training goldens from PyTorch + PEFT, for tests/test_lora_train.cpp.

On the tiny GQA fixture (../shared/fixtures/models/tiny-gqa, F32) with a LoRA adapter on
all seven projections:
  - grad.*: one sequence's summed cross-entropy, every LoRA gradient and the logits, for an
    adapter with random A and B (so every backward path carries signal); merge.*: the
    projections after PEFT's merge_and_unload of that adapter;
  - f32.* / nf4.*: a 10-step run as HF Trainer runs the original recipe (batch 2 x grad
    accumulation 2, loss = summed CE / label tokens of the whole window, global-norm clip
    1.0, AdamW (betas 0.9/0.999, eps 1e-8, no weight decay), cosine schedule with warmup),
    dropout 0, from PEFT's own initial adapter (stored); per step the loss, learning rate
    and pre-clip gradient norm, and the final adapter. nf4.* trains on the base weights
    quantised to NF4 by bitsandbytes (double quantisation) and dequantised to F32.

Development machine only:  pip install torch transformers peft bitsandbytes safetensors
  python3 tests/goldens/make_lora_golden.py ../shared/fixtures/models/tiny-gqa tests/goldens/lora.safetensors
"""
import json
import sys

import torch
import transformers
import peft
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
R, ALPHA = 4, 8
STEPS, WARMUP, LR, BATCH, ACCUM = 10, 3, 2e-3, 2, 2


def load(model_dir, nf4=False):
    m = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    if nf4:
        import bitsandbytes.functional as F
        with torch.no_grad():
            for name, mod in m.named_modules():
                if name.split(".")[-1] in TARGETS:
                    w = mod.weight.data
                    p, qs = F.quantize_4bit(w.reshape(-1).contiguous(), blocksize=64, quant_type="nf4", compress_statistics=True)
                    mod.weight.data = F.dequantize_4bit(p, qs).reshape(w.shape).float()
    m.eval()  # no dropout anywhere (the recipe's dropout is set to 0 here)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(m, cfg)


def lora_params(model):
    return {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}


def sequences():
    g = torch.Generator().manual_seed(99)
    seqs = []
    for i in range(8):
        T = int(torch.randint(12, 41, (1,), generator=g))
        ids = torch.randint(3, 300, (T,), generator=g)
        target = torch.ones(T, dtype=torch.uint8)
        if i % 2 == 1:
            target[: T // 2] = 0  # loss on the "response" only
        seqs.append((ids, target))
    return seqs


def seq_loss_sum(model, ids, target):
    labels = ids.clone()
    labels[target == 0] = -100
    logits = model(input_ids=ids[None]).logits[0].float()
    return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum")


def train(model, seqs, prefix, tensors):
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # the base's logits (B = 0 at PEFT's init) on sequence 1
        tensors[f"{prefix}.base_logits"] = model(input_ids=seqs[1][0][None]).logits[0].float().contiguous()
    for n, p in lora_params(model).items():
        tensors[f"{prefix}.init.{n}"] = p.detach().clone().contiguous()
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, WARMUP, STEPS)
    losses, lrs, norms = [], [], []
    cursor = 0
    for step in range(STEPS):
        window = [seqs[(cursor + i) % len(seqs)] for i in range(BATCH * ACCUM)]
        cursor += BATCH * ACCUM
        n = sum(int(t[1:].sum()) for _, t in window)
        total = 0.0
        for ids, t in window:
            loss = seq_loss_sum(model, ids, t) / n
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total)
        norms.append(float(norm))
    tensors[f"{prefix}.loss"] = torch.tensor(losses, dtype=torch.float64)
    tensors[f"{prefix}.lr"] = torch.tensor(lrs, dtype=torch.float64)
    tensors[f"{prefix}.grad_norm"] = torch.tensor(norms, dtype=torch.float64)
    for n, p in lora_params(model).items():
        tensors[f"{prefix}.final.{n}"] = p.detach().clone().contiguous()


def main(model_dir, out):
    torch.manual_seed(0)
    tensors = {}
    seqs = sequences()
    for i, (ids, t) in enumerate(seqs):
        tensors[f"seq{i}.ids"] = ids.to(torch.int32)
        tensors[f"seq{i}.target"] = t

    # Gradients of one sequence's summed loss for a random adapter.
    model = load(model_dir)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in lora_params(model).items():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.2)
    ids, t = seqs[1]
    loss = seq_loss_sum(model, ids, t)
    loss.backward()
    tensors["grad.loss"] = torch.tensor([loss.item()], dtype=torch.float64)
    tensors["grad.logits"] = model(input_ids=ids[None]).logits[0].detach().float().contiguous()
    for n, p in lora_params(model).items():
        tensors[f"grad.adapter.{n}"] = p.detach().clone().contiguous()
        tensors[f"grad.d.{n}"] = p.grad.detach().clone().contiguous()

    # PEFT's merge of that adapter into the F32 base (merge_and_unload).
    merged = model.merge_and_unload()
    for n, p in merged.state_dict().items():
        if n.split(".")[-2] in TARGETS:
            tensors[f"merge.{n}"] = p.detach().clone().contiguous()

    torch.manual_seed(1)
    train(load(model_dir), seqs, "f32", tensors)
    torch.manual_seed(1)
    train(load(model_dir, nf4=True), seqs, "nf4", tensors)

    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "r": R, "alpha": ALPHA, "steps": STEPS, "warmup": WARMUP, "lr": LR, "batch": BATCH, "accum": ACCUM}
    save_file(tensors, out, metadata={"reference": json.dumps(meta)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
