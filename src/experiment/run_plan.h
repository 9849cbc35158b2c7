// The run plan of an ablation (`pivotmt plan`, `ablate --dry-run`): before hours of work, how
// much memory the model and its keys and values take, how many sequences fit a device, how
// many prompt and output tokens the study has, and how long it would take — from ceilings
// measured on this machine's CPU or GPU (a short GEMM and a memory pass), or, for a GPU that
// is not here, from its stated roofline (datasheet peak F16 tensor throughput at a stated
// efficiency, and its memory bandwidth).
//
// Time model: prefill is compute-bound, 2 · params · T plus causal attention 2 · layers ·
// d_model · T² FLOPs per prompt of T tokens, at the measured GEMM rate (shared prompt
// prefixes, which the engine computes once, are counted in full: an upper bound); decode is
// one step per output token and batch, each step the larger of streaming every weight once
// (plus the batch's keys and values) at the measured bandwidth and 2 · params · batch FLOPs.
// Output tokens are estimated by the references' token counts (the target column through
// the model's tokenizer), capped by max_new_tokens. The NLLB baseline and COMET are stages
// of their own (StagePlan) counted in the total.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/model_config.h"

namespace pivotmt {

struct DeviceCeiling {
  std::string device;  // "cpu", "cuda:0", "h100", "h200"
  std::string name;    // "AMD EPYC ... (2 threads)", "NVIDIA H200"
  double gflops = 0;   // dense GEMM rate in the compute dtype (a GPU: F16 on the tensor cores)
  double gflops_f32 = 0;  // F32 GEMM rate (the CPU's is gflops; a GPU's without tensor cores)
  double gbps = 0;     // memory read bandwidth
  uint64_t memory = 0;  // bytes the run may use (host RAM available, or device memory)
  bool measured = false;  // false: stated roofline of a device that is not here
};

// This machine's CPU: an F32 GEMM through the fast kernels and a read pass over 512 MiB,
// about a second.
DeviceCeiling measure_cpu_ceiling();
// A GPU: measured when `device` is a visible cuda:N; "h100" / "h200" (or a cuda:N that is
// not here): the stated roofline. Throws on an unknown name.
DeviceCeiling gpu_ceiling(const std::string& device);

struct StudyWorkload {
  size_t rows = 0;                    // (row, k) pairs to generate
  std::vector<size_t> prompt_tokens;  // per pending (row, k)
  std::vector<size_t> output_tokens;  // per pending (row, k): the estimate described above
  size_t max_new_tokens = 0;
  size_t max_batch = 32;
};

// A stage beside the LLM's generation, planned from its architecture: the NLLB-200 baseline
// or COMET scoring. With F32 weights they run at the device's F32 GEMM rate; with F16
// weights on a GPU at its F16 rate (the tensor cores; a CPU computes F16 weights in F32).
// NLLB's decoding also streams the decoder's weights once a step for its batch.
struct StagePlan {
  std::string name;    // "NLLB-200 baseline", "COMET"
  std::string detail;  // the architecture and the workload, in words
  std::string storage;     // the weights as the device stores them: "F32", "F16", "INT8"
  double gflops_rate = 0;  // the GEMM rate the time was counted at
  std::string arithmetic;  // at which: "F32", "F16 tensor cores"
  uint64_t parameters = 0, weight_bytes = 0;
  double items = 0;    // sentences translated / segments scored
  double tokens = 0;   // tokens through the encoder(s) and decoder
  double flops = 0, seconds = 0;
  nlohmann::json to_json() const;
};

// NLLB-200 / M2M100 (its config.json): `sentences` of ~`tokens` source tokens and as many
// output tokens, `beams` hypotheses each, `batch` sentences decoded together, weights in
// `storage` (f32 | f16 | int8; a GPU stores int8 as F16: stored_weights). Per token: the encoder 2 · its weights; the
// decoder 2 · (its weights + the output layer's vocab × d) per hypothesis — the 256k-word
// output layer dominates.
StagePlan plan_nllb(const nlohmann::json& config, double sentences, double tokens, size_t beams, size_t batch,
                    const std::string& storage, const DeviceCeiling& device);
// COMET over `segments` (source, translation and reference encoded: three sequences of
// ~`tokens` each) with the named model's XLM-R encoder (wmt22-comet-da: XLM-R large;
// XCOMET-XL / -XXL: XLM-R XL / XXL) or `encoder_config` when given (its config.json); the
// layers' weights F32, or F16 with `f16_weights` (--comet-weights f16; the embeddings stay F32).
StagePlan plan_comet(const std::string& model_name, const nlohmann::json* encoder_config, double segments, double tokens,
                     const DeviceCeiling& device, bool f16_weights = false);

struct RunPlan {
  uint64_t parameters = 0, weight_bytes = 0;
  uint64_t kv_bytes_per_token = 0;
  size_t batch = 0;           // sequences that fit beside the weights (capped by max_batch)
  size_t max_batch = 0;
  bool fits = false;          // the weights and one longest sequence fit the device
  double prompt_tokens = 0, output_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  std::vector<StagePlan> stages;  // the baseline, COMET (added by the caller)
  double generation_seconds() const { return prefill_seconds + decode_seconds; }
  double seconds() const {
    double s = generation_seconds();
    for (const auto& st : stages) s += st.seconds;
    return s;
  }
  DeviceCeiling device;
  std::string weights;  // storage
  nlohmann::json to_json() const;
};

// `weights`: f32 | f16 | int8 | q8 | nf4 (a GPU stores F16).
// stored_weight_bytes: what the weights take when known from the file (a GGUF model's
// blocks kept in place, gguf_in_place_weight_bytes); 0 estimates from the storage.
RunPlan make_run_plan(const ModelConfig& model, uint64_t parameters, const std::string& weights,
                      const StudyWorkload& work, const DeviceCeiling& device, uint64_t stored_weight_bytes = 0);

// The plan in words: memory, batch, tokens, time on one device and the devices that would
// finish within `within_hours`.
std::string run_plan_markdown(const RunPlan& plan, double within_hours);

}  // namespace pivotmt
