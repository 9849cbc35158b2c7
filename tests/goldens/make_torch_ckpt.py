#!/usr/bin/env python3
"""PyTorch checkpoints written by torch.save, for tests/test_torch_checkpoint.cpp: what the
restricted reader must read (a Lightning-style dict with a state_dict of several dtypes,
views with offsets and strides, two tensors sharing a storage, nested metadata) and must
refuse (pickles naming other globals). The expected values are stored beside as
safetensors (contiguous copies). Development machine only (pip install torch safetensors).

  python3 tests/goldens/make_torch_ckpt.py tests/goldens/torch_ckpt
"""
import collections
import io
import os
import pickle
import sys
import zipfile

import torch
from safetensors.torch import save_file


def main(out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 8, generator=g)
    sd = collections.OrderedDict()
    sd["encoder.weight"] = base                       # F32
    sd["encoder.view"] = base[2:5, 1:7]               # offset + strides into the same storage
    sd["encoder.t"] = base.t()                        # transposed: strides (1, 8)
    sd["half"] = torch.randn(3, 5, generator=g).half()
    sd["bf16"] = torch.randn(4, generator=g).bfloat16()
    sd["long"] = torch.arange(7, dtype=torch.int64) * 1000003
    sd["mask"] = torch.tensor([True, False, True])
    sd["scalar"] = torch.tensor(2.5)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 3, generator=g))
    ckpt = {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0",
            "state_dict": sd, "hyper_parameters": {"layer": "mix", "dropout": 0.1, "sizes": [3072, 1024],
                                                   "flags": (True, None)}}
    torch.save(ckpt, os.path.join(out, "lightning.ckpt"))
    torch.save(sd, os.path.join(out, "state_dict.bin"))
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, os.path.join(out, "expected.safetensors"))

    # A checkpoint whose pickle calls os.system: the zip of a good one with data.pkl replaced.
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with zipfile.ZipFile(os.path.join(out, "state_dict.bin")) as z, \
            zipfile.ZipFile(os.path.join(out, "evil.ckpt"), "w", zipfile.ZIP_STORED) as w:
        for info in z.infolist():
            data = z.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps({"state_dict": Evil()}, protocol=2)
            w.writestr(info, data)


if __name__ == "__main__":
    main(sys.argv[1])
