#!/usr/bin/env python3
"""A tiny random NLLB-200 (M2M100 architecture) and its goldens from Hugging Face
transformers, for tests/test_nllb.cpp.

The tokenizer is a real SentencePiece BPE model trained with the sentencepiece trainer on the
shared corpora (the reconstructed train pools: Hindi, Marathi, Konkani, MSA, English,
Tunisian), with six NLLB language codes laid out as the real model lays them out: the
fairseq offset of one, then the codes after the SentencePiece vocabulary in their listed
order, then <mask>. tokenizer.json is what transformers writes for it, with the added
tokens' ids moved to that layout (transformers 5 converts the SentencePiece model itself and
would put <mask> first), so the goldens are those of the real layout.

Written into OUT:
  config.json, generation_config.json, model.safetensors   the model (tied embeddings)
  sentencepiece.bpe.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json
  tokenization.json   NllbTokenizer's ids for the real test sentences of ../shared
                      (all columns, both studies), with their source language code
  golden.json         generation cases: inputs, settings, output token ids and texts
  golden.safetensors  encoder states and teacher-forced logits of a few inputs
and into OUT_bin/ the same model as the hub's facebook/nllb-200-* repositories ship it:
  pytorch_model.bin (torch.save of the state dict: the shared embedding, its tied aliases
  and lm_head all one storage), config.json, generation_config.json and the tokenizer files

Development machine only (pip install torch transformers sentencepiece safetensors):

  python3 tests/goldens/make_nllb_golden.py ../shared tests/goldens/nllb_tiny
"""
import csv
import glob
import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

CODES = ["eng_Latn", "hin_Deva", "mar_Deva", "gom_Deva", "arb_Arab", "aeb_Arab"]
# The study's columns and their NLLB codes.
COLUMNS = {"hin": "hin_Deva", "mar": "mar_Deva", "gom": "gom_Deva", "eng": "eng_Latn",
           "en": "eng_Latn", "msa": "arb_Arab", "tn": "aeb_Arab"}


def train_sentencepiece(shared, work):
    texts = []
    for path in sorted(glob.glob(os.path.join(shared, "fixtures/original/*_train_pool_reconstructed.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                texts += [v for v in json.loads(line).values() if v]
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(texts))
    # NLLB's model: BPE, nmt_nfkc normalisation (the default), <unk> <s> </s> as 0 1 2.
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(work, "sp"), vocab_size=1500,
                                   model_type="bpe", character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, minloglevel=2)
    return os.path.join(work, "sp.model")


def write_tokenizer(sp_model, out):
    shutil.copy(sp_model, os.path.join(out, "sentencepiece.bpe.model"))
    special = {"additional_special_tokens": CODES, "bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>",
               "mask_token": {"content": "<mask>", "lstrip": True, "normalized": True, "rstrip": False,
                              "single_word": False},
               "pad_token": "<pad>", "sep_token": "</s>", "unk_token": "<unk>"}
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    config = {"tokenizer_class": "NllbTokenizer", "model_max_length": 1024, "src_lang": None, "tgt_lang": None,
              "additional_special_tokens": None, "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
              "unk_token": "<unk>", "sep_token": "</s>", "cls_token": "<s>"}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    # transformers converts the SentencePiece model; then the real model's id layout.
    tok = NllbTokenizer.from_pretrained(out, additional_special_tokens=CODES)
    tmp = tempfile.mkdtemp()
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    n_sp = spm.SentencePieceProcessor(model_file=sp_model).get_piece_size()
    layout = {code: n_sp + 1 + i for i, code in enumerate(CODES)}
    layout["<mask>"] = n_sp + 1 + len(CODES)
    for added in tj["added_tokens"]:
        if added["content"] in layout:
            added["id"] = layout[added["content"]]
    tj["added_tokens"].sort(key=lambda a: a["id"])
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    tok = NllbTokenizer.from_pretrained(out)
    for code, i in layout.items():
        assert tok.convert_tokens_to_ids(code) == i, (code, tok.convert_tokens_to_ids(code), i)
    return tok, n_sp + 2 + len(CODES)


def real_sentences(shared):
    """(column's language code, text) of the real test rows of both studies."""
    csv.field_size_limit(1 << 30)
    out = []
    for path in ["fixtures/original/konkani_full/k_0/results_k0.csv", "fixtures/original/arabic_full/k_0/results_k0.csv"]:
        with open(os.path.join(shared, path), encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                for column, code in COLUMNS.items():
                    if row.get(column):
                        out.append((code, row[column]))
    return out


def make_model(vocab_size, out):
    config = M2M100Config(vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                          decoder_ffn_dim=128, activation_function="relu", max_position_embeddings=256,
                          scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                          decoder_start_token_id=2, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                          tie_word_embeddings=True)
    torch.manual_seed(7)
    model = M2M100ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Larger than the default init so that the outputs differ from token to token and
        # greedy / beam choices are not near-ties.
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
        # </s> (tied: its embedding is lm_head's row) pointed at the decoder's position 16,
        # so that translations end at different lengths near there and beam search finishes
        # hypotheses along the way, not only at max_length.
        position = model.model.decoder.embed_positions.weights[16 + 2]
        model.model.shared.weight[2] = 8.0 * position / position.norm()
    model.save_pretrained(out)
    model.generation_config.max_length = 200
    model.generation_config.save_pretrained(out)
    return model


def main():
    shared, out = sys.argv[1:3]
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp()
    tok, vocab_size = write_tokenizer(train_sentencepiece(shared, work), out)

    cases = []
    for code, text in real_sentences(shared):
        tok.src_lang = code
        cases.append({"lang": code, "text": text, "ids": tok(text).input_ids})
    # Edge cases: characters the model never saw (emoji, CJK), runs of spaces, empty text,
    # and a truncated long input (HF truncates [lang] tokens </s> to max_length).
    tok.src_lang = "eng_Latn"
    for text in ["hello 😀 world", "  two   spaces  ", "", "   ", "line\n", "漢字 and ünïcödé", "tab\tand\nnewline",
                 "fullwidth　space　", "ﬁ ligature ①"]:
        cases.append({"lang": "eng_Latn", "text": text, "ids": tok(text).input_ids})
    long_text = " ".join(t for _, t in real_sentences(shared)[:6])
    tok.src_lang = "hin_Deva"
    cases.append({"lang": "hin_Deva", "text": long_text, "max_length": 40,
                  "ids": tok(long_text, truncation=True, max_length=40).input_ids})
    with open(os.path.join(out, "tokenization.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)

    model = make_model(vocab_size, out)
    sentences = real_sentences(shared)
    picks = [sentences[0], sentences[1], sentences[2], sentences[3], sentences[-1]]
    tensors = {}
    # Encoder states and teacher-forced logits, one input at a time.
    for i, (code, text) in enumerate(picks[:3]):
        tok.src_lang = code
        enc = tok(text, return_tensors="pt")
        tgt = tok.convert_tokens_to_ids("gom_Deva")
        dec = torch.tensor([[2, tgt, 100, 200, 300, 400, 2]])
        with torch.no_grad():
            o = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, decoder_input_ids=dec)
        tensors[f"encoder.{i}"] = o.encoder_last_hidden_state[0].contiguous()
        tensors[f"logits.{i}"] = o.logits[0].contiguous()
        tensors[f"input_ids.{i}"] = enc.input_ids[0].to(torch.int32).contiguous()
        tensors[f"decoder_ids.{i}"] = dec[0].to(torch.int32).contiguous()
    save_file(tensors, os.path.join(out, "golden.safetensors"))

    settings = [
        {"name": "greedy"},
        {"name": "beam4", "num_beams": 4},
        {"name": "beam4_norepeat3", "num_beams": 4, "no_repeat_ngram_size": 3},
        {"name": "beam4_lp0.6_early", "num_beams": 4, "length_penalty": 0.6, "early_stopping": True},
        {"name": "beam3_lp2_never", "num_beams": 3, "length_penalty": 2.0, "early_stopping": "never"},
        {"name": "greedy_norepeat2", "no_repeat_ngram_size": 2},
        {"name": "beam4_short", "num_beams": 4, "max_length": 8},
    ]
    generation = []
    src_texts = [t for _, t in picks]
    src_lang = [c for c, _ in picks]
    for tgt_lang in ["gom_Deva", "aeb_Arab"]:
        for s in settings:
            kwargs = {k: v for k, v in s.items() if k != "name"}
            kwargs.setdefault("max_length", 40)
            # One batch per source language as a user would run it (padding included).
            outputs = []
            for code in sorted(set(src_lang)):
                idx = [i for i, c in enumerate(src_lang) if c == code]
                tok.src_lang = code
                enc = tok([src_texts[i] for i in idx], return_tensors="pt", padding=True)
                with torch.no_grad():
                    gen = model.generate(**enc, forced_bos_token_id=tok.convert_tokens_to_ids(tgt_lang), **kwargs)
                for j, i in enumerate(idx):
                    ids = [int(x) for x in gen[j].tolist()]
                    while ids and ids[-1] == 1:  # the batch's padding after a sequence's end
                        ids.pop()
                    outputs.append((i, ids, tok.decode(gen[j], skip_special_tokens=True)))
            outputs.sort()
            generation.append({"name": s["name"], "tgt_lang": tgt_lang, "settings": kwargs,
                               "sources": [{"lang": src_lang[i], "text": src_texts[i], "output_ids": ids,
                                            "output_text": text} for i, ids, text in outputs]})
    with open(os.path.join(out, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"generation": generation}, f, ensure_ascii=False, indent=1)

    # The hub's layout of NLLB-200: pytorch_model.bin only, tied tensors saved with one storage.
    bin_dir = out.rstrip("/") + "_bin"
    os.makedirs(bin_dir, exist_ok=True)
    state = model.state_dict()
    state["model.encoder.embed_tokens.weight"] = state["model.shared.weight"]
    state["model.decoder.embed_tokens.weight"] = state["model.shared.weight"]
    state["lm_head.weight"] = state["model.shared.weight"]
    torch.save(state, os.path.join(bin_dir, "pytorch_model.bin"))
    for name in ["config.json", "generation_config.json", "sentencepiece.bpe.model", "special_tokens_map.json",
                 "tokenizer_config.json"]:
        shutil.copy(os.path.join(out, name), bin_dir)


if __name__ == "__main__":
    main()
