#include <fmt/format.h>

#include "commands.h"
#include "core/error.h"
#include "io/torch_checkpoint.h"
#include "models/make_model.h"

namespace pivotmt::cli {

void register_dev(CLI::App& app) {
  auto* dev = app.add_subcommand("dev", "Developer tools");
  dev->require_subcommand(1);
  auto* make = dev->add_subcommand("make-model", "Write a Hugging Face checkpoint with random weights");
  static MakeModelOptions o;
  static std::string dtype = "f16";
  static int64_t vocab = 0, layers = 0;
  make->add_option("--arch", o.arch, "llama | mistral | llama3")->check(CLI::IsMember({"llama", "mistral", "llama3"}));
  make->add_option("--preset", o.preset, "tiny | small (~110M) | 7b-shape")
      ->check(CLI::IsMember({"tiny", "small", "7b-shape"}));
  make->add_option("--out", o.out_dir, "Output directory")->required();
  make->add_option("--dtype", dtype, "f32 | bf16 | f16")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  make->add_option("--shards", o.shards, "Number of safetensors shards")->check(CLI::Range(1, 10000));
  make->add_option("--seed", o.seed, "Random seed");
  make->add_option("--vocab", vocab, "Vocabulary size (default: the architecture's real one)");
  make->add_option("--layers", layers, "Number of layers (default: the preset's)")->check(CLI::Range(1, 1000));
  make->add_option("--tokenizer", o.tokenizer_dir, "Copy tokenizer files from this directory");
  make->add_flag("--byte-tokenizer", o.byte_tokenizer, "Write a self-contained byte-level tokenizer (262 tokens, TowerInstruct chat template) and size the vocabulary to it");
  make->callback([] {
    o.dtype = dtype == "f32" ? DType::F32 : dtype == "bf16" ? DType::BF16 : DType::F16;
    if (vocab > 0) o.vocab_size = vocab;
    if (layers > 0) o.layers = layers;
    const uint64_t params = make_model(o);
    fmt::print("wrote {} ({} {}, {} parameters, {})\n", o.out_dir, o.arch, o.preset, params, dtype);
  });

  // A PyTorch checkpoint (pytorch_model.bin, Lightning's model.ckpt) as safetensors, read
  // without executing its pickle.
  static std::string torch_in, safetensors_out;
  auto* conv = app.add_subcommand("convert", "A torch.save checkpoint (.bin, .ckpt) as safetensors, its pickle never executed");
  conv->add_option("input", torch_in, "pytorch_model.bin or model.ckpt")->required()->check(CLI::ExistingFile);
  conv->add_option("output", safetensors_out, "The safetensors file to write")->required();
  conv->callback([] {
    const TorchCheckpoint ckpt(torch_in);
    ckpt.save_safetensors(safetensors_out);
    fmt::print("wrote {} ({} tensors)\n", safetensors_out, ckpt.tensors().size());
  });
}

}  // namespace pivotmt::cli
