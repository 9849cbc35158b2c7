#!/usr/bin/env python3
"""Goldens for the real trained model (SmolLM2-135M-Instruct, Q4_1 GGUF in ../shared).

Writes tests/goldens/smollm2/golden.safetensors: for each prompt, the chat messages (in the
metadata), the prompt's token ids, logits at the last prompt position and after the first
greedy steps (at a fixed subset of the vocabulary: every 8th id plus each row's top 64),
and 32 greedy tokens; plus SHA-256 digests of dequantised tensors.

Independent references, each reading the same GGUF file:
  - the model: transformers (`from_pretrained(DIR, gguf_file=NAME, dtype=float32)`), which
    dequantises with gguf-py and undoes the converter's Q/K row permutation itself;
  - the chat template: transformers' Jinja (apply_chat_template, tokenize=False) over the
    file's tokenizer.chat_template;
  - the token ids: HF `tokenizers` built from the file's tokens and merges with the
    pre-tokenizer llama.cpp applies for tokenizer.ggml.pre = "smollm" (digits one by one,
    then GPT-2's byte-level regex; the model's own hub tokenizer.json says the same:
    Sequence[Digits(individual_digits), ByteLevel]) and the 17 CONTROL tokens as special
    added tokens. transformers' own GGUF tokenizer export differs (no digit split, a
    BOS-adding post-processor, BOS and EOS swapped), so it is only compared, and the
    comparison is printed.

Run: python tests/goldens/make_smollm2_golden.py   (transformers, torch, gguf, tokenizers,
safetensors). pivotmt never needs Python: the output is committed.
"""
import csv
import hashlib
import json
import os
import re
import sys

import numpy as np
import torch
from gguf import GGUFReader
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "..", "shared")
DIR = os.path.join(SHARED, "fixtures", "models", "smollm2-135m-instruct")
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(HERE, "smollm2")
GREEDY = 32
STEP_LOGITS = 3  # rows: the last prompt position, then after greedy tokens 1 and 2


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_ints(reader, key):
    f = reader.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


def reference_tokenizer(reader):
    tokens = field_strings(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_strings(reader, "tokenizer.ggml.merges")]
    types = field_ints(reader, "tokenizer.ggml.token_type")
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True)
                            for i, t in enumerate(types) if t == 3])
    return tok


def study_messages(path, row):
    """The chat messages of one of the original's rendered prompts (ChatML turns)."""
    csv.field_size_limit(1 << 30)
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    prompt = rows[row]["prompt"]
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>\n|$)", prompt, flags=re.S)
    return [{"role": r, "content": c} for r, c in turns if c]


def main():
    path = os.path.join(DIR, NAME)
    reader = GGUFReader(path)
    template = bytes(reader.fields["tokenizer.chat_template"].parts[reader.fields["tokenizer.chat_template"].data[0]]).decode()
    ref_tok = reference_tokenizer(reader)
    hf_tok = AutoTokenizer.from_pretrained(DIR, gguf_file=NAME)
    model = AutoModelForCausalLM.from_pretrained(DIR, gguf_file=NAME, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size

    original = os.path.join(SHARED, "fixtures", "original")
    prompts = [
        ("capital", [{"role": "user", "content": "What is the capital of France?"}]),
        ("digits", [{"role": "system", "content": "You answer in one sentence."},
                    {"role": "user", "content": "In 1969, 3 astronauts flew 384,400 km. How far is that in miles?"}]),
        ("konkani_k1", study_messages(os.path.join(original, "konkani_full", "k_1", "results_k1.csv"), 0)),
        ("arabic_k2", study_messages(os.path.join(original, "arabic_full", "k_2", "results_k2.csv"), 0)),
    ]
    tensors, meta = {}, {"format": "pt", "gguf": NAME, "prompts": json.dumps([n for n, _ in prompts])}
    for r, (name, messages) in enumerate(prompts):
        text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, chat_template=template)
        ids = ref_tok.encode(text, add_special_tokens=False).ids
        hf_ids = hf_tok(text, add_special_tokens=False)["input_ids"]
        print(f"{name}: {len(ids)} prompt tokens; transformers' GGUF tokenizer {'agrees' if hf_ids == ids else 'differs'}")
        with torch.no_grad():
            out = model(torch.tensor([ids]), use_cache=True)
            rows = [out.logits[0, -1].numpy().copy()]
            past = out.past_key_values
            greedy = []
            nxt = int(torch.argmax(out.logits[0, -1]))
            for s in range(GREEDY):
                greedy.append(nxt)
                out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                if len(rows) < STEP_LOGITS:
                    rows.append(out.logits[0, -1].numpy().copy())
                nxt = int(torch.argmax(out.logits[0, -1]))
        chosen = set(range(0, vocab, 8))
        for row in rows:
            chosen.update(np.argsort(-row)[:64].tolist())
        chosen = np.array(sorted(chosen), dtype=np.int64)
        p = f"r{r}."
        meta[p + "name"] = name
        meta[p + "messages"] = json.dumps(messages, ensure_ascii=False)
        meta[p + "rendered"] = text
        tensors[p + "input_ids"] = np.array(ids, dtype=np.int64)
        tensors[p + "greedy_tokens"] = np.array(greedy, dtype=np.int64)
        tensors[p + "logit_ids"] = chosen
        tensors[p + "logits"] = np.stack([row[chosen] for row in rows]).astype(np.float32)
        print(f"  greedy: {ref_tok.decode(greedy)!r}")

    # Dequantised tensors, bit for bit (transformers' state dict: gguf-py's dequantisation,
    # Q and K rows back in Hugging Face order).
    state = model.state_dict()
    for t in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
              "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
              "model.layers.7.mlp.down_proj.weight", "model.layers.29.input_layernorm.weight", "model.norm.weight"]:
        meta["sha256." + t] = hashlib.sha256(state[t].contiguous().numpy().astype("<f4").tobytes()).hexdigest()
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "golden.safetensors"), metadata=meta)
    print("wrote", os.path.join(OUT, "golden.safetensors"), os.path.getsize(os.path.join(OUT, "golden.safetensors")), "bytes")


if __name__ == "__main__":
    sys.exit(main())
