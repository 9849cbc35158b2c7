#!/usr/bin/env python3
"""NLLB's slow tokenizer layout (no tokenizer.json) as transformers saves it after a user
adds a language code: tokenizer_config.json's added_tokens_decoder and added_tokens.json
give every code's id, and special_tokens_map.json lists the new code last. For
tests/test_nllb.cpp (the ids must come from those files, not from the list's order).
The SentencePiece model is nllb_tiny's (not copied here). Development machine only
(pip install "transformers<5" sentencepiece):

  python3 tests/goldens/make_nllb_added_golden.py tests/goldens
"""
import json
import os
import shutil
import sys
import tempfile

import transformers
from transformers import NllbTokenizer


def main(goldens):
    out = os.path.join(goldens, "nllb_tiny_added")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as saved:
        for f in ("sentencepiece.bpe.model", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(goldens, "nllb_tiny", f), src)
        tok = NllbTokenizer.from_pretrained(src)
        tok.add_tokens(["xyz_Test"], special_tokens=True)
        tok.save_pretrained(saved)
        for f in ("special_tokens_map.json", "tokenizer_config.json", "added_tokens.json"):
            shutil.copy(os.path.join(saved, f), out)
        again = NllbTokenizer.from_pretrained(saved)
        codes = ["eng_Latn", "hin_Deva", "mar_Deva", "arb_Arab", "aeb_Arab", "xyz_Test", "<mask>"]
        ids = {c: again.convert_tokens_to_ids(c) for c in codes}
        again.src_lang = "xyz_Test"
        source = again("काही भजने")["input_ids"]
    json.dump({"transformers": transformers.__version__, "ids": ids, "source": {"text": "काही भजने", "lang": "xyz_Test",
               "ids": source}}, open(os.path.join(out, "golden.json"), "w"), ensure_ascii=False, indent=1)
    print(ids, source)


if __name__ == "__main__":
    main(sys.argv[1])
