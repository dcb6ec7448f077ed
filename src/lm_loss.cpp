// The shifted causal-LM cross-entropy (see lm_loss.h): the reference op sequence, and the chunked
// custom autograd function that computes loss and d(hidden) per chunk of rows in the forward.
// Shapes: B batch, T positions, C hidden, V vocab, n labelled rows, r rows of one chunk.
#include "lm_loss.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace mor {

torch::Tensor shifted_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t T = logits.size(1), V = logits.size(2);
  auto lg = logits.narrow(1, 0, T - 1).to(torch::kFloat32).reshape({-1, V});
  auto lb = labels.narrow(1, 1, T - 1).to(lg.device()).reshape({-1});
  return torch::nn::functional::cross_entropy(lg, lb,
                                              torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
}

torch::Tensor lm_loss_reference(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels) {
  return shifted_cross_entropy(torch::matmul(hidden, weight.t()).to(torch::kFloat32), labels);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The rows that carry a label, in the flattened [B*T, C] layout of hidden: position t of row b is
// predicted against labels[b, t+1]; the last position and -100 labels are dropped here.
struct LabelledRows {
  torch::Tensor index;   // [n] int64, b*T + t
  torch::Tensor target;  // [n] int64, in [0, V)
  torch::Tensor h;       // [n, C] compute dtype
};

LabelledRows labelled_rows(const torch::Tensor& hidden, const torch::Tensor& labels, int64_t vocab) {
  const int64_t B = hidden.size(0), T = hidden.size(1), C = hidden.size(2);
  auto lb = labels.to(hidden.device(), torch::kLong);
  auto next = torch::cat({lb.narrow(1, 1, T - 1), torch::full({B, 1}, -100, lb.options())}, 1).reshape({-1});
  LabelledRows r;
  r.index = (next != -100).nonzero().squeeze(1);
  r.target = next.index_select(0, r.index);
  if (r.index.numel() > 0) {
    const int64_t lo = r.target.min().item<int64_t>(), hi = r.target.max().item<int64_t>();
    if (lo < 0 || hi >= vocab)
      throw std::runtime_error("lm_loss: label " + std::to_string(lo < 0 ? lo : hi) + " outside the vocabulary (" +
                               std::to_string(vocab) + ") and not the ignore index -100");
  }
  r.h = hidden.reshape({B * T, C}).index_select(0, r.index);
  return r;
}

void check_inputs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels) {
  if (hidden.dim() != 3 || weight.dim() != 2 || labels.dim() != 2 || hidden.size(2) != weight.size(1) ||
      labels.size(0) != hidden.size(0) || labels.size(1) != hidden.size(1) || hidden.size(1) < 1)
    throw std::runtime_error("lm_loss: hidden [B, T, C], weight [V, C], labels [B, T] expected, got hidden " +
                             c10::str(hidden.sizes()) + ", weight " + c10::str(weight.sizes()) + ", labels " +
                             c10::str(labels.sizes()));
  const auto dt = hidden.scalar_type();
  if ((dt != torch::kFloat32 && dt != torch::kBFloat16) || weight.scalar_type() != dt)
    throw std::runtime_error(std::string("lm_loss_chunked: float32 or bfloat16 hidden and weight of one dtype, got ") +
                             c10::toString(dt) + " and " + c10::toString(weight.scalar_type()));
  if (weight.requires_grad())
    throw std::runtime_error("lm_loss_chunked: the weight requires grad (the chunked loss has no weight gradient)");
}

// Per-chunk work buffers, allocated once per call and reused so that every chunk after the first
// runs on warm, already-faulted memory.
struct ChunkBuffers {
  torch::Tensor lg;    // [r, V] compute dtype: GEMM output, then (bfloat16) the gradient rows
  torch::Tensor f32;   // [r, V] float32 copy of lg (bfloat16 only; float32 uses lg itself)
  torch::Tensor logp;  // [r, V] float32 log-softmax, then softmax / gradient
};

// One chunk: returns sum over its rows of log p(target) (float32 scalar); with dh_out defined,
// writes d(hidden) of the mean loss for these rows, ((softmax - onehot) / n).to(dtype) @ weight, into it.
torch::Tensor chunk_step(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& target,
                         ChunkBuffers& buf, double inv_n, torch::Tensor dh_out) {
  const int64_t r = h.size(0);
  const bool f32 = h.scalar_type() == torch::kFloat32;
  auto lg = buf.lg.narrow(0, 0, r);
  at::mm_out(lg, h, weight.t());  // rounded to the compute dtype, as the reference's matmul output
  auto x = f32 ? lg : buf.f32.narrow(0, 0, r).copy_(lg);
  auto logp = buf.logp.narrow(0, 0, r);
  at::_log_softmax_out(logp, x, 1, false);
  auto t = target.unsqueeze(1);
  auto logp_t = logp.gather(1, t);  // [r, 1]
  auto sum = logp_t.sum();
  if (!dh_out.defined()) return sum;
  // The reference's backward: log_softmax_backward gives exp(logp) * (1/n) - onehot * (1/n) in
  // float32, ToCopyBackward rounds that to the compute dtype. Same values, same order here.
  auto inv = torch::scalar_tensor(inv_n, logp.options());
  auto g_t = logp_t.exp().mul_(inv).sub_(inv);  // [r, 1] float32
  logp.exp_();
  torch::Tensor dl = f32 ? logp.mul_(inv) : at::mul_out(lg, logp, inv);
  dl.scatter_(1, t, g_t.to(dl.scalar_type()));
  at::mm_out(dh_out, dl, weight);
  return sum;
}

// Loss over all labelled rows; fills dh [n, C] when defined.
torch::Tensor chunked_loss(const LabelledRows& rows, const torch::Tensor& weight, int64_t chunk_rows,
                           const torch::Tensor& dh) {
  const int64_t n = rows.h.size(0), V = weight.size(0);
  if (n == 0) return torch::full({}, std::nan(""), weight.options().dtype(torch::kFloat32));
  const int64_t r = std::min(chunk_rows, n);
  ChunkBuffers buf;
  buf.lg = torch::empty({r, V}, weight.options());
  if (weight.scalar_type() != torch::kFloat32) buf.f32 = torch::empty({r, V}, weight.options().dtype(torch::kFloat32));
  buf.logp = torch::empty({r, V}, weight.options().dtype(torch::kFloat32));
  std::vector<torch::Tensor> sums;
  for (int64_t s = 0; s < n; s += r) {
    const int64_t m = std::min(r, n - s);
    sums.push_back(chunk_step(rows.h.narrow(0, s, m), weight, rows.target.narrow(0, s, m), buf, 1.0 / double(n),
                              dh.defined() ? dh.narrow(0, s, m) : torch::Tensor()));
  }
  // Summed in float64 then rounded: at least as close to the exact mean as torch's float32 nll_loss.
  return (torch::stack(sums).to(torch::kFloat64).sum() / double(-n)).to(torch::kFloat32);
}

struct ChunkedLmLossFn : public torch::autograd::Function<ChunkedLmLossFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& weight,
                               const torch::Tensor& labels, int64_t chunk_rows) {
    auto rows = labelled_rows(hidden, labels, weight.size(0));
    auto dh = torch::empty({rows.h.size(0), hidden.size(2)}, hidden.options());
    auto loss = chunked_loss(rows, weight, chunk_rows, dh);
    ctx->saved_data["dh"] = dh;
    ctx->saved_data["index"] = rows.index;
    ctx->saved_data["shape"] = hidden.sizes().vec();
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto dh = ctx->saved_data["dh"].toTensor();
    auto index = ctx->saved_data["index"].toTensor();
    auto shape = ctx->saved_data["shape"].toIntVector();
    // Rows of the last position and of ignored labels get no gradient.
    auto g = torch::zeros({shape[0] * shape[1], shape[2]}, dh.options());
    if (dh.size(0) > 0) g.index_copy_(0, index, dh * grads[0].to(dh.device()));
    return {g.view(shape), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor lm_loss_chunked(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
                              int64_t chunk_rows) {
  RECORD_FUNCTION("mor::lm_loss", std::vector<c10::IValue>());
  check_inputs(hidden, weight, labels);
  if (chunk_rows < 1) throw std::runtime_error("lm_loss_chunked: chunk_rows must be >= 1, got " + std::to_string(chunk_rows));
  if (torch::GradMode::is_enabled() && hidden.requires_grad())
    return ChunkedLmLossFn::apply(hidden, weight, labels, chunk_rows);
  torch::NoGradGuard ng;
  return chunked_loss(labelled_rows(hidden, labels, weight.size(0)), weight, chunk_rows, torch::Tensor());
}

// Two costs pull the chunk size apart. Each chunk's GEMMs (forward x W^T and backward dl @ W) reread
// the whole weight [V, C] (131 MB in bf16 for V 32000, C 2048), about M flops per byte for M rows,
// so below ~100 rows the GEMMs turn memory-bound. Above a few hundred rows the float32 chunk (and its
// log-softmax) no longer fits the last-level cache (32 MB per EPYC CCD) and every elementwise pass
// streams from memory, as the reference's do. bench_lm_loss (4x256 tokens, C 2048, V 32000, bf16,
// 2 threads) measured fwd+bwd at 3.4x the two GEMMs' peak time for the reference, 1.4x at 32 rows,
// 1.05x at 64, 0.91x at 128, 0.97x at 256, 2.0x at 1024 (one chunk). So: a 16 MB float32 chunk
// (128 rows at V 32000), kept between 64 and 256 rows for other vocabularies.
int64_t lm_loss_chunk_rows(int64_t vocab) {
  const int64_t rows = (int64_t(16) << 20) / (4 * std::max<int64_t>(vocab, 1)) / 16 * 16;
  return std::clamp<int64_t>(rows, 64, 256);
}

bool lm_loss_chunked_ok(const torch::Tensor& hidden, const torch::Tensor& weight) {
  const auto dt = hidden.scalar_type();
  return fused_enabled() && !weight.requires_grad() && weight.scalar_type() == dt &&
         (dt == torch::kFloat32 || dt == torch::kBFloat16) && hidden.device() == weight.device();
}

torch::Tensor lm_loss(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels) {
  if (!lm_loss_chunked_ok(hidden, weight)) return lm_loss_reference(hidden, weight, labels);
  return lm_loss_chunked(hidden, weight, labels, lm_loss_chunk_rows(weight.size(0)));
}

}  // namespace mor
