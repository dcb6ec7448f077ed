// Per-category time breakdown, from LibTorch's (legacy, CPU) profiler, of one prefill (B=8, T=200)
// and one decode step (B=1 and 8) of the hidden-1024 x 8-layer model, base and MoLA 2,2,4,4,6,6,8,8
// top-2; and one training step of the hidden-2048 x 6-layer model (4 x 256 tokens, bf16) base-only,
// plain LoRA r8 (one expert) and MoLA 2,2,4,4,6,8 top-2, both with dropout 0.05. Each op's self time
// (its time minus its children's) goes to one category, chosen from its name and input shapes:
//   base GEMM (mm/addmm(_)/mor::gemv with both weight dims > 128), adapter GEMM (a dim <= 128),
//   projections (gemv_group: decode's fused q/k/v, gate/up or single projections, base rows plus
//   any adapter's), attention (bmm,
//   softmax over > 16 columns, mask fill, fused attention kernels), logits/loss (GEMMs with a vocab
//   dim, log_softmax, nll; the chunked loss's own gathers/exps/scatters), routing (topk, scatter,
//   softmax over <= 16 columns), norms/elementwise, casts/copies, allocation, dropout (RNG, the masked
//   scaled copy, the adapter GEMM's sparse corrections), optimizer (anything under the optimizer step), and
//   "outside ops" = wall time minus the top-level ops (C++ glue, dispatch; OpenMP barrier time is
//   inside the ops, see the 1-vs-2-thread figure). Percentages are of the wall time of the same run.
// Usage: bench_profile [--threads 2] [--what prefill,decode,train] [--reps 3] [--top 12] [--chains 0]
// (--chains N: also the N costliest fill_/zero_/copy_ call chains, with their nearest enclosing ops;
// --chain-ops a,b: follow those ops instead, e.g. aten::mul,aten::mm)
#include <torch/csrc/autograd/profiler_legacy.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "adapter.h"
#include "allocation.h"
#include "bench_common.h"
#include "cli.h"
#include "generate.h"
#include "llama.h"
#include "trainer.h"

using namespace mor;
using bench::Clock;
using bench::seconds_since;
namespace prof = torch::autograd::profiler;

namespace {

const int64_t kVocab = 32000;

bool has(const std::string& n, const char* s) { return n.find(s) != std::string::npos; }

std::string category_of_op(const std::string& n, const std::vector<std::vector<int64_t>>& shapes);

// Inside the chunked loss (its forward scope and backward node) the gathers, exps, scales and
// scatters are the loss's own work, as log_softmax(_backward) and nll_loss are on the reference path;
// copies and allocations keep their categories, so both paths count those alike.
std::string category(const std::string& n, const std::vector<std::vector<int64_t>>& shapes, bool in_optimizer,
                     bool in_loss) {
  if (in_optimizer) return "optimizer";
  if (has(n, "mor::lm_loss") || has(n, "ChunkedLmLoss")) return "logits/loss";
  std::string c = category_of_op(n, shapes);
  if (in_loss && c != "casts/copies" && c != "allocation") return "logits/loss";
  return c;
}

std::string category_of_op(const std::string& n, const std::vector<std::vector<int64_t>>& shapes) {
  auto dims_of = [&](size_t i) { return i < shapes.size() ? shapes[i] : std::vector<int64_t>{}; };
  if (n == "aten::mm" || n == "aten::addmm" || n == "aten::addmm_") {  // addmm(_): self, mat1, mat2
    auto a = dims_of(n == "aten::mm" ? 0 : 1), b = dims_of(n == "aten::mm" ? 1 : 2);
    if (a.size() == 2 && b.size() == 2) {
      if (a[0] == kVocab || a[1] == kVocab || b[1] == kVocab) return "logits/loss";
      if (a[1] <= 128 || b[1] <= 128) return "adapter GEMM";
    }
    return "base GEMM";
  }
  if (n == "mor::gemv") {  // gemv.h: x [M, K], W [N, K]
    auto x = dims_of(0), w = dims_of(1);
    if (w.size() == 2 && w[0] == kVocab) return "logits/loss";
    if (x.size() == 2 && w.size() == 2 && (x[1] <= 128 || w[0] <= 128)) return "adapter GEMM";
    return "base GEMM";
  }
  if (n == "mor::low_rank") return "adapter GEMM";  // gemv.h's B update of decode rows
  // gemv.h's decode projections in one parallel region: the base rows, and with MoLA also the
  // router/A rows, gates and B updates, which no longer have ops of their own
  if (n == "mor::gemv_group") return "projections (gemv_group)";
  if (n == "aten::bmm" || n == "aten::baddbmm" || has(n, "mor::attn") || has(n, "SoftmaxBackward") || n == "aten::masked_fill_" ||
      n == "aten::masked_fill")
    return "attention";
  if (n == "aten::_softmax" || n == "aten::softmax" || n == "aten::_softmax_backward_data") {
    auto a = dims_of(0);
    return !a.empty() && a.back() <= 16 ? "routing" : "attention";
  }
  if (has(n, "log_softmax") || has(n, "nll_loss") || has(n, "cross_entropy")) return "logits/loss";
  if (has(n, "topk") || has(n, "scatter") || has(n, "sort") || has(n, "mor::route") || has(n, "one_hot")) return "routing";
  // aten::random_ is randint's draw; the adapter GEMM's own time (its GEMMs are child ops) is the
  // dropout's sparse correction: the drawn positions' sets, the forward h and the grad x / grad A fixes.
  if (has(n, "poisson") || has(n, "randint") || has(n, "bernoulli") || has(n, "dropout") || has(n, "index_fill") ||
      n == "aten::random_" || has(n, "mor::adapter_input_gemm"))
    return "dropout";
  if (n == "aten::to" || n == "aten::_to_copy" || n == "aten::copy_" || n == "aten::clone" || n == "aten::contiguous" ||
      n == "aten::cat" || n == "aten::index_select" || n == "aten::embedding" || n == "aten::index")
    return "casts/copies";
  if (n == "aten::empty" || n == "aten::empty_strided" || n == "aten::zeros" || n == "aten::ones" || n == "aten::full" ||
      n == "aten::zero_" || n == "aten::fill_" || n == "aten::empty_like" || n == "aten::zeros_like" ||
      n == "aten::resize_")
    return "allocation";
  if (has(n, "mor::rms") || has(n, "mor::silu") || has(n, "mor::rope")) return "norms/elementwise";
  if (has(n, "Backward") || has(n, "backward")) return "autograd nodes";
  return "norms/elementwise";
}

struct Profile {
  double wall_s = 0;
  std::map<std::string, double> cat_us;  // self time per category
  std::map<std::string, std::pair<double, int64_t>> op_us;  // self time and calls per op name
  // Fills and copies by their enclosing ops ("SliceBackward0 > aten::zeros > aten::fill_ [4,256,2048]"):
  // where the zero fills and casts come from.
  std::map<std::string, std::pair<double, int64_t>> chain_us;
};

// --chain-ops: the ops --chains follows
std::set<std::string> g_chain_ops = {"aten::fill_", "aten::zero_", "aten::copy_"};

bool chained(const std::string& n) { return g_chain_ops.count(n) > 0; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

// Runs `f` once under the profiler and attributes every op's self time.
Profile profile(const std::function<void()>& f) {
  Profile p;
  torch::profiler::impl::ProfilerConfig cfg(torch::profiler::impl::ProfilerState::CPU, /*report_input_shapes=*/true);
  prof::thread_event_lists lists;
  {
    prof::TLSLegacyProfilerGuard g(cfg, [&](const prof::thread_event_lists& l) { lists = l; });
    auto t = Clock::now();
    f();
    p.wall_s = seconds_since(t);
  }
  double top_us = 0;
  for (const auto& list : lists) {
    struct Open {
      const prof::LegacyEvent* ev;
      double child_us;
      bool opt, loss;
    };
    std::vector<Open> stack;
    for (const auto& e : list) {
      if (e.kind() == prof::EventKind::PushRange) {
        const std::string name = e.name();
        const bool opt = (!stack.empty() && stack.back().opt) || name == "mor::optimizer_step";
        const bool loss = (!stack.empty() && stack.back().loss) || has(name, "mor::lm_loss") || has(name, "ChunkedLmLoss");
        stack.push_back({&e, 0.0, opt, loss});
      } else if (e.kind() == prof::EventKind::PopRange && !stack.empty()) {
        Open o = stack.back();
        stack.pop_back();
        const double us = o.ev->cpuElapsedUs(e);
        const std::string name = o.ev->name();
        if (stack.empty()) top_us += us;
        else stack.back().child_us += us;
        if (name == "mor::optimizer_step") continue;  // a scope, not an op
        const double self = us - o.child_us;
        p.cat_us[category(name, o.ev->shapes(), o.opt, o.loss)] += self;
        p.op_us[name].first += self;
        p.op_us[name].second += 1;
        if (chained(name)) {
          std::string c;
          const size_t from = stack.size() > 4 ? stack.size() - 4 : 0;  // the nearest four ancestors
          for (size_t i = from; i < stack.size(); ++i) c += std::string(stack[i].ev->name()) + " > ";
          const auto shapes = o.ev->shapes();
          c += name + " " + (shapes.empty() ? "[]" : shape_str(shapes[0]));
          p.chain_us[c].first += self;
          p.chain_us[c].second += 1;
        }
      }
    }
  }
  p.cat_us["outside ops"] = std::max(0.0, p.wall_s * 1e6 - top_us);
  return p;
}

void print_chains(const Profile& p, int top) {
  std::vector<std::pair<double, std::string>> cs;
  for (const auto& [k, v] : p.chain_us) cs.push_back({v.first, k + " x" + std::to_string(v.second)});
  std::sort(cs.rbegin(), cs.rend());
  std::string ops;
  for (const auto& o : g_chain_ops) ops += (ops.empty() ? "" : ",") + o;
  std::printf("  %s by caller:\n", ops.c_str());
  for (int i = 0; i < top && i < static_cast<int>(cs.size()); ++i)
    std::printf("    %8.2f ms  %s\n", cs[i].first / 1e3, cs[i].second.c_str());
}

int g_chains = 0;  // --chains N: print the top N fill/copy call chains

void print_profile(const std::string& title, const Profile& p, int top) {
  std::printf("\n== %s: wall %.1f ms (under the profiler)\n", title.c_str(), p.wall_s * 1e3);
  std::vector<std::pair<double, std::string>> cats;
  for (const auto& [k, v] : p.cat_us) cats.push_back({v, k});
  std::sort(cats.rbegin(), cats.rend());
  for (const auto& [v, k] : cats) std::printf("  %-20s %9.2f ms  %5.1f%%\n", k.c_str(), v / 1e3, 100.0 * v / (p.wall_s * 1e6));
  std::vector<std::pair<double, std::string>> ops;
  for (const auto& [k, v] : p.op_us) ops.push_back({v.first, k + " x" + std::to_string(v.second)});
  std::sort(ops.rbegin(), ops.rend());
  std::printf("  top ops by self time:\n");
  for (int i = 0; i < top && i < static_cast<int>(ops.size()); ++i)
    std::printf("    %-44s %9.2f ms  %5.1f%%\n", ops[i].second.c_str(), ops[i].first / 1e3, 100.0 * ops[i].first / (p.wall_s * 1e6));
  if (g_chains > 0) print_chains(p, g_chains);
}

LlamaForCausalLM eval_model(bool adapters) {
  ModelConfig cfg = ModelConfig::llama(1024, 2816, 8, 16, 4, kVocab);
  auto m = random_llama(cfg, 1, parse_dtype("auto", torch::kCPU), torch::kCPU);
  if (adapters) {
    auto alloc = Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                        "2,2,4,4,6,6,8,8", "8", "2", 16.0, 0.05);
    attach_adapters(m, alloc, 1);
    for (auto& [name, p] : trainable_params(m))
      if (name.find("lora_B") != std::string::npos) p.detach().normal_(0.0, 0.01);
  }
  m->eval();
  return m;
}

// The median-wall profile of `reps` runs (after one unprofiled warm-up).
Profile median_profile(const std::function<void()>& f, int reps) {
  f();
  std::vector<Profile> ps;
  for (int i = 0; i < reps; ++i) ps.push_back(profile(f));
  std::sort(ps.begin(), ps.end(), [](const Profile& a, const Profile& b) { return a.wall_s < b.wall_s; });
  return ps[ps.size() / 2];
}

void profile_eval(const std::string& what, int reps, int top) {
  torch::NoGradGuard ng;
  std::mt19937_64 rng(7);
  for (bool adapters : {false, true}) {
    auto m = eval_model(adapters);
    const std::string tag = adapters ? "MoLA 2,2,4,4,6,6,8,8 top-2" : "base";
    if (has(what, "prefill")) {
      auto ids = torch::randint(3, kVocab, {8, 200}, torch::kLong);
      auto mask = torch::ones({8, 200}, torch::kLong);
      auto p = median_profile([&] { prefill(m, ids, mask, 264); }, reps);
      print_profile("prefill B=8 T=200, " + tag, p, top);
    }
    if (has(what, "decode")) {
      for (int64_t B : {1, 8}) {
        auto ids = torch::randint(3, kVocab, {B, 200}, torch::kLong);
        GenState st = prefill(m, ids, torch::ones({B, 200}, torch::kLong), 200 + 64);
        auto next = st.logits.argmax(-1);
        for (int i = 0; i < 8; ++i) next = decode_one(m, st, next).argmax(-1);  // past the first steps
        auto p = median_profile([&] { next = decode_one(m, st, next).argmax(-1); }, std::max(reps, 5));
        print_profile("decode step B=" + std::to_string(B) + " (S ~ 210), " + tag, p, top);
      }
    }
  }
}

// One training step as bench_train runs it (forward, loss, backward, AdamW) at hidden 2048 x 6 layers.
void profile_train(int reps, int top) {
  ModelConfig cfg = ModelConfig::llama(2048, 5632, 6, 32, 4, kVocab);
  for (std::string which : {"base", "lora", "mola"}) {
    LlamaForCausalLM model(cfg, torch::kBFloat16, torch::kCPU);
    {
      torch::NoGradGuard ng;
      torch::manual_seed(0);
      for (auto& p : model->named_parameters())
        if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
        else p.value().normal_(0.0, 0.02);
    }
    std::vector<torch::Tensor> params;
    if (which == "base") {
      for (auto& p : model->named_parameters())
        if (p.key() == "model.layers.0.input_layernorm.weight") { p.value().set_requires_grad(true); params.push_back(p.value()); }
    } else {
      // lora: plain LoRA r8 as MoLA writes it (one expert, top-1), as bench_train's LoRA configuration.
      const bool lora = which == "lora";
      auto alloc = Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                          lora ? "1" : "2,2,4,4,6,8", "8", lora ? "1" : "2", 16, 0.05);
      attach_adapters(model, alloc, 42);
      params = param_tensors(trainable_params(model));
    }
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(3e-4).weight_decay(0.0));
    model->train();
    auto ids = torch::randint(3, cfg.vocab_size, {4, 256}, torch::kInt64);
    auto mask = torch::ones({4, 256}, torch::kInt64);
    auto step = [&] {
      RouterLogits rl;
      ForwardArgs a;
      a.input_ids = ids;
      a.attention_mask = mask;
      a.router_logits = which == "mola" ? &rl : nullptr;  // lora: no --obalance, as bench_train
      auto loss = forward_loss(model, a, ids, which == "mola").loss;  // train_step's loss path
      loss.backward();
      {
        RECORD_FUNCTION("mor::optimizer_step", std::vector<c10::IValue>());
        opt.step();
        opt.zero_grad();
      }
    };
    auto p = median_profile(step, reps);
    print_profile("training step 4x256, hidden 2048 x 6 layers, " + which, p, top);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 3, top = 12;
  std::string what = "prefill,decode,train";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--what") what = argv[i + 1];
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--top") top = std::atoi(argv[i + 1]);
    else if (a == "--chains") g_chains = std::atoi(argv[i + 1]);
    else if (a == "--chain-ops") {
      g_chain_ops.clear();
      std::stringstream list(argv[i + 1]);
      for (std::string op; std::getline(list, op, ',');)
        if (!op.empty()) g_chain_ops.insert(op);
    }
  }
  set_threads(threads);
  std::printf("bench_profile: threads %d; categories are self time as %% of the wall time of one run (median of %d)\n",
              torch::get_num_threads(), reps);
  if (has(what, "prefill") || has(what, "decode")) profile_eval(what, reps, top);
  if (has(what, "train")) profile_train(reps, top);
  return 0;
}
