#!/usr/bin/env python3
"""Special tokens named only by tokenizer_config.json / special_tokens_map.json (XLM-R's
layout: tokenizer.json's added_tokens list <s> and </s>; <pad>, <unk> and <mask> — the last
with lstrip — come from the configuration), and transformers' ids for texts that contain
them, for tests/test_unigram.cpp. The tokenizer.json is tests/goldens/unigram's.
Development machine only (pip install transformers tokenizers sentencepiece):

  python3 tests/goldens/make_special_tokens_golden.py tests/goldens
"""
import json
import os
import shutil
import sys
import tempfile

from transformers import AutoTokenizer

CONFIG = {"tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
          "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>",
          "model_max_length": 512}
SPECIAL_MAP = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "cls_token": "<s>",
               "pad_token": "<pad>",
               "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False,
                              "single_word": False}}
TEXTS = ["x <mask> end", "x<mask>end", "a <pad> b", "<unk> c", "<s> hi </s>", "एक <mask> दो <pad>", "<mask><mask> x",
         "no special tokens here", "tail <unk>", "  <mask>  spaced  "]


def main(goldens):
    out = os.path.join(goldens, "special_tokens")
    os.makedirs(out, exist_ok=True)
    json.dump(CONFIG, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=1)
    json.dump(SPECIAL_MAP, open(os.path.join(out, "special_tokens_map.json"), "w"), indent=1)
    with tempfile.TemporaryDirectory() as d:
        for f in ("tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(out, f), d)
        shutil.copy(os.path.join(goldens, "unigram", "tokenizer.json"), d)
        tok = AutoTokenizer.from_pretrained(d)
        cases = [{"text": t, "ids": tok(t)["input_ids"]} for t in TEXTS]
    import transformers
    json.dump({"transformers": transformers.__version__, "cases": cases}, open(os.path.join(out, "golden.json"), "w"),
              ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
