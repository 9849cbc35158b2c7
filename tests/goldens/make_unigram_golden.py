#!/usr/bin/env python3
"""A real Unigram tokenizer (tokenizer.json) with sentencepiece's precompiled nmt_nfkc
character map, and Hugging Face tokenizers' ids for real multilingual text, for
tests/test_unigram.cpp (COMET's XLM-R tokenizer has this shape: Precompiled normalizer,
Metaspace, Unigram model, <s> $A </s>).

The vocabulary is trained with the sentencepiece trainer on the original study's train
pools (Hindi, Marathi, Konkani, MSA, Tunisian, English; ../shared/fixtures/original),
converted to tokenizer.json by transformers' XLM-RoBERTa converter.
Development machine only (pip install sentencepiece transformers tokenizers):

  python3 tests/goldens/make_unigram_golden.py ../shared tests/goldens/unigram
"""
import io
import json
import os
import sys

import sentencepiece as spm
from tokenizers import Tokenizer
from transformers import XLMRobertaTokenizer
from transformers.convert_slow_tokenizer import XLMRobertaConverter


def corpus(shared):
    lines = []
    for name in ("konkani_train_pool_reconstructed.jsonl", "arabic_train_pool_reconstructed.jsonl"):
        for line in open(os.path.join(shared, "fixtures/original", name), encoding="utf-8"):
            row = json.loads(line)
            lines += [v for v in row.values() if isinstance(v, str) and v.strip()]
    return lines


EDGE = [
    "", " ", "   leading and trailing   ", "two  spaces\tand\ttabs\nnewline",
    "ﬁnancial ＦＵＬＬＷＩＤＴＨ ①②③ ㍻ Å Å",          # NFKC: ligature, full width, circled, compatibility
    "emoji 😀🚀 and CJK 漢字かな and Hangul 한국어",        # characters the vocabulary lacks: <unk>, fused
    "ﻻ ﷺ ﺍﻟﻌﺮﺑﻴﺔ",                                     # Arabic presentation forms
    "क़ ड़ क्‍ष  नमस्ते\u200d", "e\u0301 e\u0301\u0302 a\u0308\u0323",  # nuktas, ZWJ, combining marks
    "12,345.67 — “quotes” ‘single’ … ¿qué?",
]


def main(shared, out):
    os.makedirs(out, exist_ok=True)
    text = corpus(shared)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model, vocab_size=2000,
                                   model_type="unigram", character_coverage=0.9995,
                                   normalization_rule_name="nmt_nfkc", input_sentence_size=0, seed_sentencepiece_size=200000)
    spm_path = os.path.join(out, "sentencepiece.bpe.model")
    with open(spm_path, "wb") as f:
        f.write(model.getvalue())
    slow = XLMRobertaTokenizer(vocab_file=spm_path)
    fast = XLMRobertaConverter(slow).converted()
    fast.save(os.path.join(out, "tokenizer.json"))
    os.remove(spm_path)  # only tokenizer.json is needed (it carries the model and the char map)
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    inputs = EDGE + text[::14]
    cases = [{"text": t, "ids": tok.encode(t).ids, "normalized": tok.normalizer.normalize_str(t)} for t in inputs]
    with open(os.path.join(out, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizers": __import__("tokenizers").__version__, "sentencepiece": spm.__version__, "cases": cases},
                  f, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
