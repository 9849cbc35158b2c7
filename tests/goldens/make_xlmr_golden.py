#!/usr/bin/env python3
"""A tiny random XLM-RoBERTa (COMET's encoder shape: post-norm BERT layers, RoBERTa
positions from pad + 1, every hidden state kept) and transformers' outputs for real
multilingual sentences, for tests/test_bert.cpp.

The tokenizer is tests/goldens/unigram/tokenizer.json (a real Unigram vocabulary with the
XLM-R template); the model is sized to it. Written: config.json beside the tokenizer (that
folder then holds what xlm-roberta-large's hub repository holds for COMET: config and
tokenizer), and into OUT model.safetensors and golden.safetensors (sN.input_ids,
sN.hidden_states [layers + 1, T, hidden]; the sentences in the metadata). Development machine only (pip install torch transformers tokenizers):

  python3 tests/goldens/make_xlmr_golden.py tests/goldens/unigram/tokenizer.json ../shared tests/goldens/xlmr
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import XLMRobertaConfig, XLMRobertaModel


def sentences(shared):
    out = ["Hello, world!", "", "  spaces   and\ttabs ", "naïve café — ÆØÅ"]
    for name in ("konkani_train_pool_reconstructed.jsonl", "arabic_train_pool_reconstructed.jsonl"):
        with open(os.path.join(shared, "fixtures/original", name), encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= 3:
                    break
                row = json.loads(line)
                out += [v for k, v in sorted(row.items()) if isinstance(v, str) and v.strip()][:3]
    return out


def main():
    tok_path, shared, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    tok = Tokenizer.from_file(tok_path)
    torch.manual_seed(7)
    cfg = XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    model = XLMRobertaModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # wider than the init's 0.02 so the layers change the states visibly
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cfg.save_pretrained(os.path.dirname(os.path.abspath(tok_path)))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "model.safetensors"))
    texts = sentences(shared)
    golden = {}
    with torch.no_grad():
        for s, text in enumerate(texts):
            ids = tok.encode(text).ids
            assert len(ids) <= 128, (text, len(ids))  # 130 positions from pad + 1
            out = model(torch.tensor([ids]), output_hidden_states=True)
            golden[f"s{s}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
            golden[f"s{s}.hidden_states"] = torch.stack([h[0] for h in out.hidden_states]).contiguous()
    save_file(golden, os.path.join(out_dir, "golden.safetensors"), metadata={"sentences": json.dumps(texts, ensure_ascii=False)})
    print(f"{len(texts)} sentences, vocabulary {cfg.vocab_size}")


if __name__ == "__main__":
    main()
