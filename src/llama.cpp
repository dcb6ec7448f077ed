// LLaMA decoder with Hugging Face LlamaForCausalLM numerics (see llama.h): RMSNorm in float32,
// rotate-half RoPE with float32 tables, grouped-query attention without repeating k/v, softmax in
// float32 over a mask filled with the dtype's minimum (so all-masked pad rows become uniform), KV cache,
// and loading/saving Hugging Face safetensors checkpoints.
#include "llama.h"

#include "config_sizes.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

#include "arch.h"
#include "files.h"
#include "gemv.h"
#include "kernels.h"
#include "kernels_train.h"
#include "safetensors.h"

namespace fs = std::filesystem;

namespace mor {

namespace {

std::string shape_str(torch::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// torch.finfo(dtype).min: what HF fills masked scores with.
double finfo_min(torch::Dtype dt) {
  switch (dt) {
    case torch::kFloat32: return std::numeric_limits<float>::lowest();
    case torch::kFloat64: return std::numeric_limits<double>::lowest();
    case torch::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case torch::kFloat16: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    default: throw std::runtime_error("unsupported compute dtype");
  }
}

torch::TensorOptions opts(torch::Dtype dtype, torch::Device device) {
  return torch::TensorOptions().dtype(dtype).device(device);
}

}  // namespace

// ---- pieces and their references ----

// float32 as HF computes it; float64 (only used by gradient tests) is kept in float64.
static torch::Dtype norm_dtype(const torch::Tensor& x) {
  return x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto h = x.to(norm_dtype(x));
  auto var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, torch::Dtype dtype, torch::Device device) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}, opts(dtype, device)), /*requires_grad=*/false);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  // Inference (eval mode, no gradient): one pass. Training mode: the autograd kernel whether or not
  // a gradient is wanted, so gradient checkpointing's graph-free first pass rounds exactly like its
  // recomputation (and the op path below for MOR_FUSED=0 and float64).
  if (!is_training() && fused_ok(x, weight)) return rms_norm_fused(x, weight, eps);
  if (kernel_ok(x) && weight.scalar_type() == x.scalar_type()) return rms_norm_train(x, weight, eps);
  // Same ops as the reference; for float32 input the casts are no-ops (no copies).
  auto h = x.scalar_type() == norm_dtype(x) ? x : x.to(norm_dtype(x));
  auto inv = torch::rsqrt(h.square().mean(-1, /*keepdim=*/true).add_(eps));
  return weight * (h * inv).to(x.scalar_type());
}

std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& position_ids, int64_t D, double theta) {
  auto fopt = torch::TensorOptions().dtype(torch::kFloat32).device(position_ids.device());
  // inv_freq = 1 / theta^(arange(0, D, 2) / D), float32 as HF computes it.
  auto inv_freq = 1.0 / torch::pow(torch::tensor(theta, fopt), torch::arange(0, D, 2, fopt) / static_cast<double>(D));
  auto freqs = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [B, T, D/2]
  auto emb = torch::cat({freqs, freqs}, -1);                                // [B, T, D]
  return {emb.cos(), emb.sin()};
}

torch::Tensor rope_inv_freq(const ModelConfig& cfg, int64_t seq_len) {
  // Op for op as transformers writes it in Python (a / t is reciprocal(t) * a there; scalars meet
  // float32 tensors in float32), so the float32 rounding is the same.
  const int64_t D = cfg.head_dim();
  const auto& rs = cfg.rope_scaling;
  auto expo = torch::arange(0, D, 2, torch::kLong).to(torch::kFloat32) / double(D);
  torch::Tensor inv;
  if (rs.type == "dynamic" && seq_len > cfg.max_position_embeddings) {
    // seq_len arrives as a tensor (max position + 1), so the rescaled base is computed in float32.
    auto base = torch::tensor(seq_len, torch::kLong)
                    .mul(rs.factor)
                    .div(double(cfg.max_position_embeddings))
                    .sub(rs.factor - 1)
                    .pow(double(D) / double(D - 2))
                    .mul(cfg.rope_theta);
    inv = torch::pow(base, expo).reciprocal();
  } else {
    inv = torch::pow(torch::tensor(cfg.rope_theta, torch::kFloat32), expo).reciprocal();
  }
  if (rs.type == "linear") {
    inv = inv / rs.factor;
  } else if (rs.type == "llama3") {
    const double old_ctx = double(rs.original_max_position_embeddings);
    const double low_wavelen = old_ctx / rs.low_freq_factor, high_wavelen = old_ctx / rs.high_freq_factor;
    auto wavelen = inv.reciprocal() * (2 * M_PI);
    auto inv_llama = torch::where(wavelen > low_wavelen, inv / rs.factor, inv);
    auto smooth = (wavelen.reciprocal() * old_ctx - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    auto smoothed = (1 - smooth) * inv_llama / rs.factor + smooth * inv_llama;
    auto medium = (wavelen < high_wavelen).logical_not() * (wavelen > low_wavelen).logical_not();
    inv = torch::where(medium, smoothed, inv_llama);
  } else if (!rs.type.empty() && rs.type != "dynamic") {
    throw std::runtime_error("rope_scaling type '" + rs.type + "' is not supported");
  }
  return inv;
}

std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& position_ids, const ModelConfig& cfg) {
  if (cfg.rope_scaling.type.empty()) return rope_cos_sin(position_ids, cfg.head_dim(), cfg.rope_theta);
  // transformers' dynamic update: seq_len = max(position_ids) + 1 of this call (one host sync, dynamic only).
  const int64_t seq_len = cfg.rope_scaling.type == "dynamic" ? position_ids.max().item<int64_t>() + 1 : 0;
  auto inv_freq = rope_inv_freq(cfg, seq_len).to(position_ids.device());
  auto freqs = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [B, T, D/2]
  auto emb = torch::cat({freqs, freqs}, -1);                                // [B, T, D]
  return {emb.cos(), emb.sin()};
}

torch::Tensor apply_rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // [B, 1, T, D]
  auto rot = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c + rot * s;
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  // x [B, T, H, D]; the halves of cos/sin are equal (cat(freqs, freqs)), so use one half:
  // out = [x1*c - x2*s, x2*c + x1*s], rounding exactly like x*cos + rotate_half(x)*sin.
  const int64_t half = x.size(-1) / 2;
  auto c = cos.narrow(-1, 0, half).unsqueeze(2), s = sin.narrow(-1, 0, half).unsqueeze(2);  // [B, T, 1, D/2]
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

void KVCache::select_rows(const torch::Tensor& rows) {
  for (auto& t : k) t = t.index_select(0, rows);
  for (auto& t : v) t = t.index_select(0, rows);
}

// ---- modules ----

// A projection as the architecture table describes it: shape and optional bias.
static MolaLinear table_linear(const ModelConfig& c, const std::string& name, torch::Dtype dtype, torch::Device device) {
  const ArchInfo& arch = arch_of(c);
  const Projection& p = arch.projection(name);
  auto [in, out] = arch.shape(c, name);
  return MolaLinear(in, out, dtype, device, p.bias);
}

// softmax(q K^T / sqrt(D), masked) V through the batched matmuls: q [B, H, T, D], K/V [B, Hkv, S, D]
// -> [B, H, T, D]. Inference: the fused softmax of kernels.h; training: its autograd kernel;
// otherwise (other dtypes, MOR_FUSED=0) the reference's op sequence.
static torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V,
                            const torch::Tensor& mask, bool infer, torch::ScalarType dt) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Hkv = K.size(1), G = H / Hkv;
  const int64_t S = K.size(2);
  // Query heads h = kv*G + g share kv head `kv` (HF repeat_kv order): group them along the row axis
  // so k/v are never repeated: [B, Hkv, G*T, D] x [B, Hkv, D, S].
  auto qg = q.reshape({B, Hkv, G * T, D});
  auto scores = torch::matmul(qg, K.transpose(2, 3));
  torch::Tensor probs;
  if (infer && fused_ok(scores) && scores.scalar_type() == dt) {
    // scale, mask, float32 softmax and the cast back in one pass over the scores
    probs = attention_probs(scores.view({B, H, T, S}), mask, std::sqrt(static_cast<double>(D)));
  } else if (kernel_ok(scores) && scores.scalar_type() == dt) {
    probs = attention_probs_train(scores.view({B, H, T, S}), mask, std::sqrt(static_cast<double>(D)));
  } else {
    scores.div_(std::sqrt(static_cast<double>(D)));
    scores = scores.view({B, H, T, S});
    if (mask.defined()) scores.masked_fill_(mask, finfo_min(scores.scalar_type()));
    // Softmax in float32 as HF does (float64 stays float64: its finfo.min would overflow to -inf).
    const auto sm_dtype = scores.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    probs = torch::softmax(scores, -1, sm_dtype).to(dt);
  }
  return torch::matmul(probs.view({B, Hkv, G * T, S}), V).view({B, H, T, D});
}

LlamaAttentionImpl::LlamaAttentionImpl(const ModelConfig& c, torch::Dtype dtype, torch::Device device) : cfg(c) {
  q_proj = register_module("q_proj", table_linear(c, "q_proj", dtype, device));
  k_proj = register_module("k_proj", table_linear(c, "k_proj", dtype, device));
  v_proj = register_module("v_proj", table_linear(c, "v_proj", dtype, device));
  o_proj = register_module("o_proj", table_linear(c, "o_proj", dtype, device));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, KVCache* cache,
                                          int64_t il, std::vector<torch::Tensor>* rl) {
  const bool packed = ctx.pack.defined();  // x [1, N, C]: the real rows of a [B, T] batch
  const int64_t B = packed ? ctx.batch : x.size(0), T = packed ? ctx.len : x.size(1);
  const int64_t H = cfg.n_head, Hkv = cfg.n_head_kv, D = cfg.head_dim();
  // Inference (eval mode, nothing needs a gradient): the fused kernels of kernels.h, same rounding
  // points; training mode: the autograd kernels (kernels_train.h, and the softmax's in kernels.h).
  const bool infer = !is_training();
  auto rope = [&](const torch::Tensor& t) {  // t [B, T, h, D] -> [B, h, T, D]
    if (infer && fused_ok(t)) return apply_rope_fused(t, ctx.cos, ctx.sin).transpose(1, 2);
    // the training kernel writes the attention layout itself (q/k then need no copy for the GEMMs)
    if (kernel_ok(t) && ctx.cos.scalar_type() == t.scalar_type() && !ctx.cos.requires_grad() &&
        !ctx.sin.requires_grad())
      return apply_rope_train(t, ctx.cos, ctx.sin);
    return apply_rope(t, ctx.cos, ctx.sin).transpose(1, 2);
  };
  // Packed: each projection's rows scattered into zeros of the padded layout [B*T, width].
  auto padded = [&](const torch::Tensor& y) {
    if (!packed) return y;
    return torch::zeros({B * T, y.size(-1)}, y.options()).index_copy_(0, ctx.pack, y.view({-1, y.size(-1)}));
  };
  // one fused call for decode rows (moe_lora.h), else the three forwards
  auto qkv = forward_shared_input({q_proj.get(), k_proj.get(), v_proj.get()}, x, rl);
  auto q = rope(padded(qkv[0]).view({B, T, H, D}));  // [B,H,T,D]
  auto k = rope(padded(qkv[1]).view({B, T, Hkv, D}));  // [B,Hkv,T,D]
  auto v = padded(qkv[2]).view({B, T, Hkv, D}).transpose(1, 2);
  torch::Tensor K = k, V = v;
  if (cache) {
    if (ctx.past + T > cache->capacity())
      throw std::runtime_error("KV cache full: " + std::to_string(ctx.past + T) + " positions, capacity " +
                               std::to_string(cache->capacity()));
    cache->k[il].narrow(2, ctx.past, T).copy_(k);
    cache->v[il].narrow(2, ctx.past, T).copy_(v);
    K = cache->k[il].narrow(2, 0, ctx.past + T);
    V = cache->v[il].narrow(2, 0, ctx.past + T);
  }
  // Decode: the cache's narrowed K/V read in place (the matmuls would copy them whole each step).
  const bool in_place = infer && cache && T <= 4 && fused_ok(q) && q.scalar_type() == x.scalar_type() &&
                        K.scalar_type() == q.scalar_type();
  auto out = in_place ? attention_cached(q, K, V, ctx.mask, std::sqrt(static_cast<double>(D)))
                      : attend(q, K, V, ctx.mask, infer, x.scalar_type());  // [B, H, T, D]
  out = out.transpose(1, 2).reshape({B, T, H * D});
  if (packed) out = out.view({B * T, H * D}).index_select(0, ctx.pack).unsqueeze(0);  // [1, N, H*D]
  return o_proj->forward(out, rl);
}

LlamaMLPImpl::LlamaMLPImpl(const ModelConfig& c, torch::Dtype dtype, torch::Device device) {
  gate_proj = register_module("gate_proj", table_linear(c, "gate_proj", dtype, device));
  up_proj = register_module("up_proj", table_linear(c, "up_proj", dtype, device));
  down_proj = register_module("down_proj", table_linear(c, "down_proj", dtype, device));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x, std::vector<torch::Tensor>* rl) {
  auto gu = forward_shared_input({gate_proj.get(), up_proj.get()}, x, rl);
  const auto &g = gu[0], &u = gu[1];
  torch::Tensor h;
  if (!is_training() && fused_ok(g, u)) h = silu_mul(g, u);
  else if (kernel_ok(g) && g.scalar_type() == u.scalar_type()) h = silu_mul_train(g, u);
  else h = torch::silu(g) * u;
  return down_proj->forward(h, rl);
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const ModelConfig& c, int64_t il, torch::Dtype dtype, torch::Device device)
    : layer_idx(il) {
  self_attn = register_module("self_attn", LlamaAttention(c, dtype, device));
  mlp = register_module("mlp", LlamaMLP(c, dtype, device));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, device));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, device));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, KVCache* cache,
                                             std::vector<torch::Tensor>* rl) {
  auto h = x + self_attn->forward(input_layernorm->forward(x), ctx, cache, layer_idx, rl);
  return h + mlp->forward(post_attention_layernorm->forward(h), rl);
}

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab, int64_t dim, torch::Dtype dtype, torch::Device device) {
  weight = register_parameter("weight", torch::empty({vocab, dim}, opts(dtype, device)), /*requires_grad=*/false);
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& c, torch::Dtype dtype, torch::Device device) {
  embed_tokens = register_module("embed_tokens", TokenEmbedding(c.vocab_size, c.hidden_size, dtype, device));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layer; ++i) {
    LlamaDecoderLayer layer(c, i, dtype, device);
    layers->push_back(layer);
    layer_list.push_back(layer);
  }
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, dtype, device));
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const ModelConfig& c, torch::Dtype dt, torch::Device dev)
    : cfg(c), dtype(dt), device(dev) {
  cfg.validate("model config");
  model = register_module("model", LlamaModel(cfg, dtype, device));
  if (!cfg.tie_word_embeddings)
    lm_head = register_module("lm_head", MolaLinear(cfg.hidden_size, cfg.vocab_size, dtype, device));
}

// The packed prefill's real positions (see forward in llama.h): bool [B, T] over the new tokens of
// a left-padded inference prefill whose pad rows nobody reads; undefined when it does not pack.
// Called after forward_hidden has checked the mask's shape; one host read, once per prefill.
static torch::Tensor packed_positions(const LlamaForCausalLMImpl& m, const ForwardArgs& a, int64_t past, int64_t T) {
  if (!a.last_only || !a.cache || a.router_logits || a.run_layer || !a.attention_mask.defined() || T < 2) return {};
  if (m.is_training() || torch::GradMode::is_enabled() || !fused_enabled()) return {};
  auto real = a.attention_mask.to(m.device).narrow(1, past, T) != 0;  // [B, T]
  const bool pads = !real.all().item<bool>(), last_real = real.select(1, T - 1).all().item<bool>();
  return pads && last_real ? real : torch::Tensor();
}

torch::Tensor LlamaForCausalLMImpl::forward_hidden(const ForwardArgs& a) {
  if (!a.input_ids.defined() || a.input_ids.dim() != 2) throw std::runtime_error("input_ids must be [B, T]");
  const int64_t B = a.input_ids.size(0), T = a.input_ids.size(1);
  if (T == 0) throw std::runtime_error("input_ids has no tokens");
  auto ids = a.input_ids.to(device, torch::kLong);
  {
    // On the caller's tensor: the host one in training, so no device sync.
    auto mn = a.input_ids.min().item<int64_t>(), mx = a.input_ids.max().item<int64_t>();
    if (mn < 0 || mx >= cfg.vocab_size)
      throw std::runtime_error("token id " + std::to_string(mn < 0 ? mn : mx) + " outside the vocabulary (" +
                               std::to_string(cfg.vocab_size) + ")");
  }
  AttentionContext ctx;
  ctx.past = a.cache ? a.cache->len : 0;
  const int64_t S = ctx.past + T;
  if (cfg.sliding_window > 0 && S > cfg.sliding_window)
    throw std::runtime_error("sequence of " + std::to_string(S) + " tokens exceeds sliding_window " +
                             std::to_string(cfg.sliding_window) + " (sliding-window attention is not implemented)");
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(device);
  torch::Tensor pos = a.position_ids.defined() ? a.position_ids.to(device, torch::kLong)
                                               : torch::arange(ctx.past, S, lopt).unsqueeze(0).expand({B, T});
  if (pos.sizes() != a.input_ids.sizes())
    throw std::runtime_error("position_ids " + shape_str(pos.sizes()) + " must match input_ids " + shape_str(a.input_ids.sizes()));
  auto cs = rope_cos_sin(pos, cfg);
  ctx.cos = cs.first.to(dtype);
  ctx.sin = cs.second.to(dtype);
  // Mask (true = masked): future keys, and pad keys. A left-pad query sees only masked keys; filled
  // with finfo.min they all tie, so its softmax is uniform over the whole row, as in HF.
  if (T > 1) {
    auto kpos = torch::arange(S, lopt).view({1, 1, 1, S});
    auto qpos = torch::arange(ctx.past, S, lopt).view({1, 1, T, 1});
    ctx.mask = kpos > qpos;  // [1, 1, T, S]
  }
  if (a.attention_mask.defined()) {
    if (a.attention_mask.dim() != 2 || a.attention_mask.size(0) != B || a.attention_mask.size(1) != S)
      throw std::runtime_error("attention_mask " + shape_str(a.attention_mask.sizes()) + " must be [B, past + T] = [" +
                               std::to_string(B) + ", " + std::to_string(S) + "]");
    auto pad = (a.attention_mask.to(device) == 0).view({B, 1, 1, S});
    ctx.mask = ctx.mask.defined() ? (ctx.mask | pad) : pad;
  }
  if (a.router_logits) {
    a.router_logits->clear();
    // No reallocation while layers hold pointers to their entry (a checkpointed layer keeps it for
    // the recomputation in backward).
    a.router_logits->reserve(cfg.n_layer);
  }
  torch::Tensor last;  // packed: each row's last position among the packed rows [B]
  if (auto real = packed_positions(*this, a, ctx.past, T); real.defined()) {
    ctx.pack = real.reshape({-1}).nonzero().squeeze(1);
    ctx.batch = B;
    ctx.len = T;
    last = real.sum(1).cumsum(0) - 1;
    ids = ids.reshape({1, -1}).index_select(1, ctx.pack);  // [1, N]
  }
  auto h = model->embed_tokens->forward(ids);
  for (auto& layer : model->layer_list) {
    std::vector<torch::Tensor>* rl = nullptr;
    if (a.router_logits) {
      a.router_logits->emplace_back();
      rl = &a.router_logits->back();
    }
    h = a.run_layer ? a.run_layer(*layer, h, ctx, rl) : layer->forward(h, ctx, a.cache, rl);
  }
  if (a.cache) a.cache->len = S;
  if (a.last_only) h = last.defined() ? h.index_select(1, last).view({B, 1, -1}) : h.narrow(1, T - 1, 1);
  return model->norm->forward(h);
}

const torch::Tensor& LlamaForCausalLMImpl::lm_head_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

torch::Tensor LlamaForCausalLMImpl::logits_from_hidden(const torch::Tensor& hidden) {
  // Inference: gemv.h's skinny kernel for decode rows (same bf16 rounding point), else the matmul.
  auto y = !is_training() ? linear_nograd(hidden, lm_head_weight()) : torch::matmul(hidden, lm_head_weight().t());
  return y.to(torch::kFloat32);
}

torch::Tensor LlamaForCausalLMImpl::forward(const ForwardArgs& a) {
  return logits_from_hidden(forward_hidden(a));
}

KVCache LlamaForCausalLMImpl::make_cache(int64_t batch, int64_t max_len) const {
  KVCache c;
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    c.k.push_back(torch::zeros({batch, cfg.n_head_kv, max_len, cfg.head_dim()}, opts(dtype, device)));
    c.v.push_back(torch::zeros({batch, cfg.n_head_kv, max_len, cfg.head_dim()}, opts(dtype, device)));
  }
  return c;
}

const std::vector<std::string>& projection_names() { return projection_names_all(); }

std::string projection_path(int64_t layer, const std::string& proj) { return projection_module_path(layer, proj); }

MolaLinear LlamaForCausalLMImpl::projection(int64_t il, const std::string& name) const {
  const auto& L = model->layer_list.at(il);
  const std::string& block = arch_of(cfg).projection(name).block;
  const torch::nn::Module& owner = block == "self_attn" ? static_cast<const torch::nn::Module&>(*L->self_attn)
                                                        : static_cast<const torch::nn::Module&>(*L->mlp);
  auto children = owner.named_children();
  auto* m = children.find(name);
  auto lin = m ? std::dynamic_pointer_cast<MolaLinearImpl>(*m) : nullptr;
  if (!lin) throw std::runtime_error("model has no module " + projection_path(il, name));
  return MolaLinear(lin);
}

std::vector<MolaLinear> LlamaForCausalLMImpl::layer_modules(int64_t il) const {
  std::vector<MolaLinear> r;
  for (const auto& p : arch_of(cfg).projections) r.push_back(projection(il, p.name));
  return r;
}

std::vector<std::string> LlamaForCausalLMImpl::module_names() const {
  std::vector<std::string> r;
  for (int64_t i = 0; i < cfg.n_layer; ++i)
    for (const auto& p : projection_names()) r.push_back(projection_path(i, p));
  return r;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaForCausalLMImpl::base_weights() {
  std::vector<std::pair<std::string, torch::Tensor>> r;
  // Only "<base module>.weight": adapter parameters a MolaLinear may register (router, lora_A, ...,
  // or submodules of their own) are not part of a base checkpoint.
  // Biases only where the architecture table has them (the projections registered "bias" then).
  const ArchInfo& arch = arch_of(cfg);
  std::set<std::string> base = {"embed_tokens", "norm", "input_layernorm", "post_attention_layernorm", "lm_head"},
                        biased;
  for (const auto& p : arch.projections) {
    base.insert(p.name);
    if (p.bias) biased.insert(p.name);
  }
  auto ends_with = [](const std::string& k, const std::string& suf) {
    return k.size() >= suf.size() && k.compare(k.size() - suf.size(), suf.size(), suf) == 0;
  };
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& k = item.key();
    const bool is_bias = ends_with(k, ".bias");
    if (!is_bias && !ends_with(k, ".weight")) continue;
    const std::string owner = k.substr(0, k.size() - (is_bias ? 5 : 7));
    const size_t dot = owner.rfind('.');
    const std::string leaf = dot == std::string::npos ? owner : owner.substr(dot + 1);
    if ((is_bias ? biased : base).count(leaf)) r.emplace_back(k, item.value());
  }
  return r;
}

// ---- loading and saving ----

static bool known_extra(const std::string& name, const ModelConfig& cfg) {
  const std::string inv = "rotary_emb.inv_freq";
  if (name.size() >= inv.size() && name.compare(name.size() - inv.size(), inv.size(), inv) == 0) return true;
  return cfg.tie_word_embeddings && name == "lm_head.weight";  // some tied checkpoints store the copy
}

LlamaForCausalLM load_llama(const std::string& model_dir, torch::Dtype dtype, torch::Device device) {
  const fs::path cfg_path = fs::path(model_dir) / "config.json";
  if (!fs::exists(cfg_path)) throw std::runtime_error(model_dir + ": missing config.json");
  ModelConfig cfg = ModelConfig::from_file(cfg_path.string());
  TensorStore store = TensorStore::open_model_dir(model_dir);
  {  // sizes in config.json against the bytes the weight files hold, before allocating the model
    uint64_t bytes = 0;
    for (const auto& k : store.keys()) bytes += store.info(k).end - store.info(k).begin;
    check_config_fits_weights(cfg, bytes, cfg_path.string(), store.description());
  }
  torch::NoGradGuard ng;
  LlamaForCausalLM m(cfg, dtype, device);
  auto weights = m->base_weights();
  // Check everything before converting anything: missing, misshapen, unused.
  std::set<std::string> used;
  for (const auto& [name, p] : weights) {
    if (!store.contains(name))
      throw std::runtime_error(store.description() + ": missing tensor '" + name + "' (shape " + shape_str(p.sizes()) + ")");
    const auto& ti = store.info(name);
    if (torch::IntArrayRef(ti.shape) != p.sizes())
      throw std::runtime_error(store.file_of(name) + ": tensor '" + name + "' has shape " + shape_str(ti.shape) +
                               ", config.json needs " + shape_str(p.sizes()));
    if (ti.dtype != "F32" && ti.dtype != "F16" && ti.dtype != "BF16")
      throw std::runtime_error(store.file_of(name) + ": tensor '" + name + "' has dtype " + ti.dtype +
                               " (weights must be F32, F16 or BF16)");
    used.insert(name);
  }
  for (const auto& k : store.keys())
    if (!used.count(k) && !known_extra(k, cfg))
      throw std::runtime_error(store.file_of(k) + ": unused tensor '" + k + "' (not part of " + cfg.architecture +
                               " with this config.json)");
  // Tensor by tensor: mapped bytes -> compute dtype/device, then drop the mapped pages, so the peak is
  // about the model in the compute dtype plus one tensor.
  for (auto& [name, p] : weights) {
    p.copy_(store.get(name));
    store.release(name);
  }
  return m;
}

LlamaForCausalLM random_llama(const ModelConfig& cfg, uint64_t seed, torch::Dtype dtype, torch::Device device) {
  torch::NoGradGuard ng;
  LlamaForCausalLM m(cfg, dtype, device);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, p] : m->base_weights()) {
    if (p.dim() == 1 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
      p.fill_(1.0);  // RMSNorm weights
    } else {
      auto t = torch::empty(p.sizes(), torch::kFloat32);
      t.normal_(0.0, 0.02, gen);
      p.copy_(t);
    }
  }
  return m;
}

void save_llama(LlamaForCausalLM& m, const std::string& dir, c10::optional<torch::Dtype> save_dtype) {
  fs::create_directories(dir);
  const torch::Dtype dt = save_dtype.value_or(m->dtype);
  ModelConfig cfg = m->cfg;
  cfg.torch_dtype = dt == torch::kFloat32 ? "float32" : dt == torch::kBFloat16 ? "bfloat16" : "float16";
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& [name, p] : m->base_weights()) tensors.emplace_back(name, p.detach().to(dt));
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / "config.json").string(), cfg.to_json().dump(2) + "\n");
}

}  // namespace mor
