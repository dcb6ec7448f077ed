// Reference adapter folders (no mola_config.json): the allocation read from adapter_config.json and
// the weights' shapes, so the seed's eval command (no --lora_r) runs unchanged on a MoR folder with
// "r": [8,8,4,4,2]; its outputs equal the run with --lora_r given and the run on our own folder;
// every given flag that disagrees with the files is one clear error naming both values.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "adapter.h"
#include "allocation.h"
#include "helpers.h"
#include "llama.h"
#include "reference_adapter.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using mor::test::error_of;
using mor::test::read_file;
using mor::test::run_mor;
using mor::test::scratch_dir;

namespace {

const char* kTargets = "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj";
std::string stories() { return mor::test::testdata_dir() + "/stories260K"; }

// stories260K (5 layers) with MoR adapters: experts 2,2,3,4,4, ranks 8,8,4,4,2, top-k 1,2,2,2,3 and
// random B (so the adapter changes the outputs). ours/ keeps mola_config.json; mor_ref/ is the MoR
// fork's folder: the same adapter_model.safetensors and adapter_config.json ("r": [8,8,4,4,2]) only.
struct Folders {
  std::string ours, ref;
  mor::Allocation alloc;
};
const Folders& folders() {
  static Folders f = [] {
    Folders f;
    const std::string d = scratch_dir("refadapter");
    auto model = mor::load_llama(stories(), torch::kFloat32, torch::kCPU);
    f.alloc = mor::Allocation::from_flags(model->cfg, kTargets, "2,2,3,4,4", "8,8,4,4,2", "1,2,2,2,3", 16, 0.05);
    mor::attach_adapters(model, f.alloc, 7);
    torch::manual_seed(3);
    {
      torch::NoGradGuard ng;
      for (auto& [name, t] : mor::trainable_params(model))
        if (name.size() > 7 && name.substr(name.size() - 7) == ".lora_B") t.normal_(0, 0.5);
    }
    f.ours = d + "/ours";
    f.ref = d + "/mor_ref";
    mor::save_adapter(model, f.alloc, f.ours, "stories260K");
    fs::create_directories(f.ref);
    for (const char* file : {"adapter_model.safetensors", "adapter_config.json"})
      fs::copy_file(f.ours + "/" + file, f.ref + "/" + file);
    return f;
  }();
  return f;
}

}  // namespace

TEST(ReferenceAdapter, AllocationInferredFromTheFiles) {
  MOR_REQUIRE_TESTDATA();
  const auto& f = folders();
  EXPECT_NE(read_file(f.ref + "/adapter_config.json").find("\"r\": [\n    8,\n    8,\n    4,\n    4,\n    2\n  ]"), std::string::npos);
  auto cfg = mor::ModelConfig::from_file(stories() + "/config.json");
  mor::GivenAllocationFlags g;
  g.top_k = "1,2,2,2,3";
  auto a = mor::infer_reference_allocation(cfg, f.ref, g);
  EXPECT_EQ(a.difference(f.alloc), "");
  EXPECT_EQ(a.target_modules, f.alloc.target_modules);
  EXPECT_EQ(a.lora_alpha, 16.0);
  EXPECT_EQ(a.spec("model.layers.4.mlp.down_proj").ranks, (std::vector<int64_t>{2, 2, 2, 2}));
  // Without top-k: the reference evaluation's default 2, capped at a module's experts; or required.
  g.top_k.reset();
  g.default_top_k = 2;
  a = mor::infer_reference_allocation(cfg, f.ref, g);
  EXPECT_EQ(a.spec("model.layers.0.self_attn.q_proj").top_k, 2);
  EXPECT_EQ(a.spec("model.layers.4.self_attn.q_proj").top_k, 2);
  g.default_top_k = 1;
  EXPECT_EQ(mor::infer_reference_allocation(cfg, f.ref, g).spec("model.layers.4.mlp.up_proj").top_k, 1);
  g.default_top_k = 0;
  EXPECT_EQ(error_of([&] { mor::infer_reference_allocation(cfg, f.ref, g); }),
            f.ref + " has no mola_config.json and the reference stores no top-k: pass --top_k (one value, or one per "
                    "layer; the reference's evaluation uses 2)");
  // Inconsistent files: r disagreeing with the weights.
  const std::string bad = scratch_dir("refadapter-bad");
  fs::copy_file(f.ref + "/adapter_model.safetensors", bad + "/adapter_model.safetensors");
  auto conf = ordered_json::parse(read_file(f.ref + "/adapter_config.json"));
  conf["r"] = {8, 8, 8, 4, 2};
  mor::test::write_file(bad + "/adapter_config.json", conf.dump(2));
  g.default_top_k = 2;
  EXPECT_EQ(error_of([&] { mor::infer_reference_allocation(cfg, bad, g); }),
            bad + "/adapter_config.json gives layer 2 r = 8, but " + bad + "/adapter_model.safetensors: key "
                  "'base_model.model.model.layers.2.self_attn.q_proj.lora_A_0.weight' has 4 rows");
  conf["r"] = 4;
  mor::test::write_file(bad + "/adapter_config.json", conf.dump(2));
  EXPECT_NE(error_of([&] { mor::infer_reference_allocation(cfg, bad, g); }).find("gives layer 0 r = 4"), std::string::npos);
  conf["r"] = {8, 8};
  mor::test::write_file(bad + "/adapter_config.json", conf.dump(2));
  EXPECT_EQ(error_of([&] { mor::infer_reference_allocation(cfg, bad, g); }),
            bad + "/adapter_config.json: r is [8,8], expected an integer or a list of 5 integers (one per layer)");
  conf["r"] = {8, 8, 4, 4, 2};
  conf["target_modules"] = {"q_proj", "v_proj"};
  mor::test::write_file(bad + "/adapter_config.json", conf.dump(2));
  EXPECT_EQ(error_of([&] { mor::infer_reference_allocation(cfg, bad, g); }),
            bad + "/adapter_model.safetensors: holds experts for 'down_proj', which " + bad +
                "/adapter_config.json does not list in target_modules (q_proj,v_proj)");
  // A 3-layer model cannot carry the 5-layer adapter.
  auto small = mor::ModelConfig::llama(64, 172, 3, 8, 4, 512);
  EXPECT_EQ(error_of([&] { mor::infer_reference_allocation(small, f.ref, g); }),
            f.ref + "/adapter_model.safetensors: key 'base_model.model.model.layers.3.mlp.down_proj.lora_A_0.weight' is "
                    "for layer 3, the model has 3 layers (is --base_model the adapter's model?)");
}

// Must-show: the seed's eval command (flags --number_experts, --top_k, --lora_target_modules, no
// --lora_r) on the MoR folder gives the same result file as with --lora_r and as on our own folder.
TEST(ReferenceAdapter, SeedEvalCommandWithoutLoraRMatchesWithLoraR) {
  MOR_REQUIRE_TESTDATA();
  const auto& f = folders();
  const std::string d = scratch_dir("refadapter-eval");
  const std::string seed = "eval-scienceqa --test_dataset " + mor::test::testdata_dir() +
                           "/sampled_scienceqa_json/test.json --base_model " + stories() + " --batch_size 8"
                           " --lora_target_modules \"" + kTargets + "\" --number_experts \"2,2,3,4,4\""
                           " --top_k \"1,2,2,2,3\"";
  const std::string quick = " --limit 8 --max_new_tokens 24 --dtype float32 --threads 1 --quiet";
  auto a = run_mor(seed + " --mola_weights " + f.ref + " --save_path " + d + "/no_r.json" + quick);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto b = run_mor(seed + " --lora_r 8,8,4,4,2 --mola_weights " + f.ref + " --save_path " + d + "/with_r.json" + quick);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto c = run_mor(seed + " --mola_weights " + f.ours + " --save_path " + d + "/ours.json" + quick);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::string no_r = read_file(d + "/no_r.json");
  EXPECT_EQ(no_r, read_file(d + "/with_r.json"));
  EXPECT_EQ(no_r, read_file(d + "/ours.json"));
  // The adapter matters: the base model alone answers differently.
  auto base = run_mor("eval-scienceqa --test_dataset " + mor::test::testdata_dir() + "/sampled_scienceqa_json/test.json"
                      " --base_model " + stories() + " --batch_size 8 --save_path " + d + "/base.json" + quick);
  ASSERT_EQ(base.exit_code, 0) << base.err;
  EXPECT_NE(ordered_json::parse(read_file(d + "/base.json"))["outputs"], ordered_json::parse(no_r)["outputs"]);
  // No allocation flag at all: top-k defaults to the reference's 2 (capped at a module's experts).
  auto e = run_mor("eval-scienceqa --test_dataset " + mor::test::testdata_dir() + "/sampled_scienceqa_json/test.json"
                   " --base_model " + stories() + " --batch_size 8 --mola_weights " + f.ref + " --save_path " + d +
                   "/bare.json" + quick);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  auto k2 = run_mor(seed.substr(0, seed.find(" --lora_target_modules")) + " --top_k 2 --mola_weights " + f.ref +
                    " --save_path " + d + "/k2.json" + quick);
  ASSERT_EQ(k2.exit_code, 0) << k2.err;
  EXPECT_EQ(read_file(d + "/bare.json"), read_file(d + "/k2.json"));
}

TEST(ReferenceAdapter, DisagreeingFlagsAreOneClearError) {
  MOR_REQUIRE_TESTDATA();
  const auto& f = folders();
  const std::string d = scratch_dir("refadapter-flags");
  const std::string base = "eval-scienceqa --test_dataset " + mor::test::testdata_dir() +
                           "/sampled_scienceqa_json/test.json --base_model " + stories() +
                           " --limit 2 --max_new_tokens 2 --dtype float32 --quiet --save_path " + d + "/x.json";
  const std::string w = f.ref + "/adapter_model.safetensors";
  auto expect_error = [&](const std::string& folder, const std::string& flags, const std::string& msg) {
    auto r = run_mor(base + " --mola_weights " + folder + " " + flags);
    EXPECT_EQ(r.exit_code, 1) << flags;
    EXPECT_EQ(r.err, "mor eval-scienceqa: error: " + msg + "\n") << flags;
    EXPECT_FALSE(fs::exists(d + "/x.json"));
  };
  // The case: --lora_r 8 against layer 2's rank-4 experts.
  expect_error(f.ref, "--lora_r 8",
               "--lora_r disagrees with " + w + ": key 'base_model.model.model.layers.2.self_attn.q_proj.lora_A_0.weight' "
               "has shape [4, 64], expected [8, 64] by the flag (drop --lora_r: the ranks come from the files)");
  expect_error(f.ref, "--number_experts 8",
               "--number_experts disagrees with " + w + ": model.layers.0.self_attn.q_proj has 2 experts there, the flag "
               "gives 8 (drop the flag or fix it)");
  expect_error(f.ref, "--lora_alpha 32",
               "--lora_alpha 32.000000 disagrees with " + w + ": lora_alpha 16.000000 (drop the flag or fix it)");
  expect_error(f.ref, "--lora_target_modules q_proj,v_proj",
               "--lora_target_modules q_proj,v_proj disagrees with " + w + ": it targets " + kTargets +
               " (drop the flag or fix it)");
  expect_error(f.ref, "--top_k 3",
               "--top_k: model.layers.0.self_attn.q_proj: top_k 3 exceeds its 2 experts (in " + w + ")");
  // Our folder: flags are optional, and given ones are checked against mola_config.json.
  expect_error(f.ours, "--top_k 2",
               "--top_k disagrees with " + f.ours + "/mola_config.json: model.layers.0.self_attn.q_proj has top_k 1 "
               "there, the flag gives 2 (drop the flag or fix it)");
  auto ok = run_mor(base + " --mola_weights " + f.ours + " --number_experts 2,2,3,4,4 --lora_r 8,8,4,4,2");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST(ReferenceAdapter, GenerateTakesExpertsTopK) {
  MOR_REQUIRE_TESTDATA();
  const auto& f = folders();
  const std::string gen = "generate --base_model " + stories() + " --prompt 'Once upon a time' --template none"
                          " --max_new_tokens 12 --dtype float32 --threads 1 --top_k 40";
  auto ours = run_mor(gen + " --mola_weights " + f.ours);
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  auto ref = run_mor(gen + " --mola_weights " + f.ref + " --experts_top_k 1,2,2,2,3");
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  EXPECT_EQ(ours.out, ref.out);
  auto dashed = run_mor(gen + " --mola_weights " + f.ref + " --experts-top-k 1,2,2,2,3");
  ASSERT_EQ(dashed.exit_code, 0) << dashed.err;
  EXPECT_EQ(ours.out, dashed.out);
  auto plain = run_mor(gen);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_NE(ours.out, plain.out);  // the adapter changes the text
  auto missing = run_mor(gen + " --mola_weights " + f.ref);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "mor generate: error: " + f.ref + " has no mola_config.json and the reference stores no top-k: "
                         "pass --experts_top_k (one value, or one per layer; the reference's evaluation uses 2)\n");
  auto wrong = run_mor(gen + " --mola_weights " + f.ours + " --experts_top_k 2");
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("--experts_top_k disagrees with " + f.ours + "/mola_config.json"), std::string::npos) << wrong.err;
  auto help = run_mor("generate --help");
  EXPECT_NE(help.out.find("--experts_top_k"), std::string::npos) << help.out;
}

// The reference's own .bin (tests/golden/mola_tiny/adapter_ref, made by scripts/twin_mola.py, a mixture
// of ranks per expert): score with only --top_k gives the same lines as our copy of the adapter.
TEST(ReferenceAdapter, ReferenceBinScoresWithTopKAlone) {
  MOR_REQUIRE_TESTDATA();
  const std::string golden = mor::test::source_dir() + "/tests/golden/mola_tiny";
  const std::string d = scratch_dir("refadapter-bin");
  fs::create_directories(d + "/model");
  for (auto file : {"config.json", "model.safetensors"}) fs::copy(golden + "/model/" + file, d + "/model/" + file);
  fs::copy(stories() + "/tokenizer.model", d + "/model/tokenizer.model");
  const std::string score = "score --base_model " + d + "/model --data_path " + golden + "/data.json --dtype float32 --threads 1";
  auto ours = run_mor(score + " --mola_weights " + golden + "/adapter");
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  auto ref = run_mor(score + " --mola_weights " + golden + "/adapter_ref --top_k 1,2,3");
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  auto without_time = [](std::string s) {  // the summary line carries the wall time
    auto at = s.find(",\"seconds\":");
    return at == std::string::npos ? s : s.substr(0, at);
  };
  EXPECT_EQ(without_time(ours.out), without_time(ref.out));
  EXPECT_EQ(std::count(ours.out.begin(), ours.out.end(), '\n'), 9);
  auto no_k = run_mor(score + " --mola_weights " + golden + "/adapter_ref");
  EXPECT_EQ(no_k.exit_code, 1);
  EXPECT_NE(no_k.err.find("has no mola_config.json and the reference stores no top-k: pass --top_k"), std::string::npos)
      << no_k.err;
}
