// The embedded default behind `mor quickstart` (see quickstart.h).
#include "quickstart.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <stdexcept>

#include "llama.h"
#include "scienceqa.h"
#include "tokenizer.h"

namespace fs = std::filesystem;

namespace mor {
namespace {

// One kind of question: a fixed list of options (as ScienceQA's "solid / liquid / gas"), the items
// whose answer is each option, and a few phrasings.
struct Topic {
  std::string topic, category, skill, subject;
  std::vector<std::string> options;
  std::vector<std::vector<std::string>> items;  // items[i] have answer options[i]
  std::vector<std::string> phrasings;           // "{}" is replaced by the item
};

const std::vector<Topic>& topics() {
  static const std::vector<Topic> t = {
      {"physics", "States of matter", "Identify solids, liquids, and gases", "natural science",
       {"solid", "liquid", "gas"},
       {{"rock", "brick", "coin", "chair", "ice cube", "book", "spoon", "pencil"},
        {"milk", "apple juice", "water", "honey", "vinegar", "olive oil", "lemonade", "tea"},
        {"steam", "air", "helium", "oxygen", "smoke", "neon", "carbon dioxide", "fog"}},
       {"Which state of matter is {}?", "Is {} a solid, a liquid, or a gas?", "What is the state of {}?"}},
      {"biology", "Classification", "Identify animal groups", "natural science",
       {"mammal", "bird", "fish", "reptile"},
       {{"dog", "horse", "whale", "bat", "cow", "rabbit", "tiger", "mouse"},
        {"eagle", "owl", "robin", "penguin", "duck", "parrot", "swan", "crow"},
        {"shark", "salmon", "trout", "tuna", "goldfish", "cod", "eel", "carp"},
        {"snake", "lizard", "turtle", "crocodile", "iguana", "gecko", "cobra", "tortoise"}},
       {"Which group does the {} belong to?", "Select the group of the {}.", "What kind of animal is a {}?"}},
      {"earth science", "Weather and climate", "Identify the season", "natural science",
       {"winter", "spring", "summer", "autumn"},
       {{"snow", "frost", "sledding", "mittens"},
        {"blossoms", "tulips", "lambs", "rain showers"},
        {"heat waves", "beach trips", "sunburn", "ice cream"},
        {"falling leaves", "harvest", "pumpkins", "acorns"}},
       {"Which season do you think of with {}?", "In which season do people see {}?", "{} belongs to which season?"}},
  };
  return t;
}

std::string replace_braces(std::string s, const std::string& item) {
  auto pos = s.find("{}");
  s.replace(pos, 2, item);
  if (!s.empty() && pos == 0) s[0] = static_cast<char>(std::toupper(s[0]));
  return s;
}

Row make_row(const Topic& t, size_t answer_idx, const std::string& item, const std::string& phrasing) {
  const std::string letters = "ABCDE";
  std::string question = replace_braces(phrasing, item);
  std::string choices_text;
  nlohmann::ordered_json choices = nlohmann::ordered_json::array();
  for (size_t i = 0; i < t.options.size(); ++i) {
    if (i) choices_text += " ";
    choices_text += std::string("(") + letters[i] + ") " + t.options[i];
    choices.push_back(t.options[i]);
  }
  std::string letter(1, letters[answer_idx]);
  Row r;
  r["image"] = nullptr;
  r["question"] = question;
  r["choices"] = choices;
  r["answer"] = letter;
  r["hint"] = "";
  r["task"] = "closed choice";
  r["grade"] = t.topic == "biology" ? "grade3" : "grade2";
  r["subject"] = t.subject;
  r["topic"] = t.topic;
  r["category"] = t.category;
  r["skill"] = t.skill;
  r["lecture"] = "";
  r["solution"] = "The answer is " + t.options[answer_idx] + ".";
  r["input"] = "";
  r["instruction"] = "Context: N/A\nQuestion: " + question + "\nOptions: " + choices_text + "\n";
  r["output"] = "Answer: The answer is " + letter + ".";
  return r;
}

}  // namespace

DatasetDict make_synthetic_scienceqa(uint64_t seed, int64_t n_train, int64_t n_validation, int64_t n_test) {
  std::mt19937_64 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto sample = [&]() {
    const Topic& t = topics()[pick(topics().size())];
    size_t a = pick(t.options.size());
    const auto& items = t.items[a];
    return make_row(t, a, items[pick(items.size())], t.phrasings[pick(t.phrasings.size())]);
  };
  DatasetDict dd;
  for (auto [name, n] : {std::pair<std::string, int64_t>{"train", n_train}, {"validation", n_validation},
                         {"test", n_test}}) {
    Dataset ds;
    ds.features = scienceqa_features();
    for (int64_t i = 0; i < n; ++i) ds.rows.push_back(sample());
    dd.split_names.push_back(name);
    dd.splits[name] = std::move(ds);
  }
  return dd;
}

int64_t train_quickstart_tokenizer(const DatasetDict& data, const std::string& dir) {
  fs::create_directories(dir);
  const std::string corpus = (fs::path(dir) / "tokenizer_corpus.txt").string();
  {
    std::ofstream f(corpus);
    PromptTemplate tmpl = PromptTemplate::alpaca();
    for (const auto& name : data.split_names)
      for (const auto& row : data.split(name).rows) {
        std::string text = tmpl.generate_prompt(row["instruction"].get<std::string>(), "",
                                                row["output"].get<std::string>());
        for (char& c : text) if (c == '\n') c = ' ';  // sentencepiece reads one sentence a line
        f << text << "\n";
      }
    f << tmpl.prompt_input << "\n";
  }
  Tokenizer::train(corpus, dir, 400);
  fs::remove(corpus);
  return Tokenizer::load(dir).vocab_size();
}

void write_quickstart_model(const DatasetDict& data, const std::string& dir, uint64_t seed) {
  int64_t vocab = train_quickstart_tokenizer(data, dir);
  ModelConfig cfg = ModelConfig::llama(64, 172, 4, 4, 2, vocab);
  cfg.max_position_embeddings = 512;
  cfg.rms_norm_eps = 1e-5;
  cfg.torch_dtype = "float32";
  LlamaForCausalLM model = random_llama(cfg, seed, torch::kFloat32, torch::kCPU);
  {
    // A frozen random base can only be steered by adapters if its geometry is not washed out: with
    // the usual std 0.02 every head attends uniformly and the adapters never learn to pick out the
    // question's key word (measured: chance accuracy after 850 steps). Unit-variance embeddings,
    // content-dependent attention (q/k std 0.3, v/o std 0.2) and an lm_head that can reach confident
    // logits make the task learnable (98% after 568 steps).
    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(seed + 1);
    auto ends_with = [](const std::string& s, const std::string& t) {
      return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
    };
    for (auto& p : model->named_parameters()) {
      const std::string& k = p.key();
      if (k == "model.embed_tokens.weight") p.value().normal_(0.0, 1.0, gen);
      else if (k == "lm_head.weight") p.value().normal_(0.0, 0.25, gen);
      else if (ends_with(k, "q_proj.weight") || ends_with(k, "k_proj.weight")) p.value().normal_(0.0, 0.3, gen);
      else if (ends_with(k, "v_proj.weight") || ends_with(k, "o_proj.weight")) p.value().normal_(0.0, 0.2, gen);
    }
  }
  save_llama(model, dir);
}

}  // namespace mor
