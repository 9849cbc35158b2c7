#!/usr/bin/env python3
"""PEFT's own adapter files, and a check that PEFT loads adapters pivotmt writes.

  python3 tests/goldens/make_peft_adapter.py MODEL_DIR GOLDEN.safetensors OUT_DIR
      saves the random adapter of GOLDEN (grad.adapter.*) with PEFT's save_pretrained into
      OUT_DIR (tests/goldens/peft_adapter: pivotmt must read PEFT's real files);
  python3 tests/goldens/make_peft_adapter.py --check MODEL_DIR ADAPTER_DIR GOLDEN.safetensors
      loads ADAPTER_DIR (written by pivotmt) with PeftModel.from_pretrained and compares its
      logits on sequence 1 with GOLDEN's grad.logits.
  python3 tests/goldens/make_peft_adapter.py --check-merge MODEL_DIR ADAPTER_DIR MERGED_DIR
      loads ADAPTER_DIR (trained by pivotmt finetune) with PEFT, merges it (merge_and_unload)
      and compares every weight with MERGED_DIR (pivotmt merge of the same adapter).
Development machine only (pip install torch transformers peft safetensors).
"""
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base(model_dir):
    return LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()


def save(model_dir, golden, out):
    g = load_file(golden)
    model = get_peft_model(base(model_dir), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                                       task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(g["grad.adapter." + n.replace(".default", "")])
    model.save_pretrained(out)


def check(model_dir, adapter, golden):
    g = load_file(golden)
    model = PeftModel.from_pretrained(base(model_dir), adapter).eval()
    with torch.no_grad():
        logits = model(input_ids=g["seq1.ids"].long()[None]).logits[0]
    diff = (logits - g["grad.logits"]).abs().max().item()
    print(f"PEFT loaded {adapter}: max |logit difference| {diff:.3g}")
    assert diff < 1e-4


def check_merge(model_dir, adapter, merged_dir):
    from safetensors.torch import load_file as load
    m = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager")  # stored dtype
    ours = load(merged_dir + "/model.safetensors")
    peft_merged = PeftModel.from_pretrained(m, adapter).merge_and_unload().state_dict()
    worst = 0.0
    for name, w in peft_merged.items():
        d = (w.float() - ours[name].float()).abs().max().item()
        scale = w.float().abs().max().item()
        worst = max(worst, d / max(scale, 1e-12))
    print(f"PEFT loaded {adapter} and merged it: max relative difference to pivotmt merge {worst:.3g} over {len(peft_merged)} tensors")
    assert worst < 1e-3


if __name__ == "__main__":
    if sys.argv[1] == "--check-merge":
        check_merge(*sys.argv[2:5])
    elif sys.argv[1] == "--check":
        check(*sys.argv[2:5])
    else:
        save(*sys.argv[1:4])
