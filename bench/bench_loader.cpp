// Loader benchmarks: safetensors header validation for a 7B-sized header, and the float
// conversions every checkpoint load goes through (TowerInstruct's F32 shards -> F16),
// against a plain memcpy of the same bytes as the ceiling.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "io/safetensors.h"

namespace {
using namespace pivotmt;

// The header of a Llama-2-7B-shaped checkpoint (291 tensors), built in memory.
std::string seven_b_file_prefix(uint64_t& file_size) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t offset = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    uint64_t n = 2;
    for (auto d : shape) n *= uint64_t(d);
    h[name] = {{"dtype", "F16"}, {"shape", shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  };
  add("model.embed_tokens.weight", {32007, 4096});
  for (int l = 0; l < 32; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) add(p + "self_attn." + proj + ".weight", {4096, 4096});
    add(p + "mlp.gate_proj.weight", {11008, 4096});
    add(p + "mlp.up_proj.weight", {11008, 4096});
    add(p + "mlp.down_proj.weight", {4096, 11008});
    add(p + "input_layernorm.weight", {4096});
    add(p + "post_attention_layernorm.weight", {4096});
  }
  add("model.norm.weight", {4096});
  add("lm_head.weight", {32007, 4096});
  const std::string text = h.dump();
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[size_t(i)] = char((text.size() >> (8 * i)) & 0xff);
  file_size = 8 + text.size() + offset;
  return prefix + text;
}

void BM_ParseHeader7B(benchmark::State& state) {
  uint64_t file_size = 0;
  const std::string prefix = seven_b_file_prefix(file_size);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(prefix.data()), prefix.size());
  for (auto _ : state) benchmark::DoNotOptimize(parse_safetensors(bytes, file_size, "bench"));
  state.SetBytesProcessed(int64_t(state.iterations() * prefix.size()));
  state.counters["tensors"] = 291;
}
BENCHMARK(BM_ParseHeader7B)->Unit(benchmark::kMicrosecond);

template <DType From, DType To>
void BM_Convert(benchmark::State& state) {
  const size_t n = size_t(state.range(0));
  std::vector<std::byte> src(n * dtype_size(From)), dst(n * dtype_size(To));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(n);
  for (auto& v : values) v = normal(rng);
  convert_floats(DType::F32, values.data(), From, src.data(), n);
  for (auto _ : state) {
    convert_floats(From, src.data(), To, dst.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations() * (src.size() + dst.size())));
}
BENCHMARK(BM_Convert<DType::F32, DType::F16>)->Arg(1 << 24)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Convert<DType::BF16, DType::F32>)->Arg(1 << 24)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Convert<DType::F16, DType::F32>)->Arg(1 << 24)->Unit(benchmark::kMillisecond);

void BM_MemcpyCeiling(benchmark::State& state) {
  const size_t bytes = size_t(state.range(0));
  std::vector<char> a(bytes, 1), b(bytes);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations() * 2 * bytes));
}
BENCHMARK(BM_MemcpyCeiling)->Arg(6 << 24)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
