// Skinny bf16 GEMM y = x W^T at the decode shapes of bench_eval's model (hidden 1024, kv 256,
// intermediate 2816, vocab 32000), M = 1..8 rows: torch::mm (oneDNN) against gemv_bf16 (gemv.h),
// interleaved in rounds on the same cold-ish weights; prints the weight-read GB/s of each and the
// mm/gemv time ratio as medians with the per-round values; and the LoRA B update of decode rows
// (acc += a B^T, rank R 16 and 64, O = 1024 and 2816): addmm_, the row kernel with accumulate
// (gemv_bf16 on B [O, R]) and add_low_rank_nograd_ (the column kernel on B^T), in us per call; and
// q/k/v as one gemv_group call against the separate kernels it replaces (linear_nograd, route_gate_,
// add_low_rank_nograd_ per projection), base-only and with MoLA adapters (8 experts of rank 8, top-2).
// Usage: bench_gemv [--threads 2] [--rounds 7] [--ms 1,2,4,8]
#include <cstdlib>
#include <map>
#include <sstream>

#include "bench_common.h"
#include "cli.h"
#include "gemv.h"
#include "kernels.h"

using namespace mor;
using bench::Clock;
using bench::seconds_since;

namespace {

// The q/k/v projections of one layer copy (hidden 1024, kv 256), with or without MoLA adapters.
struct QkvCopy {
  std::vector<GemvProjection> ps;
  std::vector<torch::Tensor> bs;  // scaled B [O, R] of each adapter (add_low_rank_nograd_'s b)
};

QkvCopy make_qkv(bool adapters, const std::vector<int64_t>* col_expert) {
  QkvCopy c;
  const int64_t E = 8, R = static_cast<int64_t>(col_expert->size());
  for (int64_t O : {1024, 256, 256}) {
    GemvProjection p;
    p.w = torch::randn({O, 1024}).mul_(0.02).to(torch::kBFloat16);
    if (adapters) {
      p.ra = torch::randn({E + R, 1024}).mul_(0.03).to(torch::kBFloat16);
      c.bs.push_back(torch::randn({O, R}).mul_(0.01).to(torch::kBFloat16));
      p.bt = c.bs.back().t().contiguous();
      p.n_expert = E;
      p.top_k = 2;
      p.col_expert = col_expert;
    }
    c.ps.push_back(p);
  }
  return c;
}

// The separate kernels of one copy's projections (mola_infer_forward's path without gemv_group).
void qkv_separate(const torch::Tensor& x, QkvCopy& c) {
  for (size_t i = 0; i < c.ps.size(); ++i) {
    const auto& p = c.ps[i];
    auto y = linear_nograd(x, p.w);
    if (!p.ra.defined()) continue;
    auto h = linear_nograd(x, p.ra);
    route_gate_(h, p.n_expert, p.top_k, *p.col_expert);
    add_low_rank_nograd_(y, h.narrow(1, p.n_expert, h.size(1) - p.n_expert), c.bs[i], p.bt);
  }
}

void group_rounds(const std::vector<int64_t>& ms, int rounds, std::map<std::string, std::vector<double>>& s) {
  std::vector<int64_t> col_expert;
  for (int64_t e = 0; e < 8; ++e) col_expert.insert(col_expert.end(), 8, e);
  const int copies = 16;  // 16 x 3 MB: past the caches
  for (bool adapters : {false, true}) {
    std::vector<QkvCopy> cs;
    for (int c = 0; c < copies; ++c) cs.push_back(make_qkv(adapters, &col_expert));
    for (int r = -1; r < rounds; ++r)
      for (int64_t M : ms) {
        auto x = torch::randn({M, 1024}).to(torch::kBFloat16);
        double t[2] = {0, 0};
        for (int pass = 0; pass < 2; ++pass)
          for (int which : {0, 1}) {  // separate, grouped, alternating
            auto t0 = Clock::now();
            for (auto& c : cs) {
              if (which == 0) qkv_separate(x, c);
              else gemv_group(x, c.ps);
            }
            t[which] += seconds_since(t0) / (2.0 * copies) * 1e6;
          }
        if (r < 0) continue;
        char key[96];
        std::snprintf(key, sizeof key, "q/k/v %s M=%lld", adapters ? "MoLA" : "base", (long long)M);
        s[std::string(key) + " us separate"].push_back(t[0]);
        s[std::string(key) + " us gemv_group"].push_back(t[1]);
        s[std::string(key) + " separate/group time"].push_back(t[0] / t[1]);
      }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 7;
  std::string ms_flag = "1,2,4,8";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--rounds") rounds = std::atoi(argv[i + 1]);
    else if (a == "--ms") ms_flag = argv[i + 1];
  }
  set_threads(threads);
  torch::NoGradGuard ng;
  std::vector<int64_t> ms;
  {
    std::stringstream ss(ms_flag);
    for (std::string t; std::getline(ss, t, ',');) ms.push_back(std::atoll(t.c_str()));
  }
  // [K, N] of q/o, k/v, gate/up, down, lm_head; several copies of each so a pass reads past the caches.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1024, 1024}, {1024, 256}, {1024, 2816}, {2816, 1024}, {1024, 32000}};
  const int copies = 8;
  std::map<std::pair<int64_t, int64_t>, std::vector<torch::Tensor>> ws;
  for (auto s : shapes)
    for (int c = 0; c < copies; ++c) ws[s].push_back(torch::randn({s.second, s.first}).mul_(0.02).to(torch::kBFloat16));
  std::printf("bench_gemv: threads %d, %d rounds, %d weight copies per shape; kernel %s\n", torch::get_num_threads(),
              rounds, copies, gemv_ok(torch::zeros({1, 64}, torch::kBFloat16), ws[shapes[0]][0].narrow(1, 0, 64).contiguous()) ? "on" : "OFF");
  std::map<std::string, std::vector<double>> s;
  for (int r = -1; r < rounds; ++r)
    for (int64_t M : ms)
      for (auto sh : shapes) {
        auto x = torch::randn({M, sh.first}).to(torch::kBFloat16);
        double t_mm = 0, t_gv = 0;
        for (int pass = 0; pass < 2; ++pass) {  // mm, gemv, alternating
          for (int which : {0, 1}) {
            auto t = Clock::now();
            for (auto& w : ws[sh]) {
              auto y = which == 0 ? torch::mm(x, w.t()) : gemv_bf16(x, w);
            }
            (which == 0 ? t_mm : t_gv) += seconds_since(t);
          }
        }
        if (r < 0) continue;
        const double bytes = 2.0 * copies * 2.0 * sh.first * sh.second;
        char key[96];
        std::snprintf(key, sizeof key, "M=%lld K=%lld N=%lld", (long long)M, (long long)sh.first, (long long)sh.second);
        s[std::string(key) + " mm GB/s"].push_back(bytes / t_mm / 1e9);
        s[std::string(key) + " gemv GB/s"].push_back(bytes / t_gv / 1e9);
        s[std::string(key) + " mm/gemv time"].push_back(t_mm / t_gv);
      }
  // The low-rank update: 56 calls a decode step at bench_eval's MoLA shape.
  for (int r = -1; r < rounds; ++r)
    for (int64_t M : ms)
      for (int64_t R : {16, 64})
        for (int64_t O : {1024, 2816}) {
          auto a = torch::randn({M, R}).to(torch::kBFloat16), b = (torch::randn({O, R}) * 0.05).to(torch::kBFloat16);
          auto bt = b.t().contiguous();
          auto acc = torch::randn({M, O}).to(torch::kBFloat16);
          const int reps = 50;
          double t[3] = {0, 0, 0};
          for (int which : {0, 1, 2}) {
            auto t0 = Clock::now();
            for (int i = 0; i < reps; ++i) {
              if (which == 0) acc.addmm_(a, b.t());
              else if (which == 1) gemv_bf16(a, b, acc);
              else add_low_rank_nograd_(acc, a, b, bt);
            }
            t[which] = seconds_since(t0) / reps * 1e6;
          }
          if (r < 0) continue;
          char key[96];
          std::snprintf(key, sizeof key, "low-rank M=%lld R=%lld O=%lld", (long long)M, (long long)R, (long long)O);
          s[std::string(key) + " us addmm_"].push_back(t[0]);
          s[std::string(key) + " us row kernel"].push_back(t[1]);
          s[std::string(key) + " us column kernel"].push_back(t[2]);
          s[std::string(key) + " row/column time"].push_back(t[1] / t[2]);
        }
  group_rounds(ms, rounds, s);
  std::printf("read bandwidth %.1f GB/s\n", bench::read_bandwidth() / 1e9);
  for (const auto& [k, v] : s) bench::print_row(k, v, "");
  return 0;
}
