// ScienceQA evaluation (see evaluate.h): batches in file order, greedy generation with the KV cache,
// batch_decode text, answer extraction, the reference's result file, resume, per-group accuracy.
#include "evaluate.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <utility>

#include "adapter.h"
#include "allocation.h"
#include "reference_adapter.h"
#include "config.h"
#include "dataset.h"
#include "eval_routing.h"
#include "files.h"
#include "generate.h"
#include "llama.h"
#include "open_model.h"
#include "pyjson.h"
#include "tokenizer.h"

namespace fs = std::filesystem;

namespace mor {

std::vector<std::string> find_answers(const std::string& text) {
  static const std::string kPrefix = "The answer is ";
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = text.find(kPrefix, pos)) != std::string::npos) {
    size_t l = pos + kPrefix.size();
    // ([A-Z]) then '.', which in Python matches any character except a newline; a UTF-8 multi-byte
    // character is one character there, and any of its bytes is not '\n', so one byte suffices.
    if (l + 1 < text.size() && text[l] >= 'A' && text[l] <= 'Z' && text[l + 1] != '\n') {
      out.emplace_back(1, text[l]);
      pos = l + 2;
    } else {
      pos += 1;
    }
  }
  return out;
}

std::string pick_answer(const std::vector<std::string>& matches) {
  return matches.size() == 1 ? matches[0] : "FAILED";
}

namespace {

struct Tally {
  int64_t correct = 0, len = 0;
};

nlohmann::ordered_json tally_json(const Tally& t) {
  nlohmann::ordered_json j;
  j["acc"] = t.len ? 100.0 * static_cast<double>(t.correct) / static_cast<double>(t.len) : 0.0;
  j["correct"] = t.correct;
  j["len"] = t.len;
  return j;
}

const char* kGroupColumns[] = {"subject", "grade", "category"};

// Accuracy per value of subject/grade/category over the rows evaluated so far.
nlohmann::ordered_json group_accuracy(const std::vector<Row>& rows, const std::vector<bool>& ok) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const char* col : kGroupColumns) {
    std::map<std::string, Tally> by;
    bool present = false;
    for (size_t i = 0; i < ok.size(); ++i) {
      if (!rows[i].contains(col) || !rows[i][col].is_string()) continue;
      present = true;
      auto& t = by[rows[i][col].get<std::string>()];
      t.len++;
      t.correct += ok[i];
    }
    if (!present) continue;
    nlohmann::ordered_json g = nlohmann::ordered_json::object();
    for (const auto& [k, t] : by) g[k] = tally_json(t);
    out[col] = g;
  }
  return out;
}

std::string row_string(const Row& row, const char* col, const std::string& file, size_t idx, bool required) {
  if (!row.is_object()) throw std::runtime_error(file + ": row " + std::to_string(idx) + " is not an object");
  if (!row.contains(col) || row[col].is_null()) {
    if (!required) return "";
    throw std::runtime_error(file + ": row " + std::to_string(idx) + " has no '" + col + "' column");
  }
  if (row[col].is_string()) return row[col].get<std::string>();
  return row[col].dump();  // the reference takes str(example["answer"])
}

std::vector<Row> load_test_rows(const std::string& path) {
  DatasetDict dd = load_dataset(path);
  if (dd.split_names.size() == 1) return dd.split(dd.split_names[0]).rows;
  return dd.split("test").rows;  // a DatasetDict: its test split
}

void write_result_file(const std::string& path, const nlohmann::ordered_json& data) {
  fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  write_file_atomic(path, py_json_dumps(data, 2));
}

// Log-probability of each candidate continuation after the prompt; one forward pass of all candidates.
std::string score_by_logprob(LlamaForCausalLM& model, const Tokenizer& tok, const std::string& prompt,
                             int64_t n_options) {
  static const std::string letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::vector<std::vector<int64_t>> seqs;
  const auto prompt_ids = tok.encode(prompt);
  std::vector<size_t> answer_start;
  for (int64_t i = 0; i < n_options; ++i) {
    auto full = tok.encode(prompt + "Answer: The answer is " + letters[i] + ".");
    // The candidates share the prompt's tokens; score from the first token where they may differ.
    size_t common = 0;
    while (common < prompt_ids.size() && common < full.size() && prompt_ids[common] == full[common]) ++common;
    answer_start.push_back(std::max<size_t>(common, 1));
    seqs.push_back(std::move(full));
  }
  size_t T = 0;
  for (auto& s : seqs) T = std::max(T, s.size());
  auto ids = torch::zeros({n_options, static_cast<int64_t>(T)}, torch::kLong);
  auto mask = torch::zeros({n_options, static_cast<int64_t>(T)}, torch::kLong);
  for (int64_t i = 0; i < n_options; ++i) {
    int64_t off = static_cast<int64_t>(T - seqs[i].size());
    for (size_t t = 0; t < seqs[i].size(); ++t) ids[i][off + static_cast<int64_t>(t)] = seqs[i][t];
    mask.index_put_({i, torch::indexing::Slice(off, torch::indexing::None)}, 1);
  }
  ForwardArgs args;
  args.input_ids = ids.to(model->device);
  args.attention_mask = mask.to(model->device);
  args.position_ids = (mask.cumsum(1) - 1).clamp_min(0).to(model->device);
  auto logp = torch::log_softmax(model->forward(args), -1).to(torch::kCPU);  // [N, T, V]
  int64_t best = 0;
  double best_lp = -1e300;
  for (int64_t i = 0; i < n_options; ++i) {
    int64_t off = static_cast<int64_t>(T - seqs[i].size());
    double lp = 0;
    for (size_t t = answer_start[i]; t < seqs[i].size(); ++t)
      lp += logp[i][off + static_cast<int64_t>(t) - 1][seqs[i][t]].item<double>();
    if (lp > best_lp) best_lp = lp, best = i;
  }
  return std::string("Answer: The answer is ") + letters[best] + ".";
}

int64_t option_count(const Row& row) {
  if (row.contains("choices") && row["choices"].is_array() && !row["choices"].empty())
    return static_cast<int64_t>(row["choices"].size());
  // Otherwise count "(A) ", "(B) ", ... in the instruction.
  std::string ins = row.value("instruction", std::string());
  int64_t n = 0;
  while (n < 26 && ins.find(std::string("(") + char('A' + n) + ") ") != std::string::npos) ++n;
  if (n == 0) throw std::runtime_error("--scoring logprob needs a 'choices' column or (A) options in the instruction");
  return n;
}

class Progress {
 public:
  Progress(int64_t total, bool quiet) : total_(total), quiet_(quiet), tty_(isatty(STDERR_FILENO)) {
    start_ = std::chrono::steady_clock::now();
  }
  void update(int64_t done, int64_t correct) {
    if (quiet_) return;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    double acc = done ? 100.0 * correct / done : 0.0;
    char line[256];
    if (tty_) {
      int width = 30, filled = total_ ? static_cast<int>(width * done / total_) : width;
      std::string bar(filled, '#');
      bar += std::string(width - filled, '.');
      double eta = done ? secs / done * (total_ - done) : 0;
      std::snprintf(line, sizeof line, "\r[%s] %lld/%lld  acc %.2f%%  %.1f ex/s  eta %.0fs", bar.c_str(),
                    (long long)done, (long long)total_, acc, done / std::max(secs, 1e-9), eta);
      std::cerr << line << (done == total_ ? "\n" : "") << std::flush;
    } else {
      std::snprintf(line, sizeof line, "%lld/%lld examples, acc %.2f%%, %.1f ex/s", (long long)done,
                    (long long)total_, acc, done / std::max(secs, 1e-9));
      std::cerr << line << "\n";
    }
  }

 private:
  int64_t total_;
  bool quiet_, tty_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

namespace {

// The part of an evaluation already done: answers per example, generated texts, and the tally.
struct EvalProgress {
  nlohmann::ordered_json results = nlohmann::ordered_json::array(), outputs = nlohmann::ordered_json::array();
  std::vector<bool> ok;
  int64_t correct = 0;

  // The next texts.size() examples' generated texts, against their gold answers.
  void record(const std::vector<std::string>& texts, const std::vector<std::string>& answers) {
    for (const auto& text : texts) {
      auto m = find_answers(text);
      const bool good = pick_answer(m) == answers[results.size()];
      correct += good;
      ok.push_back(good);
      results.push_back(m);
      outputs.push_back(text);
    }
  }
  // The result file's content so far (evaluation_scienceqa.py's keys, then ours).
  nlohmann::ordered_json to_json(const std::vector<Row>& rows, const EvalRouterStats* router_stats) const {
    const size_t n = results.size();
    nlohmann::ordered_json data;
    data["acc"] = n ? static_cast<double>(correct) / static_cast<double>(n) * 100.0 : 0.0;
    data["correct"] = correct;
    data["len"] = static_cast<int64_t>(n);
    data["results"] = results;
    data["outputs"] = outputs;
    data["by_group"] = group_accuracy(rows, ok);
    if (router_stats) data["router_stats"] = router_stats->to_json();
    return data;
  }
};

// A result file written by an earlier run (ours or the reference's), checked before it is trusted.
EvalProgress read_resume_file(const std::string& path, const std::vector<std::string>& answers, bool quiet) {
  EvalProgress p;
  try {
    std::ifstream f(path);
    nlohmann::ordered_json saved = nlohmann::ordered_json::parse(f);
    p.results = saved.at("results");
    p.outputs = saved.at("outputs");
    if (!p.results.is_array() || !p.outputs.is_array()) throw std::runtime_error("\"results\" and \"outputs\" must be lists");
    for (const auto& r : p.results) {
      if (!r.is_array()) throw std::runtime_error("each of \"results\" must be a list of answer letters");
      for (const auto& x : r)
        if (!x.is_string()) throw std::runtime_error("each of \"results\" must be a list of answer letters, got " + r.dump());
    }
    for (const auto& o : p.outputs)
      if (!o.is_string()) throw std::runtime_error("each of \"outputs\" must be a string");
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": cannot resume from it: " + e.what());
  }
  if (p.results.size() != p.outputs.size() || p.results.size() > answers.size())
    throw std::runtime_error(path + ": cannot resume: it holds " + std::to_string(p.results.size()) +
                             " results for a dataset of " + std::to_string(answers.size()) + " rows");
  for (size_t i = 0; i < p.results.size(); ++i) {
    std::vector<std::string> m;
    for (auto& x : p.results[i]) m.push_back(x.get<std::string>());
    const bool good = pick_answer(m) == answers[i];
    p.ok.push_back(good);
    p.correct += good;
  }
  if (!quiet) std::cerr << "resuming after " << p.results.size() << " examples from " << path << "\n";
  return p;
}

// Greedy responses to prompts[start, end) in one batch, decoded as transformers returns the sequences
// (left pads, prompt, new tokens, pads after an early EOS) and cut to the template's response.
std::vector<std::string> generate_responses(LlamaForCausalLM& model, const Tokenizer& tok, const PromptTemplate& tmpl,
                                            const std::vector<std::string>& prompts, size_t start, size_t end,
                                            int64_t max_new_tokens) {
  std::vector<std::vector<int64_t>> ids;
  for (size_t i = start; i < end; ++i) ids.push_back(tok.encode(prompts[i]));
  GenerateOptions g;
  g.max_new_tokens = max_new_tokens;
  g.temperature = 0;
  g.pad_id = 0;
  g.stop_ids = tok.eos_ids();  // every EOS of generation_config.json (LLaMA-3.1: end_of_text, eom, eot)
  GenerateOutput out = generate(model, ids, g);
  auto seqs = out.sequences.to(torch::kCPU).contiguous();
  std::vector<std::string> texts;
  for (int64_t r = 0; r < seqs.size(0); ++r) {
    const int64_t* p = seqs[r].data_ptr<int64_t>();
    texts.push_back(tmpl.get_response(tok.decode_hf(std::vector<int64_t>(p, p + seqs.size(1)))));
  }
  return texts;
}

// The base model with its adapter (ours, mola_config.json, or the reference's folder, whose allocation
// comes from its files; flags that are given must agree), in eval mode with the routing flags applied.
std::pair<Tokenizer, LlamaForCausalLM> open_eval_model(const EvalOptions& opt) {
  ModelSource src = open_model_source(opt.base_model);
  AdapterSpec spec;
  spec.weights_dir = opt.mola_weights;
  spec.given = given_flags(opt.allocation);
  spec.given->default_top_k = 2;  // evaluation_scienceqa.py's --top_k default, "2,2,...,2"
  Tokenizer tok = src.tokenizer;
  OpenedModel opened = load_model(std::move(src), RuntimeOptions{opt.device, opt.dtype, opt.threads}, spec);
  LlamaForCausalLM model = opened.model;
  opt.routing.apply_given(model);
  model->eval();
  return {std::move(tok), model};
}

}  // namespace

EvalSummary evaluate_scienceqa(const EvalOptions& opt) {
  if (opt.batch_size < 1) throw std::runtime_error("--batch_size must be at least 1");
  if (opt.save_every < 1) throw std::runtime_error("--save_every must be at least 1");
  if (opt.max_new_tokens < 1) throw std::runtime_error("--max_new_tokens must be at least 1");
  if (opt.scoring != "generate" && opt.scoring != "logprob")
    throw std::runtime_error("--scoring must be generate or logprob, not '" + opt.scoring + "'");
  std::vector<Row> rows = load_test_rows(opt.test_dataset);
  if (rows.empty()) throw std::runtime_error(opt.test_dataset + ": no examples to evaluate");
  if (opt.limit > 0 && static_cast<size_t>(opt.limit) < rows.size()) rows.resize(opt.limit);
  std::vector<std::string> answers;
  std::vector<std::string> prompts;
  PromptTemplate tmpl = PromptTemplate::from_name_or_file(opt.prompt_template);
  for (size_t i = 0; i < rows.size(); ++i) {
    answers.push_back(row_string(rows[i], "answer", opt.test_dataset, i, true));
    prompts.push_back(tmpl.generate_prompt(row_string(rows[i], "instruction", opt.test_dataset, i, true),
                                           row_string(rows[i], "input", opt.test_dataset, i, false)));
  }

  // Resume from the saved result file: the first `len` examples are done.
  EvalProgress done;
  if (opt.resume && fs::exists(opt.save_path)) done = read_resume_file(opt.save_path, answers, opt.quiet);

  const auto tok_model = open_eval_model(opt);
  const Tokenizer& tok = tok_model.first;
  LlamaForCausalLM model = tok_model.second;
  torch::NoGradGuard no_grad;
  std::unique_ptr<EvalRouterStats> router_stats;
  if (opt.router_stats) router_stats = std::make_unique<EvalRouterStats>(model, rows);

  Progress progress(static_cast<int64_t>(rows.size()), opt.quiet);
  const auto save_every = static_cast<size_t>(opt.save_every);
  for (size_t start = done.results.size(); start < rows.size();) {
    size_t end = std::min(rows.size(), start + static_cast<size_t>(opt.batch_size));
    std::vector<std::string> texts;
    if (router_stats) {
      std::vector<std::vector<int64_t>> prompt_ids;
      for (size_t i = start; i < end; ++i) prompt_ids.push_back(tok.encode(prompts[i]));
      router_stats->add(model, start, prompt_ids);
    }
    if (opt.scoring == "logprob") {
      for (size_t i = start; i < end; ++i) texts.push_back(score_by_logprob(model, tok, prompts[i], option_count(rows[i])));
    } else {
      texts = generate_responses(model, tok, tmpl, prompts, start, end, opt.max_new_tokens);
    }
    done.record(texts, answers);
    progress.update(static_cast<int64_t>(end), done.correct);
    if (end / save_every > start / save_every || end == rows.size())
      write_result_file(opt.save_path, done.to_json(rows, router_stats.get()));
    start = end;
  }

  EvalSummary s;
  s.len = static_cast<int64_t>(done.results.size());
  s.correct = done.correct;
  s.acc = s.len ? 100.0 * static_cast<double>(done.correct) / static_cast<double>(s.len) : 0.0;
  s.by_group = group_accuracy(rows, done.ok);
  return s;
}

}  // namespace mor
