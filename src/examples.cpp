// Training examples as the reference builds them (see examples.h): the reference's tokenize() and
// generate_and_tokenize_prompt() from mola_training.py, and DataCollatorForSeq2Seq's left padding.
#include "examples.h"

#include <algorithm>
#include <stdexcept>

namespace mor {

namespace {

// A text column: missing -> error naming it; null -> "" (as `datasets` gives None for an empty cell
// and the prompter treats a falsy input as absent); non-strings -> error.
std::string column_text(const Row& row, const char* name, bool required) {
  if (!row.is_object()) throw std::runtime_error("example is not a JSON object");
  auto it = row.find(name);
  if (it == row.end()) {
    if (!required) return "";
    throw std::runtime_error(std::string("dataset has no '") + name + "' column (needed to build prompts)");
  }
  if (it->is_null()) {
    if (!required) return "";
    throw std::runtime_error(std::string("column '") + name + "' is null in an example");
  }
  if (!it->is_string())
    throw std::runtime_error(std::string("column '") + name + "' must hold strings, got " + it->type_name());
  return it->get<std::string>();
}

// The reference's tokenize(prompt, add_eos_token): BOS + pieces truncated to cutoff_len, then EOS when
// the last token is not EOS, there is room, and add_eos_token.
std::vector<int64_t> tokenize_prompt(const std::string& text, const Tokenizer& tok, int64_t cutoff_len,
                                     bool add_eos_token) {
  std::vector<int64_t> ids = tok.encode(text, /*add_bos=*/true, /*add_eos=*/false);
  if (static_cast<int64_t>(ids.size()) > cutoff_len) ids.resize(cutoff_len);
  if (add_eos_token && !ids.empty() && ids.back() != tok.eos_id() &&
      static_cast<int64_t>(ids.size()) < cutoff_len)
    ids.push_back(tok.eos_id());
  return ids;
}

}  // namespace

TokenizedExample tokenize_example(const Row& row, const Tokenizer& tok, const PromptTemplate& tmpl,
                                  const ExampleOptions& opt) {
  if (opt.cutoff_len < 2) throw std::runtime_error("cutoff_len must be at least 2, got " + std::to_string(opt.cutoff_len));
  const std::string instruction = column_text(row, "instruction", true);
  const std::string output = column_text(row, "output", true);
  const std::string input = column_text(row, "input", false);

  TokenizedExample ex;
  ex.input_ids = tokenize_prompt(tmpl.generate_prompt(instruction, input, output), tok, opt.cutoff_len,
                                 opt.add_eos_token);
  ex.labels = ex.input_ids;
  if (!opt.train_on_inputs) {
    auto user = tokenize_prompt(tmpl.generate_prompt(instruction, input), tok, opt.cutoff_len, opt.add_eos_token);
    int64_t user_len = static_cast<int64_t>(user.size());
    // The reference subtracts 1 whenever add_eos_token, even if no EOS was appended (prompt cut at
    // cutoff_len): one prompt token then stays in the loss. Kept for parity.
    if (opt.add_eos_token) user_len -= 1;
    // [-100]*n + labels[n:]: the reference's list arithmetic lengthens labels when n > len; tokens and
    // labels must stay aligned for the collator, and the extra entries would all be -100 anyway.
    int64_t n = std::min<int64_t>(user_len, static_cast<int64_t>(ex.labels.size()));
    std::fill(ex.labels.begin(), ex.labels.begin() + n, -100);
  }
  return ex;
}

Batch collate(const std::vector<const TokenizedExample*>& examples, int64_t pad_id, int64_t pad_to_multiple_of) {
  if (examples.empty()) throw std::runtime_error("collate: empty micro-batch");
  int64_t longest = 0;
  for (auto* e : examples) longest = std::max<int64_t>(longest, static_cast<int64_t>(e->input_ids.size()));
  int64_t T = longest;
  if (pad_to_multiple_of > 1) T = (T + pad_to_multiple_of - 1) / pad_to_multiple_of * pad_to_multiple_of;
  const int64_t B = static_cast<int64_t>(examples.size());
  auto ids = torch::full({B, T}, pad_id, torch::kInt64);
  auto att = torch::zeros({B, T}, torch::kInt64);
  auto lab = torch::full({B, T}, -100, torch::kInt64);
  auto pi = ids.accessor<int64_t, 2>();
  auto pa = att.accessor<int64_t, 2>();
  auto pl = lab.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& e = *examples[b];
    const int64_t n = static_cast<int64_t>(e.input_ids.size()), off = T - n;  // left padding
    for (int64_t t = 0; t < n; ++t) {
      pi[b][off + t] = e.input_ids[t];
      pa[b][off + t] = 1;
      pl[b][off + t] = t < static_cast<int64_t>(e.labels.size()) ? e.labels[t] : -100;
    }
  }
  return {ids, att, lab};
}

}  // namespace mor
