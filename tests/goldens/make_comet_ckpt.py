#!/usr/bin/env python3
"""The tiny COMET of tests/goldens/comet_tiny laid out as the hub repo Unbabel/wmt22-comet-da
is: checkpoints/model.ckpt (a PyTorch Lightning checkpoint: the state dict under
"state_dict", the hyper-parameters and Lightning's bookkeeping beside it, written by
torch.save) and hparams.yaml (naming the encoder as pretrained_model). For
tests/cli/ablate_comet.sh, which gives this folder to --comet-model so that the checkpoint
is converted, never unpickled. Development machine only (pip install torch safetensors):

  python3 tests/goldens/make_comet_ckpt.py tests/goldens/comet_tiny tests/goldens/comet_tiny_hub
"""
import collections
import os
import sys

import torch
from safetensors.torch import load_file

HPARAMS = """activations: Tanh
batch_size: 16
class_identifier: regression_metric
dropout: 0.1
encoder_learning_rate: 1.0e-06
encoder_model: XLM-RoBERTa
final_activation: null
hidden_sizes:
- 24
- 8
keep_embeddings_frozen: true
layer: mix
layer_norm: false
layer_transformation: sparsemax
layerwise_decay: 0.95
learning_rate: 1.5e-05
loss: mse
nr_frozen_epochs: 0.3
optimizer: AdamW
pool: avg
pretrained_model: xlm-roberta-large
"""


def main(src, out):
    state = collections.OrderedDict(sorted(load_file(os.path.join(src, "model.safetensors")).items()))
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    ckpt = {"epoch": 1, "global_step": 2000, "pytorch-lightning_version": "1.6.4", "state_dict": state,
            "hyper_parameters": {"activations": "Tanh", "hidden_sizes": [24, 8], "layer": "mix",
                                 "layer_transformation": "sparsemax", "pool": "avg", "dropout": 0.1,
                                 "final_activation": None, "pretrained_model": "xlm-roberta-large"},
            "loops": None, "callbacks": {}, "optimizer_states": [], "lr_schedulers": []}
    torch.save(ckpt, os.path.join(out, "checkpoints", "model.ckpt"))
    with open(os.path.join(out, "hparams.yaml"), "w") as f:
        f.write(HPARAMS)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
