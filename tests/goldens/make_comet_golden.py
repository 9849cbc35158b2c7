#!/usr/bin/env python3
"""A tiny random COMET regression metric, scored by the real unbabel-comet package, for
tests/test_comet.cpp. The encoder is the tiny XLM-R of tests/goldens/xlmr with the Unigram
tokenizer of tests/goldens/unigram (COMET's own XLMREncoder loads them as its
"pretrained_model"); the head is wmt22-comet-da's (layer mix with sparsemax, no layer norm,
average pooling, Tanh estimator) at small sizes with random weights.
Written into OUT: model.safetensors (the state dict, COMET's tensor names) and
golden.json (the triples, segment scores from model.predict with batch size 1, system score),
and src.txt, mt.txt, ref.txt (the triples as lines).
Development machine only (pip install unbabel-comet, with torch and transformers):

  python3 tests/goldens/make_comet_golden.py tests/goldens ../shared tests/goldens/comet_tiny
"""
import json
import os
import shutil
import sys
import tempfile

import comet.encoders.xlmr as comet_xlmr
import torch
from comet.models import RegressionMetric
from safetensors.torch import save_file


def xlmr_forward(self, input_ids, attention_mask, **kwargs):
    # unbabel-comet 2.2.7's XLMREncoder.forward unpacks three values from the tuple output,
    # which transformers 5 returns without the absent pooler (two values); the same outputs
    # taken by name.
    out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True)
    return {"sentemb": out.last_hidden_state[:, 0, :], "wordemb": out.last_hidden_state,
            "all_layers": out.hidden_states, "attention_mask": attention_mask}


comet_xlmr.XLMREncoder.forward = xlmr_forward


def main():
    goldens, shared, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    enc = tempfile.mkdtemp()
    shutil.copy(os.path.join(goldens, "unigram/config.json"), enc)
    shutil.copy(os.path.join(goldens, "xlmr/model.safetensors"), enc)
    shutil.copy(os.path.join(goldens, "unigram/tokenizer.json"), enc)
    torch.manual_seed(11)
    model = RegressionMetric(pretrained_model=enc, load_pretrained_weights=True, layer="mix",
                             layer_transformation="sparsemax", layer_norm=False, pool="avg",
                             hidden_sizes=[24, 8], activations="Tanh", final_activation=None,
                             dropout=0.1).eval()
    with torch.no_grad():
        for p, v in zip(model.layerwise_attention.scalar_parameters, [0.4, -0.3, 0.35]):
            p.fill_(v)
        model.layerwise_attention.gamma.fill_(0.8)
        for p in model.estimator.parameters():
            p.normal_(0, 0.3)
    rows = []
    with open(os.path.join(shared, "fixtures/original/konkani_train_pool_reconstructed.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 4:
                break
            r = json.loads(line)
            rows.append({"src": r["mar"], "mt": r["hin"], "ref": r["gom"]})
    long = " ".join([rows[0]["ref"]] * 12)  # far past the 126 tokens 130 positions allow
    rows.append({"src": "Hello.", "mt": long, "ref": "Bonjour."})
    rows.append({"src": "", "mt": "x", "ref": "naïve café"})
    pred = model.predict(rows, batch_size=1, gpus=0, progress_bar=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "scores": [float(s) for s in pred.scores], "system_score": float(pred.system_score)},
                  f, ensure_ascii=False, indent=1)
    for part in ("src", "mt", "ref"):  # the same triples as text files, for the CLI test
        with open(os.path.join(out, f"{part}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(r[part] + "\n" for r in rows))
    print(pred.scores, pred.system_score)
    print(sorted(state)[:5], len(state))


if __name__ == "__main__":
    main()
