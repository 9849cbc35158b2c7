#!/usr/bin/env python3
"""pivotmt's COMET against unbabel-comet (PyTorch, CPU) on the same model and triples.

The model: wmt22-comet-da's architecture at full size (XLM-R large: 24 layers, hidden 1024,
16 heads, FFN 4096, 514 positions; the estimator 6144 -> 3072 -> 1024 -> 1) with random
weights, since the real checkpoint cannot be downloaded here. The layer mix keeps
unbabel-comet's initial scalar parameters (all equal: every layer weighs 1/25), so both
sides run all 24 layers (pivotmt skips layers that sparsemax weighs 0; this model has
none). The vocabulary is the Unigram tokenizer of tests/goldens/unigram (trained on the
original's corpora) instead of xlm-roberta-large's 250k pieces: the sentences' token counts
are what matter for speed, and the vocabulary size only changes the embedding table.
Two workloads (--triples):
  ablation  the original study's Konkani and Tunisian ablation rows in order
            (../shared/fixtures/original/{konkani_full,arabic_full}/k_*/results_k*.csv:
            source, the model's response, reference), the first N: an ablation's sources
            and references recur in every k, and pivotmt encodes each distinct text once;
  distinct  every text different: the Konkani then Tunisian example pools
            (../shared/fixtures/original/*_train_pool_reconstructed.jsonl: source, the pivot
            sentence standing in for a translation, reference), the first N; only the
            encoder's speed counts.

Python side: RegressionMetric.predict(batch_size=16, gpus=0) as comet-score runs on a CPU
(sorted by length, F32), torch threads = the cores; timed after loading. pivotmt side:
bench/bench_comet (build/bench/bench_comet) on the same weights, timed after loading.
Development machine (pip install unbabel-comet torch transformers safetensors):

    python3 bench/side_by_side_comet.py --work /tmp/comet-side-by-side [--segments 1000]

--device cuda: both on the GPU (predict(gpus=1); bench_comet ... cuda). Where unbabel-comet
is not installed (the GPU machine: torch and transformers only), the metric's weights are
written under its key names from a transformers XLMRobertaModel and the peer is COMET's
RegressionMetric forward written here in torch — XLM-R with every layer's states, the
sparsemax layer mix (uniform for equal parameters) times gamma, average pooling over the
mask, the features (mt, ref, mt·ref, |mt − ref|, mt·src, |mt − src|) and the Tanh
estimator, batches of 16 sorted by length —: the same computation without Lightning's
overhead, so if anything faster than unbabel-comet.

--weights f16 (or f32,f16: both, the model made once): pivotmt's encoder with F16 weights (`--comet-weights f16`; on a GPU the
tensor cores), and the peer under torch.autocast(float16) on a GPU (the same numerics:
F16 inputs, F32 sums); unbabel-comet's predict has no precision option, so with it the peer
stays F32 (the speed-up is then against what users run). The largest segment difference is
against the peer's scores either way.
"""
import argparse
import csv
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("PIVOTMT_SHARED_DIR") or os.path.join(ROOT, "..", "shared")  # gpu-check.sh: the bundle's
csv.field_size_limit(1 << 30)


def distinct_triples(n):
    rows, seen = [], set()
    for name, src, mt, ref in (("konkani", "mar", "hin", "gom"), ("arabic", "en", "msa", "tn")):
        with open(os.path.join(SHARED, f"fixtures/original/{name}_train_pool_reconstructed.jsonl"), encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                t = {"src": r.get(src) or "", "mt": r.get(mt) or "", "ref": r.get(ref) or ""}
                texts = (t["src"], t["mt"], t["ref"])
                if not all(texts) or any(x in seen for x in texts):
                    continue
                seen.update(texts)
                rows.append(t)
    if len(rows) < n:
        sys.exit(f"only {len(rows)} distinct rows in the pools")
    return rows[:n]


def ablation_triples(n):
    rows = []
    for folder, src, ref in (("konkani_full", "mar", "gom"), ("arabic_full", "en", "tn")):
        for k in range(11):
            for path in sorted(glob.glob(os.path.join(SHARED, "fixtures/original", folder, f"k_{k}", "results_k*.csv"))):
                with open(path, encoding="utf-8", newline="") as f:
                    for r in csv.DictReader(f):
                        rows.append({"src": r[src], "mt": r["response"].strip(), "ref": r[ref]})
    if len(rows) < n:
        sys.exit(f"only {len(rows)} rows in the fixtures")
    return rows[:n]


XLMR_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                  eos_token_id=2)


class TorchComet:
    """wmt22-comet-da's RegressionMetric forward in torch (the peer where unbabel-comet is absent)."""

    def __init__(self, enc_dir, encoder, estimator, layers, device):
        import torch
        from transformers import PreTrainedTokenizerFast
        self.torch = torch
        self.tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(enc_dir, "tokenizer.json"), bos_token="<s>",
                                           eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
        self.encoder = encoder.to(device).eval()
        self.estimator = [(w.to(device), b.to(device)) for w, b in estimator]
        self.weights = torch.full((layers,), 1.0 / layers, device=device)  # sparsemax of equal parameters
        self.gamma = 1.0
        self.device = device

    def embed(self, texts):
        torch = self.torch
        t = self.tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt").to(self.device)
        out = self.encoder(input_ids=t["input_ids"], attention_mask=t["attention_mask"], output_hidden_states=True)
        layers = torch.stack(out.hidden_states)  # [L + 1, B, T, H]
        mixed = self.gamma * (self.weights[:, None, None, None] * layers).sum(0)
        mask = t["attention_mask"].unsqueeze(-1).to(mixed.dtype)
        return (mixed * mask).sum(1) / mask.sum(1)

    def predict(self, rows, batch_size):
        torch = self.torch
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["src"]))
        scores = [0.0] * len(rows)
        with torch.no_grad():
            for b0 in range(0, len(order), batch_size):
                idx = order[b0:b0 + batch_size]
                src, mt, ref = (self.embed([rows[i][k] for i in idx]) for k in ("src", "mt", "ref"))
                x = torch.cat((mt, ref, mt * ref, (mt - ref).abs(), mt * src, (mt - src).abs()), dim=1)
                for n, (w, b) in enumerate(self.estimator):
                    x = x @ w.t() + b
                    if n + 1 < len(self.estimator):
                        x = torch.tanh(x)
                for i, v in zip(idx, x[:, 0].tolist()):
                    scores[i] = v
        if self.device == "cuda":
            torch.cuda.synchronize()
        return scores


def work_folders(work):
    """WORK/encoder (the Unigram tokenizer.json) and WORK/metric, and XLM-R large's config with its vocabulary."""
    from transformers import XLMRobertaConfig
    enc, met = os.path.join(work, "encoder"), os.path.join(work, "metric")
    os.makedirs(enc, exist_ok=True)
    os.makedirs(met, exist_ok=True)
    tok = os.path.join(ROOT, "tests/goldens/unigram/tokenizer.json")
    shutil.copy(tok, enc)
    vocab = len(json.load(open(tok, encoding="utf-8"))["model"]["vocab"])
    return enc, met, XLMRobertaConfig(vocab_size=vocab, **XLMR_LARGE)


def make_model_without_comet(work, device):
    import torch
    from safetensors.torch import save_file
    from transformers import XLMRobertaModel
    enc, met, cfg = work_folders(work)
    torch.manual_seed(5)
    encoder = XLMRobertaModel(cfg, add_pooling_layer=False)
    cfg.save_pretrained(enc)  # config.json only: the metric's file holds the encoder's weights
    torch.manual_seed(7)
    sizes = [6 * 1024, 3072, 1024, 1]
    estimator = []
    for a, b in zip(sizes, sizes[1:]):
        layer = torch.nn.Linear(a, b)
        estimator.append((layer.weight.detach(), layer.bias.detach()))
    layers = cfg.num_hidden_layers + 1
    state = {"encoder.model." + k: v.contiguous() for k, v in encoder.state_dict().items() if "position_ids" not in k}
    for i in range(layers):
        state[f"layerwise_attention.scalar_parameters.{i}"] = torch.zeros(1)
    state["layerwise_attention.gamma"] = torch.ones(1)
    for n, (w, b) in enumerate(estimator):
        state[f"estimator.ff.{3 * n}.weight"] = w.contiguous()
        state[f"estimator.ff.{3 * n}.bias"] = b.contiguous()
    save_file(state, os.path.join(met, "model.safetensors"))
    return TorchComet(enc, encoder, estimator, layers, device), enc, met


def make_model(work):
    import comet.encoders.xlmr as comet_xlmr
    import torch
    from comet.models import RegressionMetric
    from safetensors.torch import save_file
    from transformers import XLMRobertaModel

    def xlmr_forward(self, input_ids, attention_mask, **kwargs):
        # As tests/goldens/make_comet_golden.py: unbabel-comet 2.2.7 expects transformers 4's
        # three-value tuple; the same outputs by name.
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True)
        return {"sentemb": out.last_hidden_state[:, 0, :], "wordemb": out.last_hidden_state,
                "all_layers": out.hidden_states, "attention_mask": attention_mask}

    comet_xlmr.XLMREncoder.forward = xlmr_forward
    enc, met, cfg = work_folders(work)
    if not os.path.exists(os.path.join(enc, "model.safetensors")):
        torch.manual_seed(5)
        XLMRobertaModel(cfg, add_pooling_layer=False).save_pretrained(enc)
    torch.manual_seed(7)
    model = RegressionMetric(pretrained_model=enc, load_pretrained_weights=True, layer="mix",
                             layer_transformation="sparsemax", layer_norm=False, pool="avg",
                             hidden_sizes=[3072, 1024], activations="Tanh", final_activation=None).eval()
    if not os.path.exists(os.path.join(met, "model.safetensors")):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(met, "model.safetensors"))
    return model, enc, met


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--segments", type=int, default=1000)
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/bench/bench_comet"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--triples", choices=("ablation", "distinct"), default="distinct")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--weights", default="f32",
                    help="pivotmt's encoder weights: f32, f16 or f32,f16 (both, one model made); with f16 the torch "
                         "peer runs under F16 autocast on a GPU")
    ap.add_argument("--peer", choices=("auto", "comet", "torch"), default="auto",
                    help="unbabel-comet, or COMET's forward written in torch (auto: comet when installed)")
    args = ap.parse_args()
    import torch
    os.makedirs(args.work, exist_ok=True)
    rows = (distinct_triples if args.triples == "distinct" else ablation_triples)(args.segments)
    data = os.path.join(args.work, f"triples_{args.triples}_{args.segments}.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    peer = args.peer
    if peer == "auto":
        try:
            import comet  # noqa: F401
            peer = "comet"
        except ImportError:
            peer = "torch"
    if peer == "comet":
        model, enc, met = make_model(args.work)
    else:
        model, enc, met = make_model_without_comet(args.work, args.device)
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    where = "the GPU" if args.device == "cuda" else f"{threads} threads"
    print(f"workload: {args.triples}")
    peer_runs = {}  # autocast or not → (seconds, scores, system, name)
    for weights in args.weights.split(","):
        # pivotmt first (it needs the memory PyTorch would otherwise hold during its run).
        ours_json = os.path.join(args.work, f"pivotmt_scores_{weights}.json")
        launch = shlex.split(os.environ.get("PIVOTMT_BENCH_LAUNCH", ""))  # gpu-check.sh's loader of a bundle's libraries
        r = subprocess.run(launch + [args.bench, met, enc, data, ours_json, args.device, weights],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(r.stderr[-3000:])
        print(r.stdout.strip())
        ours = json.load(open(ours_json))
        autocast = weights == "f16" and args.device == "cuda" and peer == "torch"
        if autocast not in peer_runs:
            gpus = 1 if args.device == "cuda" else 0
            # One batch first, untimed: kernels loaded, cuBLAS handles made (pivotmt's load is
            # not timed either).
            if peer == "comet":
                model.predict(rows[:args.batch_size], batch_size=args.batch_size, gpus=gpus, progress_bar=False)
            else:
                with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                    model.predict(rows[:args.batch_size], args.batch_size)
            t0 = time.time()
            if peer == "comet":
                pred = model.predict(rows, batch_size=args.batch_size, gpus=gpus, progress_bar=False)
                their_scores, their_system, name = pred.scores, pred.system_score, "unbabel-comet"
            else:
                with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                    their_scores = model.predict(rows, args.batch_size)
                their_system = sum(their_scores) / len(their_scores)
                name = "COMET's forward in torch (unbabel-comet absent)" + (", F16 autocast" if autocast else "")
            peer_runs[autocast] = (time.time() - t0, their_scores, their_system, name)
            print(f"{name}, torch {torch.__version__}: {args.segments} segments, batch {args.batch_size}, {where}: "
                  f"{peer_runs[autocast][0]:.1f} s ({args.segments / peer_runs[autocast][0]:.2f} segments/s), "
                  f"system {their_system:.6f}")
        theirs_s, their_scores, their_system, name = peer_runs[autocast]
        diffs = [abs(a - b) for a, b in zip(their_scores, ours["scores"])]
        print(f"pivotmt ({weights} weights): {ours['seconds']:.1f} s ({args.segments / ours['seconds']:.2f} segments/s), "
              f"system {ours['system_score']:.6f}")
        print(f"speed-up ({weights} weights, against {name}) {theirs_s / ours['seconds']:.2f}x; largest segment "
              f"difference {max(diffs):.2e}, system difference {abs(their_system - ours['system_score']):.2e}")

if __name__ == "__main__":
    main()
