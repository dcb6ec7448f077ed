// The pure pieces of `mor train` (see trainer.h): learning-rate schedule, seeded permutations, the
// validation split, length-grouped order, the step plan, the micro-batch sampler. The step is in
// train_step.cpp, the recipe (class Trainer) in recipe.cpp.
#include "trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <stdexcept>

namespace fs = std::filesystem;

namespace mor {

double lr_factor(int64_t s, int64_t warmup, int64_t total) {
  if (s < warmup) return static_cast<double>(s) / static_cast<double>(std::max<int64_t>(1, warmup));
  return std::max(0.0, static_cast<double>(total - s) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
// Unbiased integer in [0, n) by rejection (no std distribution: those differ between standard libraries).
uint64_t below(uint64_t& state, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t r;
  do r = splitmix64(state); while (r >= limit);
  return r % n;
}
}  // namespace

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[below(state, static_cast<uint64_t>(i) + 1)]);
  return p;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> split_train_val(int64_t n, double val_set_size, uint64_t seed) {
  if (val_set_size < 0) throw std::runtime_error("--val_set_size must be >= 0, got " + std::to_string(val_set_size));
  int64_t n_val = 0;
  if (val_set_size >= 1) {
    if (val_set_size != std::floor(val_set_size))
      throw std::runtime_error("--val_set_size " + std::to_string(val_set_size) +
                               ": a count must be an integer (use a value below 1 for a fraction)");
    n_val = static_cast<int64_t>(val_set_size);
  } else if (val_set_size > 0) {
    n_val = static_cast<int64_t>(std::ceil(val_set_size * static_cast<double>(n)));
  }
  if (n_val >= n)
    throw std::runtime_error("--val_set_size " + std::to_string(n_val) + " leaves no training examples (dataset has " +
                             std::to_string(n) + ")");
  std::vector<int64_t> perm = seeded_permutation(n, seed);
  std::vector<int64_t> val(perm.begin(), perm.begin() + n_val), train(perm.begin() + n_val, perm.end());
  return {train, val};
}

std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& perm, const std::vector<int64_t>& lengths,
                                          int64_t mb) {
  const int64_t n = static_cast<int64_t>(perm.size());
  int64_t mult = std::min<int64_t>(n / (mb * 4), 50);
  if (mult == 0) mult = 1;
  const int64_t mega = mult * mb;
  std::vector<std::vector<int64_t>> megabatches;
  for (int64_t i = 0; i < n; i += mega) {
    std::vector<int64_t> m(perm.begin() + i, perm.begin() + std::min(n, i + mega));
    std::stable_sort(m.begin(), m.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
    megabatches.push_back(std::move(m));
  }
  if (megabatches.empty()) return {};
  size_t max_idx = 0;  // first megabatch holding the longest head (torch.argmax picks the first)
  for (size_t i = 1; i < megabatches.size(); ++i)
    if (lengths[megabatches[i][0]] > lengths[megabatches[max_idx][0]]) max_idx = i;
  std::swap(megabatches[0][0], megabatches[max_idx][0]);
  std::vector<int64_t> out;
  out.reserve(n);
  for (auto& m : megabatches) out.insert(out.end(), m.begin(), m.end());
  return out;
}

std::vector<int64_t> epoch_order(int64_t epoch, uint64_t seed, const std::vector<int64_t>& lengths, int64_t mb,
                                 bool group_by_length) {
  auto perm = seeded_permutation(static_cast<int64_t>(lengths.size()),
                                 seed * 0x2545F4914F6CDD1DULL + static_cast<uint64_t>(epoch) + 1);
  return group_by_length ? length_grouped_order(perm, lengths, mb) : perm;
}

StepPlan plan_steps(int64_t n_train, int64_t mb, int64_t accum) {
  StepPlan p;
  p.accum = accum;
  p.n_micro = (n_train + mb - 1) / mb;  // the DataLoader keeps a short last micro-batch
  if (p.n_micro < accum) {
    p.steps_per_epoch = 1;  // the Trainer steps at the end of an epoch shorter than one accumulation
    p.micro_per_step = p.n_micro;
    p.dropped = 0;
  } else {
    p.steps_per_epoch = p.n_micro / accum;
    p.micro_per_step = accum;
    p.dropped = p.n_micro % accum;
  }
  return p;
}

int64_t shard_size(int64_t n, int64_t world) { return world <= 1 ? n : (n + world - 1) / world; }

MicroBatchSampler::MicroBatchSampler(const std::vector<int64_t>& order, const StepPlan& plan, int64_t mb, int64_t rank,
                                     int64_t world)
    : plan_(plan), micro_batch_size_(mb) {
  if (world <= 1) {
    shard_ = order;
    return;
  }
  const int64_t n = static_cast<int64_t>(order.size()), total = shard_size(n, world) * world;
  for (int64_t i = rank; i < total; i += world) shard_.push_back(order[i % n]);
}

std::vector<int64_t> MicroBatchSampler::batch(int64_t step_in_epoch, int64_t m) const {
  const int64_t mi = step_in_epoch * plan_.micro_per_step + m, n = static_cast<int64_t>(shard_.size());
  const int64_t begin = std::min(n, mi * micro_batch_size_), end = std::min(n, (mi + 1) * micro_batch_size_);
  return std::vector<int64_t>(shard_.begin() + begin, shard_.begin() + end);
}

std::vector<torch::Tensor> param_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  std::vector<torch::Tensor> out;
  out.reserve(named.size());
  for (const auto& kv : named) out.push_back(kv.second);
  return out;
}

std::string latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "";
  static const std::regex re("checkpoint-([0-9]+)");
  int64_t best = -1;
  std::string best_path;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, re)) {
      int64_t n = std::stoll(m[1]);
      if (n > best) { best = n; best_path = e.path().string(); }
    }
  }
  return best_path;
}

}  // namespace mor
