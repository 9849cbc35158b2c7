#!/usr/bin/env python3
"""COMET's scoring head (unbabel-comet 2.x: LayerwiseAttention with sparsemax, average
pooling, the six-part features of RegressionMetric.estimate, FeedForward with Tanh) on
random hidden states, for tests/test_comet_head.cpp. Small sizes (hidden 16, 4 layers + the
embeddings, estimator 96 -> 24 -> 8 -> 1); the tensor names are those of a COMET checkpoint.
Written: tests/goldens/comet_head.safetensors. Development machine only
(pip install unbabel-comet, with torch):

  python3 tests/goldens/make_comet_head_golden.py tests/goldens/comet_head.safetensors
"""
import sys

import torch
from comet.models.pooling_utils import average_pooling
from comet.modules import FeedForward, LayerwiseAttention
from entmax import sparsemax
from safetensors.torch import save_file


def main():
    out = sys.argv[1]
    torch.manual_seed(3)
    H, layers = 16, 5
    mix = LayerwiseAttention(num_layers=layers, layer_norm=False, layer_transformation="sparsemax").eval()
    ff = FeedForward(in_dim=6 * H, out_dim=1, hidden_sizes=[24, 8], activations="Tanh", final_activation=None).eval()
    t = {}
    with torch.no_grad():
        for i, (p, v) in enumerate(zip(mix.scalar_parameters, [0.31, -0.2, 0.52, 0.52, 0.05])):
            p.fill_(v)
        mix.gamma.fill_(1.7)
        for name, p in ff.named_parameters():
            p.normal_(0, 0.3)
        for i, p in enumerate(mix.scalar_parameters):
            t[f"layerwise_attention.scalar_parameters.{i}"] = p.detach().clone()
        t["layerwise_attention.gamma"] = mix.gamma.detach().clone()
        for name, p in ff.named_parameters():
            t["estimator." + name] = p.detach().clone()
        # sparsemax alone on vectors with ties, one dominant entry and negative values
        for i, z in enumerate([[0.31, -0.2, 0.52, 0.52, 0.05], [3.0, 0.1, 0.2], [0.0] * 25, [-1.0, -1.5, -0.9, 2.0, 1.95]]):
            z = torch.tensor(z)
            t[f"sparsemax{i}.z"] = z
            t[f"sparsemax{i}.p"] = sparsemax(z, dim=0)
        # three (src, mt, ref) triples of different lengths, one sequence each (no padding)
        emb = {}
        for n in range(3):
            for part, T in (("src", 5 + n), ("mt", 7 - n), ("ref", 3 + 2 * n)):
                states = [torch.randn(1, T, H) for _ in range(layers)]
                ids = torch.full((1, T), 7)
                mask = torch.ones(1, T, dtype=torch.long)
                mixed = mix(states, mask)
                emb[(n, part)] = average_pooling(ids, mixed, mask, padding_index=1, separator_index=2)
                t[f"t{n}.{part}.hidden_states"] = torch.cat(states, 0).contiguous()  # [layers, T, H]
                t[f"t{n}.{part}.embedding"] = emb[(n, part)][0].contiguous()
        src = torch.cat([emb[(n, "src")] for n in range(3)])
        mt = torch.cat([emb[(n, "mt")] for n in range(3)])
        ref = torch.cat([emb[(n, "ref")] for n in range(3)])
        features = torch.cat((mt, ref, mt * ref, torch.abs(mt - ref), mt * src, torch.abs(mt - src)), dim=1)
        t["scores"] = ff(features).view(-1).contiguous()
    save_file({k: v.contiguous().float() for k, v in t.items()}, out)
    print(t["scores"])


if __name__ == "__main__":
    main()
