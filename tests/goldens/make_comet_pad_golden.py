#!/usr/bin/env python3
"""Triples with a literal "<pad>" in their text, scored by unbabel-comet with the tiny COMET
model of tests/goldens/comet_tiny (the same encoder folder and head as make_comet_golden.py,
its saved weights loaded), for tests/test_comet.cpp: in RoBERTa / XLM-R a token whose id is
the padding id sits at position pad_id and the positions after it do not advance, and
COMET's average pooling leaves it out of the sum (but not of the length).
Development machine only (pip install unbabel-comet, with torch and transformers):

  python3 tests/goldens/make_comet_pad_golden.py tests/goldens
"""
import json
import os
import shutil
import sys
import tempfile

import comet.encoders.xlmr as comet_xlmr
import torch
from comet.models import RegressionMetric
from safetensors.torch import load_file


def xlmr_forward(self, input_ids, attention_mask, **kwargs):
    # As make_comet_golden.py: the encoder's outputs taken by name.
    out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True)
    return {"sentemb": out.last_hidden_state[:, 0, :], "wordemb": out.last_hidden_state,
            "all_layers": out.hidden_states, "attention_mask": attention_mask}


comet_xlmr.XLMREncoder.forward = xlmr_forward

ROWS = [
    {"src": "काही भजने शतकांपूर्वीची आहेत", "mt": "कुछ भजन <pad> सदियों पुराने हैं", "ref": "थोडीं भजनां शेंकड्यांनी पोरणीं आसात"},
    {"src": "<pad> hello", "mt": "<pad> नमस्ते <pad>", "ref": "<pad>"},
    {"src": "a<pad>b", "mt": "x <pad> y", "ref": "x y"},
    {"src": "no pad here", "mt": "कुछ भजन सदियों पुराने हैं", "ref": "थोडीं भजनां"},
]


def main():
    goldens = sys.argv[1]
    enc = tempfile.mkdtemp()
    shutil.copy(os.path.join(goldens, "unigram/config.json"), enc)
    shutil.copy(os.path.join(goldens, "xlmr/model.safetensors"), enc)
    shutil.copy(os.path.join(goldens, "unigram/tokenizer.json"), enc)
    model = RegressionMetric(pretrained_model=enc, load_pretrained_weights=True, layer="mix",
                             layer_transformation="sparsemax", layer_norm=False, pool="avg",
                             hidden_sizes=[24, 8], activations="Tanh", final_activation=None, dropout=0.1).eval()
    model.load_state_dict(load_file(os.path.join(goldens, "comet_tiny/model.safetensors")))
    pred = model.predict(ROWS, batch_size=1, gpus=0, progress_bar=False)
    ids = [model.encoder.tokenizer(r["mt"])["input_ids"] for r in ROWS]
    import comet
    with open(os.path.join(goldens, "comet_tiny/pad_golden.json"), "w", encoding="utf-8") as f:
        json.dump({"unbabel_comet": comet.__version__, "rows": ROWS, "mt_ids": ids,
                   "scores": [float(s) for s in pred.scores]}, f, ensure_ascii=False, indent=1)
    print(pred.scores, ids)


if __name__ == "__main__":
    main()
