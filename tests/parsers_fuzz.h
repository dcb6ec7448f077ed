// Seeded mutation fuzz loops for mor's torch-free parsers, shared by tests/test_fuzz_parsers.cpp and the
// sanitizer build tests/fuzz_parsers_asan.cpp: the safetensors header and offsets, config.json, and
// JSON/JSONL datasets. Two mutators: the byte mutator of arrow_fuzz.h, and a JSON-aware one that
// replaces a random node with an interesting value (huge, negative, wrong type) or drops a key, so the
// rounds also reach the checks behind a valid parse. Each call must succeed or throw std::runtime_error
// whose message starts with the file name and is one line; anything else fails the loop.
#pragma once
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "arrow_fuzz.h"
#include "config.h"
#include "dataset.h"
#include "safetensors_header.h"

namespace mor::test {

inline nlohmann::json interesting_json(std::mt19937_64& rng) {
  static const nlohmann::json values[] = {0, 1, -1, 2, 1000000000000LL, -1000000000000LL, 4611686018427387904LL,
                                          9223372036854775807LL, 18446744073709551615ULL, 1.5, -0.0, 1e308, "x", "",
                                          nullptr, true, nlohmann::json::array(), nlohmann::json::object(),
                                          nlohmann::json::array({1, 2}), nlohmann::json::array({"A"})};
  return values[rng() % (sizeof values / sizeof *values)];
}

// Replaces one random node of a copy of `j` (or drops an object key) and returns its text.
inline std::string mutate_json(const nlohmann::json& j, std::mt19937_64& rng) {
  nlohmann::json c = j;
  std::vector<nlohmann::json*> nodes;
  std::function<void(nlohmann::json&)> walk = [&](nlohmann::json& n) {
    nodes.push_back(&n);
    if (n.is_structured() && nodes.size() < 5000)
      for (auto& x : n) walk(x);
  };
  walk(c);
  nlohmann::json* n = nodes[rng() % nodes.size()];
  if (n->is_object() && !n->empty() && rng() % 3 == 0) {
    auto it = n->begin();
    std::advance(it, rng() % n->size());
    n->erase(it);
  } else {
    *n = interesting_json(rng);
  }
  return c.dump();
}

struct ParserFuzzStats {
  size_t rounds = 0, parsed = 0, rejected = 0;
};

// Runs `parse(input)` over mutations of the seeds for about `seconds` (at least `min_rounds`).
// `name` is what every message must start with. JSON seeds also get JSON-aware mutations.
inline ParserFuzzStats fuzz_loop(const std::string& what, const std::vector<std::string>& seeds, const std::string& name,
                                 const std::function<void(const std::string&)>& parse, double seconds, uint64_t seed,
                                 size_t min_rounds = 50) {
  std::mt19937_64 rng(seed);
  std::vector<nlohmann::json> parsed_seeds;
  for (const auto& s : seeds) {
    try {
      parsed_seeds.push_back(nlohmann::json::parse(s));
    } catch (const std::exception&) {
      parsed_seeds.push_back(nullptr);
    }
  }
  ParserFuzzStats st;
  const auto start = std::chrono::steady_clock::now();
  while (st.rounds < min_rounds ||
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const size_t k = st.rounds % seeds.size();
    const std::string input = !parsed_seeds[k].is_null() && rng() % 2 ? mutate_json(parsed_seeds[k], rng) : mutate(seeds[k], rng);
    ++st.rounds;
    try {
      parse(input);
      ++st.parsed;
    } catch (const std::runtime_error& e) {
      ++st.rejected;
      const std::string m = e.what();
      if (m.rfind(name, 0) != 0 || m.find('\n') != std::string::npos)
        throw std::logic_error(what + " round " + std::to_string(st.rounds) + ": message not one line naming " + name + ": " + m);
    } catch (const std::exception& e) {
      throw std::logic_error(what + " round " + std::to_string(st.rounds) + ": a library exception leaked: " + e.what() +
                             "\ninput: " + input.substr(0, 400));
    }
  }
  return st;
}

inline void write_bytes(const std::string& path, const std::string& data) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::logic_error("cannot write " + path);
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
}

// ---- the torch-free targets ----

inline ParserFuzzStats fuzz_config_json(const std::vector<std::string>& seeds, const std::string& tmp_dir, double seconds,
                                        uint64_t seed) {
  const std::string path = tmp_dir + "/config.json";
  return fuzz_loop("config.json", seeds, path, [&](const std::string& in) {
    write_bytes(path, in);
    ModelConfig::from_file(path);
  }, seconds, seed);
}

inline ParserFuzzStats fuzz_safetensors_header(const std::vector<std::string>& seeds, double seconds, uint64_t seed) {
  return fuzz_loop("safetensors header", seeds, "fuzz.safetensors", [&](const std::string& in) {
    parse_safetensors_header(reinterpret_cast<const uint8_t*>(in.data()), in.size(), "fuzz.safetensors");
  }, seconds, seed);
}

// `ext` ".json" or ".jsonl".
inline ParserFuzzStats fuzz_dataset_json(const std::vector<std::string>& seeds, const std::string& tmp_dir,
                                         const std::string& ext, double seconds, uint64_t seed) {
  const std::string path = tmp_dir + "/data" + ext;
  return fuzz_loop("dataset" + ext, seeds, path, [&](const std::string& in) {
    write_bytes(path, in);
    load_dataset(path);
  }, seconds, seed);
}

// A safetensors file of a few small tensors (F32, BF16, I64, an empty one) with metadata, as seed.
inline std::string small_safetensors_seed() {
  nlohmann::json h = {{"__metadata__", {{"format", "pt"}}},
                      {"a", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
                      {"b", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {24, 32}}}},
                      {"c", {{"dtype", "I64"}, {"shape", {1}}, {"data_offsets", {32, 40}}}},
                      {"d", {{"dtype", "F16"}, {"shape", {0, 5}}, {"data_offsets", {40, 40}}}}};
  std::string hs = h.dump();
  std::string s(8, '\0');
  const uint64_t n = hs.size();
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s + hs + std::string(40, '\x01');
}

inline std::string small_config_seed() {
  return R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
    "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
    "max_position_embeddings": 512, "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "rope_scaling": null})";
}

inline std::string small_dataset_seed(bool jsonl) {
  const char* rows[] = {R"({"instruction": "Which is a mammal?", "input": "Options: (A) cat (B) fish", "output": "A", "answer": "A"})",
                        R"({"instruction": "2+2?", "input": "", "output": "4", "choices": ["3", "4"], "image": null})"};
  if (jsonl) return std::string(rows[0]) + "\n" + rows[1] + "\n";
  return std::string("[") + rows[0] + ", " + rows[1] + "]";
}

}  // namespace mor::test
