#!/usr/bin/env python3
"""NF4 goldens from bitsandbytes' own quantiser (its CPU backend), for tests/test_nf4.cpp.

Run on a development machine with `pip install torch bitsandbytes safetensors` (never a
dependency of pivotmt):  python3 tests/goldens/make_nf4_golden.py tests/goldens/nf4.safetensors
"""
import json
import sys

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import save_file


def cases():
    g = torch.Generator().manual_seed(1234)
    yield "normal_128x96", torch.randn(128, 96, generator=g) * 0.02
    yield "remainder_1000", torch.randn(1000, generator=g)  # a short last block of 40
    yield "odd_999", torch.randn(999, generator=g) * 3  # odd count: the last byte half filled
    # Ties: absmax 1.0 so the scaled value is the value itself, every value on a midpoint.
    code = F.get_4bit_type("nf4", device="cpu")
    mids = (code[:-1] + code[1:]) / 2
    tie = torch.zeros(128)
    tie[0] = 1.0
    tie[1:16] = mids
    tie[16:31] = torch.nextafter(mids, torch.full_like(mids, 2.0))
    tie[31:46] = torch.nextafter(mids, torch.full_like(mids, -2.0))
    tie[64] = -1.0
    tie[65:80] = -mids
    yield "ties", tie
    z = torch.randn(64 * 5, generator=g)
    z[64:128] = 0  # an all-zero block
    yield "zero_block", z
    zr = torch.randn(64 * 2 + 10, generator=g)
    zr[128:] = 0  # an all-zero short last block
    yield "zero_remainder", zr
    # Many blocks (double quantisation over more than one nested block of 256), with a
    # spread of magnitudes so the absmax values differ.
    big = torch.randn(700 * 64 + 17, generator=g) * torch.linspace(0.001, 2.0, 700 * 64 + 17)
    yield "double_quant_many", big


def main(out):
    tensors, notes = {}, {}
    tensors["dynamic_map"] = F.create_dynamic_map(signed=True).float()
    for name, a in cases():
        # Quantised flat: codes and absmax do not depend on the shape (bitsandbytes flattens),
        # but its CPU dequantize_4bit kernel disagrees with the format's flat layout
        # (code[nibble] * absmax[i // 64]) on some 2-D shapes; on 1-D tensors it agrees.
        a = a.float().contiguous().reshape(-1)
        tensors[f"{name}.input"] = a.reshape(-1)
        for dq in (False, True):
            packed, qs = F.quantize_4bit(a, blocksize=64, quant_type="nf4", compress_statistics=dq)
            p = f"{name}.{'dq' if dq else 'plain'}"
            tensors[f"{p}.packed"] = packed.reshape(-1).clone()
            if dq:
                tensors[f"{p}.qabsmax"] = qs.absmax.clone()
                tensors[f"{p}.nested_absmax"] = qs.state2.absmax.clone()
                tensors[f"{p}.offset"] = qs.offset.reshape(1).float().clone()
            else:
                tensors[f"{p}.absmax"] = qs.absmax.clone()
            tensors[f"{p}.dequantized"] = F.dequantize_4bit(packed, qs).reshape(-1).float().clone()
    # The 8-bit blockwise quantiser of double quantisation, probed value by value: pairs
    # (z, 1.0) in blocks of 2 (absmax 1, so z is quantised as it is), z on and next to every
    # midpoint of the map and spread over [-1, 1].
    m = tensors["dynamic_map"]
    mids = (m[:-1] + m[1:]) / 2
    z = torch.cat([mids, torch.nextafter(mids, torch.full_like(mids, 2.0)), torch.nextafter(mids, torch.full_like(mids, -2.0)),
                   m, torch.rand(4000, generator=torch.Generator().manual_seed(7)) * 2 - 1])
    pairs = torch.stack([z, torch.ones_like(z)], 1).reshape(-1).contiguous()
    q, _ = torch.ops.bitsandbytes.quantize_blockwise.default(pairs, m.clone(), 2)
    tensors["dynamic_probe.input"] = z.contiguous()
    tensors["dynamic_probe.index"] = q[0::2].contiguous()
    meta = {"bitsandbytes": bnb.__version__, "torch": torch.__version__,
            "how": "bitsandbytes.functional.quantize_4bit(A, blocksize=64, quant_type='nf4', compress_statistics=dq) on the CPU"}
    save_file(tensors, out, metadata={"reference": json.dumps(meta)})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "nf4.safetensors")
