// Bad inputs, table-driven (issue 15): each case builds its inputs in a fresh folder, runs the real `mor`
// binary and checks the exit code is non-zero, stderr is exactly one line `mor <cmd>: error: ...` naming
// the file or flag (the case's expected substring), no backtrace or raw library message leaks, and the
// folder (inputs and output location) is exactly as it was: nothing new, nothing changed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "adapter.h"
#include "helpers.h"
#include "helpers_bad.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace mor::test;
using namespace mor::test::bad;

namespace {

struct BadCase {
  std::string name;
  std::string cmd;                                         // the subcommand, as the error line names it
  std::function<std::string(const std::string& d)> make;   // prepares folder d, returns the arguments
  std::string expect;                                      // stderr must contain this (the file or flag)
};
// gtest names a failing case by this, not by the bytes of the struct.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

// ---- argument builders over the case folder d ----
std::string eval_args(const std::string& d, const std::string& model, const std::string& extra = "") {
  if (!fs::exists(d + "/test.json")) write_test_json(d + "/test.json", 2);
  return "eval-scienceqa --test_dataset " + q(d + "/test.json") + " --base_model " + q(model) + " --save_path " +
         q(d + "/res/r.json") + " --batch_size 2 --max_new_tokens 2 --dtype float32 --threads 1 --quiet" + extra;
}
std::string train_args(const std::string& d, const std::string& model, const std::string& data, const std::string& extra = "") {
  return "train --base_model " + q(model) + " --data_path " + q(data) + " --output_dir " + q(d + "/out") +
         " --batch_size 2 --micro_batch_size 2 --max_steps 2 --cutoff_len 32 --val_set_size 0 --lora_r 2 --number_experts 2"
         " --top_k 1 --lora_target_modules q_proj,v_proj --dtype float32 --threads 1" + extra;
}
std::string train_ok(const std::string& d, const std::string& extra = "") {
  write_train_json(d + "/train.json", 8);
  return train_args(d, copy_model(d), d + "/train.json", extra);
}
std::string gen_args(const std::string& model, const std::string& extra = "") {
  return "generate --base_model " + q(model) + " --prompt hi --max_new_tokens 2 --threads 1" + extra;
}

// config.json edits on a copy of the model
std::function<std::string(const std::string&)> params_cfg(std::function<void(json&)> edit) {
  return [edit](const std::string& d) {
    const std::string m = copy_model(d);
    json c = read_json(m + "/config.json");
    edit(c);
    write_json(m + "/config.json", c);
    return "params --base_model " + q(m) + " --lora_r 2 --number_experts 2 --top_k 1";
  };
}
std::function<std::string(const std::string&)> eval_cfg(std::function<void(json&)> edit) {
  return [edit](const std::string& d) {
    const std::string m = copy_model(d);
    json c = read_json(m + "/config.json");
    edit(c);
    write_json(m + "/config.json", c);
    return eval_args(d, m);
  };
}
// model.safetensors edits
std::function<std::string(const std::string&)> eval_st(std::function<void(RawSafetensors&)> edit, int64_t claimed = -1) {
  return [edit, claimed](const std::string& d) {
    const std::string m = copy_model(d);
    auto st = read_raw(m + "/model.safetensors");
    edit(st);
    write_raw(m + "/model.safetensors", st, claimed);
    return eval_args(d, m);
  };
}
std::function<std::string(const std::string&)> eval_file(const std::string& rel, const std::string& bytes) {
  return [rel, bytes](const std::string& d) {
    const std::string m = copy_model(d);
    write_file(m + "/" + rel, bytes);
    return eval_args(d, m);
  };
}
// test-set contents
std::function<std::string(const std::string&)> eval_test(const std::string& bytes, const std::string& name = "test.json") {
  return [bytes, name](const std::string& d) {
    write_file(d + "/" + name, bytes);
    std::string a = eval_args(d, copy_model(d));
    if (name != "test.json") a.replace(a.find(d + "/test.json"), (d + "/test.json").size(), d + "/" + name);
    return a;
  };
}
// adapter edits (eval --mola_weights)
std::function<std::string(const std::string&)> eval_adapter(std::function<void(const std::string&)> edit,
                                                             const std::string& extra = "") {
  return [edit, extra](const std::string& d) {
    const std::string a = copy_adapter(d);
    edit(a);
    return eval_args(d, copy_model(d), " --mola_weights " + q(a) + extra);
  };
}
void edit_mola(const std::string& a, std::function<void(json&)> f) {
  json j = read_json(a + "/mola_config.json");
  f(j);
  write_json(a + "/mola_config.json", j);
}
void edit_adapter_st(const std::string& a, std::function<void(RawSafetensors&)> f) {
  auto st = read_raw(a + "/adapter_model.safetensors");
  f(st);
  write_raw(a + "/adapter_model.safetensors", st);
}
const char* kQ0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A_0.weight";
void write_bin(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& items) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (auto& [k, t] : items) d.insert(k, t);
  auto bytes = torch::pickle_save(d);
  write_file(path, std::string(bytes.begin(), bytes.end()));
}
// The adapter as a reference-style .bin (all tensors, the given one replaced).
void adapter_to_bin(const std::string& a, const std::string& key, const torch::Tensor& replacement) {
  auto w = mor::read_adapter_weights(a + "/adapter_model.safetensors");
  for (auto& [k, t] : w)
    if (k == key) t = replacement;
  write_bin(a + "/adapter_model.bin", w);
  fs::remove(a + "/adapter_model.safetensors");
}

// A finished 2-step run with checkpoint-1 and checkpoint-2, made once per process.
std::string checkpoint_run() {
  static std::string out;
  if (!out.empty()) return out;
  const std::string d = scratch_dir("bad_ckpt_src");
  auto r = run_mor(train_ok(d, " --save_steps 1 --save_total_limit 0"));
  if (r.exit_code != 0) throw std::runtime_error("checkpoint fixture: mor train failed: " + r.err);
  out = d;
  return out;
}
std::function<std::string(const std::string&)> resume_with(std::function<void(const std::string& ckpt)> edit) {
  return [edit](const std::string& d) {
    const std::string src = checkpoint_run();
    fs::create_directories(d + "/out");
    fs::copy(src + "/out/checkpoint-1", d + "/out/checkpoint-1", fs::copy_options::recursive);
    edit(d + "/out/checkpoint-1");
    return train_ok(d, " --resume_from_checkpoint " + q(d + "/out/checkpoint-1"));
  };
}
// eval --resume with a saved result file
std::function<std::string(const std::string&)> eval_resume(const std::string& saved) {
  return [saved](const std::string& d) {
    fs::create_directories(d + "/res");
    write_file(d + "/res/r.json", saved);
    return eval_args(d, copy_model(d), " --resume");
  };
}
std::function<std::string(const std::string&)> args(const std::string& a) {
  return [a](const std::string&) { return a; };
}

std::vector<BadCase> cases() {
  const std::string td = testdata_dir();
  std::vector<BadCase> c;
  auto add = [&](std::string name, std::string cmd, std::function<std::string(const std::string&)> make, std::string expect) {
    c.push_back({std::move(name), std::move(cmd), std::move(make), std::move(expect)});
  };
  // ---- config.json ----
  add("CfgHiddenHuge", "params", params_cfg([](json& j) { j["hidden_size"] = int64_t(1000000000000); }), "hidden_size");
  add("CfgLayersHuge", "params", params_cfg([](json& j) { j["num_hidden_layers"] = 1000000000; }), "num_hidden_layers");
  add("CfgIntermediate2p62", "params", params_cfg([](json& j) { j["intermediate_size"] = int64_t(1) << 62; }), "intermediate_size");
  add("CfgParamsBeyondBounds", "params", params_cfg([](json& j) {
        j["hidden_size"] = 131072; j["intermediate_size"] = 1 << 20; j["num_hidden_layers"] = 4096;
        j["num_attention_heads"] = 1024; j["num_key_value_heads"] = 1024; }), "config.json");
  add("CfgVocabHuge", "params", params_cfg([](json& j) { j["vocab_size"] = int64_t(1) << 40; }), "vocab_size");
  add("CfgHiddenHugeEval", "eval-scienceqa", eval_cfg([](json& j) { j["hidden_size"] = int64_t(1000000000000); }), "hidden_size");
  add("CfgLayersHugeEval", "eval-scienceqa", eval_cfg([](json& j) { j["num_hidden_layers"] = 1000000000; }), "num_hidden_layers");
  add("CfgBiggerThanWeights", "eval-scienceqa", eval_cfg([](json& j) { j["hidden_size"] = 65536; j["intermediate_size"] = 65536; }),
      "config.json");
  add("CfgMaxPosHuge", "eval-scienceqa", eval_cfg([](json& j) { j["max_position_embeddings"] = int64_t(1) << 50; }),
      "max_position_embeddings");
  add("CfgHiddenString", "params", params_cfg([](json& j) { j["hidden_size"] = "64"; }), "hidden_size");
  add("CfgHiddenNegative", "params", params_cfg([](json& j) { j["hidden_size"] = -64; }), "hidden_size");
  add("CfgMissingVocab", "params", params_cfg([](json& j) { j.erase("vocab_size"); }), "vocab_size");
  add("CfgRopeScaling", "eval-scienceqa", eval_cfg([](json& j) { j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}}; }),
      "rope_scaling");
  add("CfgUnknownArch", "params", params_cfg([](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; }), "config.json");
  add("CfgNotJson", "eval-scienceqa", eval_file("config.json", "{\"hidden_size\": 64,"), "config.json");
  add("CfgList", "params", [](const std::string& d) {
        const std::string m = copy_model(d); write_file(m + "/config.json", "[1, 2]"); return "params --base_model " + q(m); },
      "config.json");
  add("CfgMissing", "eval-scienceqa", [](const std::string& d) {
        const std::string m = copy_model(d); fs::remove(m + "/config.json"); return eval_args(d, m); }, "config.json");
  add("CfgHeadsNotDivisor", "params", params_cfg([](json& j) { j["num_attention_heads"] = 7; }), "num_attention_heads");
  add("CfgEosOutsideVocab", "params", params_cfg([](json& j) { j["eos_token_id"] = 100000; }), "eos_token_id");
  // ---- safetensors ----
  add("StZeroBytes", "eval-scienceqa", eval_file("model.safetensors", ""), "model.safetensors");
  add("StTruncated", "eval-scienceqa", [](const std::string& d) {
        const std::string m = copy_model(d);
        write_file(m + "/model.safetensors", read_file(m + "/model.safetensors").substr(0, 100000));
        return eval_args(d, m); }, "model.safetensors");
  add("StHeaderLenHuge", "eval-scienceqa", eval_st([](RawSafetensors&) {}, int64_t(1) << 60), "model.safetensors");
  add("StHeaderNotJson", "eval-scienceqa", eval_file("model.safetensors", std::string("\x05\0\0\0\0\0\0\0{\"a\":", 13)),
      "model.safetensors");
  add("StOverlap", "eval-scienceqa", eval_st([](RawSafetensors& st) {
        st.header["model.layers.0.self_attn.o_proj.weight"]["data_offsets"] =
            st.header["model.layers.0.self_attn.q_proj.weight"]["data_offsets"]; }), "overlaps");
  add("StGap", "eval-scienceqa", eval_st([](RawSafetensors& st) {
        for (auto& [k, v] : st.header.items())
          if (k != "__metadata__" && v["data_offsets"][0].get<uint64_t>() > 0) {
            v["data_offsets"][0] = v["data_offsets"][0].get<uint64_t>() + 16;
            v["data_offsets"][1] = v["data_offsets"][1].get<uint64_t>() + 16;
          }
        st.data += std::string(16, '\0'); }), "gap");
  add("StTrailingBytes", "eval-scienceqa", eval_st([](RawSafetensors& st) { st.data += std::string(64, '\0'); }),
      "after the last tensor");
  add("StShapeOverflow", "eval-scienceqa", eval_st([](RawSafetensors& st) {
        st.header["model.norm.weight"]["shape"] = {uint64_t(1) << 62, 4, 0}; }), "model.norm.weight");
  add("StShapeNegative", "eval-scienceqa", eval_st([](RawSafetensors& st) { st.header["model.norm.weight"]["shape"] = {-64}; }),
      "model.norm.weight");
  add("StShapeUint64Max", "eval-scienceqa", eval_st([](RawSafetensors& st) {
        st.header["model.norm.weight"]["shape"] = {UINT64_MAX}; }), "model.norm.weight");
  add("StBadDtype", "eval-scienceqa", eval_st([](RawSafetensors& st) { st.header["model.norm.weight"]["dtype"] = "F8_E5M2"; }),
      "F8_E5M2");
  add("StIntegerWeights", "eval-scienceqa", eval_st([](RawSafetensors& st) { st.header["model.norm.weight"]["dtype"] = "I32"; }),
      "model.norm.weight");
  add("StMissingTensor", "eval-scienceqa", eval_st([](RawSafetensors& st) {
        auto v = st.header["model.norm.weight"]; st.header.erase("model.norm.weight"); st.header["model.nrm.weight"] = v; }),
      "model.norm.weight");
  add("StWrongShape", "eval-scienceqa", eval_st([](RawSafetensors& st) { st.header["model.norm.weight"]["shape"] = {8, 8}; }),
      "model.norm.weight");
  add("StIndexMissingShard", "eval-scienceqa", [](const std::string& d) {
        const std::string m = copy_model(d);
        auto st = read_raw(m + "/model.safetensors");
        json map;
        for (auto& [k, v] : st.header.items()) if (k != "__metadata__") map[k] = "model-00001-of-00002.safetensors";
        fs::remove(m + "/model.safetensors");
        write_json(m + "/model.safetensors.index.json", {{"weight_map", map}});
        return eval_args(d, m); }, "model-00001-of-00002.safetensors");
  // ---- tokenizers ----
  add("TokGarbage", "eval-scienceqa", eval_file("tokenizer.model", "not a sentencepiece model"), "tokenizer.model");
  add("TokZeroBytes", "eval-scienceqa", eval_file("tokenizer.model", ""), "tokenizer.model");
  add("TokMissing", "eval-scienceqa", [](const std::string& d) {
        const std::string m = copy_model(d); fs::remove(m + "/tokenizer.model"); return eval_args(d, m); }, "tokenizer");
  add("TokBiggerThanModelEval", "eval-scienceqa", [td](const std::string& d) {
        const std::string m = copy_model(d);
        fs::copy_file(td + "/llama2-tokenizer/tokenizer.model", m + "/tokenizer.model", fs::copy_options::overwrite_existing);
        return eval_args(d, m); }, "tokenizer.model");
  add("TokBiggerThanModelTrain", "train", [td](const std::string& d) {
        std::string a = train_ok(d);
        fs::copy_file(td + "/llama2-tokenizer/tokenizer.model", d + "/model/tokenizer.model", fs::copy_options::overwrite_existing);
        return a; }, "tokenizer.model");
  // ---- datasets ----
  add("TestSetZeroBytes", "eval-scienceqa", eval_test(""), "test.json");
  add("TestSetEmptyList", "eval-scienceqa", eval_test("[]"), "test.json");
  add("TestSetNotJson", "eval-scienceqa", eval_test("[{\"question\": "), "test.json");
  add("TestSetObject", "eval-scienceqa", eval_test("{\"a\": 1}"), "test.json");
  add("TestSetNoAnswer", "eval-scienceqa", eval_test(R"([{"instruction": "q", "input": ""}])"), "test.json");
  add("TestSetRowsNotObjects", "eval-scienceqa", eval_test("[1, 2, 3]"), "test.json");
  add("TestSetJsonlBadLine", "eval-scienceqa", eval_test("{\"instruction\": \"a\", \"input\": \"\", \"answer\": \"A\"}\n{oops\n",
                                                         "test.jsonl"), "test.jsonl");
  add("TestSetMissing", "eval-scienceqa", [](const std::string& d) {
        std::string a = eval_args(d, copy_model(d)); fs::remove(d + "/test.json"); return a; }, "test.json");
  add("TrainDataZeroBytes", "train", [](const std::string& d) {
        write_file(d + "/train.json", ""); return train_args(d, copy_model(d), d + "/train.json"); }, "train.json");
  add("TrainDataEmptyList", "train", [](const std::string& d) {
        write_file(d + "/train.json", "[]"); return train_args(d, copy_model(d), d + "/train.json"); }, "train.json");
  add("TrainDataNoInstruction", "train", [](const std::string& d) {
        write_file(d + "/train.json", R"([{"input": "", "output": "x"}, {"input": "", "output": "y"}])");
        return train_args(d, copy_model(d), d + "/train.json"); }, "instruction");
  add("TrainDataJsonlBadLine", "train", [](const std::string& d) {
        write_file(d + "/train.jsonl", "{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}\n[1,\n");
        return train_args(d, copy_model(d), d + "/train.jsonl"); }, "train.jsonl");
  add("TrainDataCsv", "train", [](const std::string& d) {
        write_file(d + "/train.csv", "a,b\n"); return train_args(d, copy_model(d), d + "/train.csv"); }, "train.csv");
  add("TrainDataHfNoDict", "train", [](const std::string& d) {
        fs::create_directories(d + "/data.hf/train"); return train_args(d, copy_model(d), d + "/data.hf"); }, "data.hf");
  add("ScoreDataMissing", "score", [](const std::string& d) {
        return "score --base_model " + q(copy_model(d)) + " --data_path " + q(d + "/nope.json") + " --threads 1"; }, "nope.json");
  // ---- flags ----
  add("FlagTemperatureNan", "generate", [](const std::string& d) { return gen_args(copy_model(d), " --temperature nan"); },
      "--temperature");
  add("FlagTemperatureInf", "generate", [](const std::string& d) { return gen_args(copy_model(d), " --temperature inf"); },
      "--temperature");
  add("FlagTopPNan", "generate", [](const std::string& d) { return gen_args(copy_model(d), " --top_p nan"); }, "--top_p");
  add("FlagLearningRateInf", "train", [](const std::string& d) { return train_ok(d, " --learning_rate inf"); }, "--learning_rate");
  add("FlagLearningRateNan", "train", [](const std::string& d) { return train_ok(d, " --learning_rate nan"); }, "--learning_rate");
  add("FlagThreadsNegative", "train", [](const std::string& d) { return train_ok(d, " --threads -1"); }, "--threads");
  add("FlagSaveEveryZero", "eval-scienceqa", [](const std::string& d) { return eval_args(d, copy_model(d), " --save_every 0"); },
      "--save_every");
  add("FlagThreadsNegativeEval", "eval-scienceqa", [](const std::string& d) { return eval_args(d, copy_model(d), " --threads -3"); },
      "--threads");
  add("FlagThreadsOverflow", "eval-scienceqa", [](const std::string& d) {
        return eval_args(d, copy_model(d), " --threads 99999999999"); }, "--threads");
  add("FlagMaxStepsOverflow", "train", [](const std::string& d) { return train_ok(d, " --max_steps 99999999999999999999"); },
      "--max_steps");
  add("FlagSeedOverflow", "train", [](const std::string& d) { return train_ok(d, " --seed 999999999999999999999999"); }, "--seed");
  add("FlagBatchNotInt", "eval-scienceqa", [](const std::string& d) { return eval_args(d, copy_model(d), " --batch_size abc"); },
      "--batch_size");
  add("FlagBatchZero", "eval-scienceqa", [](const std::string& d) { return eval_args(d, copy_model(d), " --batch_size 0"); },
      "--batch_size");
  add("FlagCutoffOverflow", "train", [](const std::string& d) { return train_ok(d, " --cutoff_len 1e400"); }, "--cutoff_len");
  add("FlagLoraRZero", "train", [](const std::string& d) { return train_ok(d, " --lora_r 0"); }, "--lora_r");
  add("FlagLoraRHuge", "params", [](const std::string& d) {
        return "params --base_model " + q(copy_model(d)) + " --lora_r 99999999999"; }, "--lora_r");
  add("FlagExpertsHuge", "params", [](const std::string& d) {
        return "params --base_model " + q(copy_model(d)) + " --number_experts 1000000000 --top_k 1"; }, "--number_experts");
  add("FlagExpertsWrongCount", "train", [](const std::string& d) { return train_ok(d, " --number_experts 2,2"); },
      "--number_experts");
  add("FlagTopKOverExperts", "train", [](const std::string& d) { return train_ok(d, " --top_k 3"); }, "--top_k");
  add("FlagLoraDropoutOne", "train", [](const std::string& d) { return train_ok(d, " --lora_dropout 1.5"); }, "--lora_dropout");
  add("FlagLoraAlphaInf", "train", [](const std::string& d) { return train_ok(d, " --lora_alpha inf"); }, "--lora_alpha");
  add("FlagUnknown", "train", [](const std::string& d) { return train_ok(d, " --no_such_flag 3"); }, "--no_such_flag");
  add("FlagDevice", "eval-scienceqa", [](const std::string& d) { return eval_args(d, copy_model(d), " --device cuda:7"); },
      "--device");
  add("FlagDtype", "eval-scienceqa", [](const std::string& d) { return eval_args(d, copy_model(d), " --dtype float64"); },
      "--dtype");
  add("FlagBoolWord", "train", [](const std::string& d) { return train_ok(d, " --obalance maybe"); }, "--obalance");
  add("FlagBaseModelMissing", "params", args("params --base_model /nonexistent/model-xyz"), "/nonexistent/model-xyz");
  // ---- adapters ----
  add("AdapterMissingFolder", "eval-scienceqa", [](const std::string& d) {
        return eval_args(d, copy_model(d), " --mola_weights " + q(d + "/noadapter")); }, "noadapter");
  add("AdapterMolaGarbage", "eval-scienceqa", eval_adapter([](const std::string& a) { write_file(a + "/mola_config.json", "{{"); }),
      "mola_config.json");
  add("AdapterMolaRankHuge", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_mola(a, [](json& j) { for (auto& [k, m] : j["modules"].items()) m["ranks"] = {int64_t(1) << 40, 2}; }); }),
      "mola_config.json");
  add("AdapterMolaRankNegative", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_mola(a, [](json& j) { for (auto& [k, m] : j["modules"].items()) m["ranks"] = {-2, 2}; }); }), "mola_config.json");
  add("AdapterMolaExpertsHuge", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_mola(a, [](json& j) { for (auto& [k, m] : j["modules"].items()) m["experts"] = int64_t(1) << 40; }); }),
      "mola_config.json");
  add("AdapterMolaFeaturesHuge", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_mola(a, [](json& j) { for (auto& [k, m] : j["modules"].items()) m["in_features"] = int64_t(1) << 50; }); }),
      "mola_config.json");
  add("AdapterMolaWrongTypes", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_mola(a, [](json& j) { j["num_hidden_layers"] = "five"; }); }), "mola_config.json");
  add("AdapterStShapeOverflow", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_adapter_st(a, [](RawSafetensors& st) { st.header[kQ0]["shape"] = {uint64_t(1) << 63, 2}; }); }),
      "adapter_model.safetensors");
  add("AdapterStWrongShape", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_adapter_st(a, [](RawSafetensors& st) { st.header[kQ0]["shape"] = {64, 2}; }); }), "adapter_model.safetensors");
  add("AdapterStNaN", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_adapter_st(a, [](RawSafetensors& st) {
          const uint64_t b = st.header[kQ0]["data_offsets"][0].get<uint64_t>();
          const float nan = std::nanf("");
          std::memcpy(&st.data[b], &nan, 4); }); }), "NaN");
  add("AdapterStMissingKey", "eval-scienceqa", eval_adapter([](const std::string& a) {
        edit_adapter_st(a, [](RawSafetensors& st) { auto v = st.header[kQ0]; st.header.erase(kQ0); st.header["x.weight"] = v; }); }),
      "adapter_model.safetensors");
  add("AdapterStTruncated", "eval-scienceqa", eval_adapter([](const std::string& a) {
        const std::string p = a + "/adapter_model.safetensors"; write_file(p, read_file(p).substr(0, 200)); }),
      "adapter_model.safetensors");
  add("AdapterBinWrongDtype", "eval-scienceqa", eval_adapter([](const std::string& a) {
        adapter_to_bin(a, kQ0, torch::ones({2, 64}, torch::kInt64)); }), "dtype");
  add("AdapterBinNaN", "eval-scienceqa", eval_adapter([](const std::string& a) {
        adapter_to_bin(a, kQ0, torch::full({2, 64}, std::nan(""))); }), "NaN");
  add("AdapterBinGarbage", "eval-scienceqa", eval_adapter([](const std::string& a) {
        fs::remove(a + "/adapter_model.safetensors"); write_file(a + "/adapter_model.bin", "PK\x03\x04garbage"); }),
      "adapter_model.bin");
  add("AdapterBinTruncated", "eval-scienceqa", eval_adapter([](const std::string& a) {
        adapter_to_bin(a, "", {});
        const std::string p = a + "/adapter_model.bin"; write_file(p, read_file(p).substr(0, 300)); }), "adapter_model.bin");
  add("AdapterBinNotDict", "eval-scienceqa", eval_adapter([](const std::string& a) {
        fs::remove(a + "/adapter_model.safetensors");
        auto b = torch::pickle_save(torch::ones({3}));
        write_file(a + "/adapter_model.bin", std::string(b.begin(), b.end())); }), "adapter_model.bin");
  add("AdapterRefConfigGarbage", "eval-scienceqa", eval_adapter([](const std::string& a) {
        fs::remove(a + "/mola_config.json"); write_file(a + "/adapter_config.json", "{\"lora_alpha\": "); },
        " --lora_target_modules q_proj,v_proj --number_experts 2 --lora_r 2 --top_k 1"), "adapter_config.json");
  add("AdapterNoWeights", "eval-scienceqa", eval_adapter([](const std::string& a) { fs::remove(a + "/adapter_model.safetensors"); }),
      "adapter");
  // ---- checkpoints (train --resume_from_checkpoint) ----
  add("CkptTrainerStateEmptyObject", "train", resume_with([](const std::string& k) { write_file(k + "/trainer_state.json", "{}"); }),
      "trainer_state.json");
  add("CkptTrainerStateGarbage", "train", resume_with([](const std::string& k) { write_file(k + "/trainer_state.json", "[[["); }),
      "trainer_state.json");
  add("CkptTrainerStateMissing", "train", resume_with([](const std::string& k) { fs::remove(k + "/trainer_state.json"); }),
      "trainer_state.json");
  add("CkptOptimizerGarbage", "train", resume_with([](const std::string& k) { write_file(k + "/optimizer.pt", "garbage"); }),
      "optimizer.pt");
  add("CkptOptimizerTruncated", "train", resume_with([](const std::string& k) {
        write_file(k + "/optimizer.pt", read_file(k + "/optimizer.pt").substr(0, 400)); }), "optimizer.pt");
  add("CkptAdapterMissing", "train", resume_with([](const std::string& k) { fs::remove(k + "/adapter_model.safetensors"); }),
      "checkpoint-1");
  add("CkptExistingOutputNoOverwrite", "train", [](const std::string& d) {
        const std::string src = checkpoint_run();
        fs::copy(src + "/out", d + "/out", fs::copy_options::recursive);
        return train_ok(d); }, "--overwrite_output_dir");
  // ---- eval result files (--resume) ----
  add("ResumeGarbage", "eval-scienceqa", eval_resume("{\"acc\": "), "r.json");
  add("ResumeEmptyObject", "eval-scienceqa", eval_resume("{}"), "r.json");
  add("ResumeResultsNumbers", "eval-scienceqa", eval_resume(R"({"results": [1, 2], "outputs": ["a", "b"]})"), "r.json");
  add("ResumeResultsWrongInner", "eval-scienceqa", eval_resume(R"({"results": [[1]], "outputs": ["a"]})"), "r.json");
  add("ResumeOutputsNotStrings", "eval-scienceqa", eval_resume(R"({"results": [["A"]], "outputs": [5]})"), "r.json");
  add("ResumeTooMany", "eval-scienceqa", eval_resume(R"({"results": [["A"],["A"],["A"]], "outputs": ["a","b","c"]})"), "r.json");
  add("SavePathIsFolder", "eval-scienceqa", [](const std::string& d) {
        fs::create_directories(d + "/res/r.json"); return eval_args(d, copy_model(d)); }, "r.json");
  // ---- prepare-scienceqa ----
  add("PrepareMissing", "prepare-scienceqa", [](const std::string& d) {
        return "prepare-scienceqa --dataset " + q(d + "/nope") + " --save_path " + q(d + "/sqa"); }, "nope");
  add("PrepareProblemsGarbage", "prepare-scienceqa", [](const std::string& d) {
        fs::create_directories(d + "/src");
        write_file(d + "/src/problems.json", "{\"1\": ");
        write_file(d + "/src/pid_splits.json", R"({"train": ["1"], "val": [], "test": []})");
        return "prepare-scienceqa --dataset " + q(d + "/src") + " --save_path " + q(d + "/sqa"); }, "problems.json");
  return c;
}

class BadInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadInput, OneLineErrorNothingWritten) {
  MOR_REQUIRE_TESTDATA();
  const BadCase& bc = GetParam();
  const std::string d = scratch_dir("bad_" + bc.name);
  const std::string a = bc.make(d);
  const Snapshot before = snapshot(d);
  auto r = run_mor(a);
  EXPECT_NE(r.exit_code, 0) << a << "\nstdout:\n" << r.out;
  EXPECT_LT(r.exit_code, 128) << "killed by a signal: " << a;
  const std::string why = check_one_line_error(r.err, bc.cmd, bc.expect);
  EXPECT_EQ(why, "") << a;
  EXPECT_EQ(diff(before, snapshot(d)), "") << "the failed command changed its folder: " << a;
}

std::string case_name(const ::testing::TestParamInfo<BadCase>& i) { return i.param.name; }

INSTANTIATE_TEST_SUITE_P(BadInputs, BadInput, ::testing::ValuesIn(cases()), case_name);

}  // namespace
