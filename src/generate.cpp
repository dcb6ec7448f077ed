// Batched generation with the KV cache (see generate.h).
#include "generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <stdexcept>

namespace mor {

std::pair<torch::Tensor, torch::Tensor> left_pad(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id) {
  const int64_t B = prompts.size();
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max<int64_t>(P, p.size());
  auto ids = torch::full({B, P}, pad_id, torch::kLong);
  auto mask = torch::zeros({B, P}, torch::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t off = P - static_cast<int64_t>(prompts[b].size());
    for (size_t t = 0; t < prompts[b].size(); ++t) {
      ia[b][off + t] = prompts[b][t];
      ma[b][off + t] = 1;
    }
  }
  return {ids, mask};
}

torch::Tensor positions_from_mask(const torch::Tensor& mask) {
  auto pos = mask.to(torch::kLong).cumsum(-1) - 1;
  return pos.masked_fill(mask == 0, 1);
}

GenState prefill(LlamaForCausalLM& m, const torch::Tensor& ids, const torch::Tensor& mask, int64_t capacity) {
  torch::NoGradGuard ng;
  GenState st;
  const int64_t B = ids.size(0);
  st.cache = m->make_cache(B, capacity);
  st.attention_mask = mask.to(m->device, torch::kLong);
  st.rows = torch::arange(B, torch::kLong);
  ForwardArgs a;
  a.input_ids = ids.to(m->device);
  a.attention_mask = st.attention_mask;
  a.position_ids = positions_from_mask(st.attention_mask);
  a.cache = &st.cache;
  a.last_only = true;
  st.logits = m->forward(a).select(1, 0);
  return st;
}

torch::Tensor decode_one(LlamaForCausalLM& m, GenState& st, const torch::Tensor& next) {
  torch::NoGradGuard ng;
  const int64_t B = next.size(0);
  auto ones = torch::ones({B, 1}, st.attention_mask.options());
  st.attention_mask = torch::cat({st.attention_mask, ones}, 1);
  ForwardArgs a;
  a.input_ids = next.to(m->device).view({B, 1});
  a.attention_mask = st.attention_mask;
  a.position_ids = (st.attention_mask.sum(1, /*keepdim=*/true) - 1);  // cumsum-1 at the last (real) position
  a.cache = &st.cache;
  st.logits = m->forward(a).select(1, 0);
  return st.logits;
}

void keep_rows(GenState& st, const torch::Tensor& keep) {
  auto k = keep.to(st.attention_mask.device());
  st.cache.select_rows(k);
  st.attention_mask = st.attention_mask.index_select(0, k);
  st.rows = st.rows.index_select(0, keep.cpu());
  st.logits = st.logits.index_select(0, k);
}

torch::Tensor select_next(const torch::Tensor& logits_in, const GenerateOptions& o, at::Generator& gen) {
  if (o.temperature <= 0) return logits_in.argmax(-1).cpu();
  auto logits = logits_in.to(torch::kCPU, torch::kFloat32) / o.temperature;
  const double neg = -std::numeric_limits<float>::infinity();
  const int64_t V = logits.size(-1);
  if (o.top_k > 0 && o.top_k < V) {  // TopKLogitsWarper
    auto kth = std::get<0>(logits.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
    logits = logits.masked_fill(logits < kth, neg);
  }
  if (o.top_p < 1.0) {  // TopPLogitsWarper: drop the low tail whose mass is <= 1 - top_p, keep >= 1 token
    auto sorted = logits.sort(-1, /*descending=*/false);
    auto sl = std::get<0>(sorted), si = std::get<1>(sorted);
    auto cum = sl.softmax(-1).cumsum(-1);
    auto remove = cum <= (1.0 - o.top_p);
    remove.select(-1, V - 1).fill_(false);
    logits = logits.masked_fill(remove.scatter(-1, si, remove), neg);
  }
  auto probs = logits.softmax(-1);
  return torch::multinomial(probs, 1, /*replacement=*/false, gen).squeeze(-1);
}

GenerateOutput generate(LlamaForCausalLM& m, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& o) {
  torch::NoGradGuard ng;
  if (prompts.empty()) throw std::runtime_error("generate: no prompts");
  for (const auto& p : prompts)
    if (p.empty()) throw std::runtime_error("generate: empty prompt (encode at least BOS)");
  if (o.max_new_tokens < 0) throw std::runtime_error("generate: max_new_tokens must be >= 0");
  if (o.top_p <= 0 || o.top_p > 1) throw std::runtime_error("generate: top_p must be in (0, 1]");
  std::vector<int64_t> stop = o.stop_ids.empty() ? std::vector<int64_t>{m->cfg.eos_token_id} : o.stop_ids;
  auto [ids, mask] = left_pad(prompts, o.pad_id);
  const int64_t B = ids.size(0), P = ids.size(1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);

  GenerateOutput out;
  out.prompt_len = P;
  out.new_tokens.assign(B, {});
  if (o.max_new_tokens == 0) {
    out.sequences = ids;
    return out;
  }
  auto stopped = [&](int64_t t) { return std::find(stop.begin(), stop.end(), t) != stop.end(); };

  if (o.use_cache) {
    GenState st = prefill(m, ids, mask, P + o.max_new_tokens);
    for (int64_t step = 0; step < o.max_new_tokens; ++step) {
      auto next = select_next(st.logits, o, gen);  // [B'] on CPU
      auto na = next.accessor<int64_t, 1>();
      auto ra = st.rows.accessor<int64_t, 1>();
      std::vector<int64_t> keep;
      for (int64_t i = 0; i < next.size(0); ++i) {
        out.new_tokens[ra[i]].push_back(na[i]);
        if (!stopped(na[i])) keep.push_back(i);
      }
      if (keep.empty() || step + 1 == o.max_new_tokens) break;
      if (static_cast<int64_t>(keep.size()) < next.size(0)) {
        auto kt = torch::tensor(keep, torch::kLong);
        keep_rows(st, kt);
        next = next.index_select(0, kt);
      }
      decode_one(m, st, next);
    }
  } else {
    // Reference path: the whole sequence every step, same masks and positions, no cache.
    std::vector<bool> done(B, false);
    auto cur = ids.clone(), cmask = mask.clone();
    for (int64_t step = 0; step < o.max_new_tokens; ++step) {
      ForwardArgs a;
      a.input_ids = cur.to(m->device);
      a.attention_mask = cmask.to(m->device);
      a.position_ids = positions_from_mask(a.attention_mask);
      a.last_only = true;
      auto next = select_next(m->forward(a).select(1, 0), o, gen);
      auto na = next.accessor<int64_t, 1>();
      bool any = false;
      for (int64_t b = 0; b < B; ++b) {
        if (done[b]) { na[b] = o.pad_id; continue; }
        out.new_tokens[b].push_back(na[b]);
        if (stopped(na[b])) done[b] = true;
        else any = true;
      }
      if (!any) break;
      cur = torch::cat({cur, next.view({B, 1})}, 1);
      cmask = torch::cat({cmask, torch::ones({B, 1}, torch::kLong)}, 1);
    }
  }
  int64_t L = 0;
  for (const auto& t : out.new_tokens) L = std::max<int64_t>(L, t.size());
  out.sequences = torch::cat({ids, torch::full({B, L}, o.pad_id, torch::kLong)}, 1);
  auto sa = out.sequences.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b)
    for (size_t t = 0; t < out.new_tokens[b].size(); ++t) sa[b][P + t] = out.new_tokens[b][t];
  return out;
}

}  // namespace mor
