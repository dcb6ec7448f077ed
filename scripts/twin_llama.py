#!/usr/bin/python3
"""An independent PyTorch twin of Hugging Face's LlamaForCausalLM (eager attention), written from its
semantics: RMSNorm in float32 cast back then times weight, rotate-half RoPE with float32 tables,
grouped-query attention via repeat_kv, an additive causal+padding mask filled with finfo.min (so a
left-pad query whose keys are all masked attends uniformly to its whole row), softmax in float32,
SiLU-gated MLP, tied or separate lm_head, float32 logits. The families differ in small ways, all
covered here: head_dim from config (q_proj out = heads * head_dim may differ from hidden), q/k/v
biases (Qwen2ForCausalLM: nn.Linear(bias=True)), and rope_scaling linear / dynamic / llama3 with the
inverse frequencies of transformers' modeling_rope_utils (rope_inv_freq below).

Run with Debian's /usr/bin/python3 (torch 1.13); no transformers, no safetensors package.
  /usr/bin/python3 scripts/twin_llama.py [--out tests/golden/twin_llama]
writes a random tiny model in Hugging Face layout (config.json + model.safetensors) and golden logits
(golden.safetensors) for a left-padded batch of unequal prompts, which tests/test_llama.cpp checks.
  /usr/bin/python3 scripts/twin_llama.py --families [--out-root tests/golden]
writes tests/golden/twin_{llama3,qwen2,mistral_v03} (model, logits of a left-padded batch, greedy
generations) and tests/golden/twin_rope/inv_freq.safetensors, which tests/test_arch.cpp checks.

As a module: TwinLlama(config, params) with forward(input_ids, attention_mask=None, position_ids=None);
every projection goes through TwinLlama.linear(layer, name, x, weight) -- override it (e.g. to add
MoLA adapters and collect router logits). Helpers: random_params, write_safetensors, read_safetensors,
save_hf, load_hf, positions_from_mask.
"""
import argparse
import json
import math
import os
import struct

import torch

PROJ_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
PROJ_MLP = ("gate_proj", "up_proj", "down_proj")

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
              torch.uint8: "U8", torch.bool: "BOOL"}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def write_safetensors(path, tensors, metadata=None):
    """8-byte little-endian header length, JSON header, raw little-endian data (name order)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = _ST_NAMES[info["dtype"]]
        raw = bytearray(data[8 + n + b:8 + n + e])
        if dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16) if e > b else torch.empty(0, dtype=dt)
        else:
            t = torch.frombuffer(raw, dtype=dt) if e > b else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta


def positions_from_mask(mask):
    """transformers' generation position ids: cumsum(mask) - 1, pads set to 1."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def random_params(cfg, seed, norm_jitter=0.1):
    """HF-named float32 weights, normal(0, 0.02); norms 1 + normal(0, norm_jitter) to exercise them."""
    g = torch.Generator().manual_seed(seed)
    C, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, Hkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    D = cfg.get("head_dim") or C // H
    p = {}

    def w(name, *shape):
        p[name] = torch.randn(*shape, generator=g) * 0.02

    def n(name):
        p[name] = 1.0 + torch.randn(C, generator=g) * norm_jitter

    w("model.embed_tokens.weight", V, C)
    for i in range(cfg["num_hidden_layers"]):
        pre = "model.layers.%d." % i
        w(pre + "self_attn.q_proj.weight", H * D, C)
        w(pre + "self_attn.k_proj.weight", Hkv * D, C)
        w(pre + "self_attn.v_proj.weight", Hkv * D, C)
        w(pre + "self_attn.o_proj.weight", C, H * D)
        w(pre + "mlp.gate_proj.weight", F, C)
        w(pre + "mlp.up_proj.weight", F, C)
        w(pre + "mlp.down_proj.weight", C, F)
        n(pre + "input_layernorm.weight")
        n(pre + "post_attention_layernorm.weight")
    n("model.norm.weight")
    if not cfg.get("tie_word_embeddings", False):
        w("lm_head.weight", V, C)
    if cfg.get("model_type") == "qwen2":  # drawn last so the other families' streams are unchanged
        for i in range(cfg["num_hidden_layers"]):
            pre = "model.layers.%d.self_attn." % i
            w(pre + "q_proj.bias", H * D)
            w(pre + "k_proj.bias", Hkv * D)
            w(pre + "v_proj.bias", Hkv * D)
    return p


def rope_inv_freq(cfg, seq_len=None):
    """transformers' modeling_rope_utils: inverse frequencies [D/2] float32 for cfg["rope_scaling"].
    seq_len (dynamic only): max(position_ids) + 1 of the call, a tensor as in dynamic_rope_update."""
    base = cfg.get("rope_theta", 10000.0)
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    rs = cfg.get("rope_scaling") or {}
    rtype = rs.get("rope_type", rs.get("type", "default"))
    maxpos = cfg.get("max_position_embeddings", 2048)
    if rtype == "dynamic" and seq_len is not None and seq_len > maxpos:
        factor = rs["factor"]
        seq_len = torch.tensor(seq_len)
        base = base * ((factor * seq_len / maxpos) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if rtype == "linear":
        inv_freq /= rs["factor"]
    elif rtype == "llama3":
        factor = rs["factor"]
        low_freq_factor = rs["low_freq_factor"]
        high_freq_factor = rs["high_freq_factor"]
        old_context_len = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    elif rtype not in ("default", "dynamic"):
        raise ValueError("rope type %r" % rtype)
    return inv_freq


class TwinLlama(torch.nn.Module):
    def __init__(self, cfg, params, dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.p = {k: v.to(dtype) for k, v in params.items()}
        self.C = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads", self.H)
        self.D = cfg.get("head_dim") or self.C // self.H
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)

    # Override to add adapters; `name` is the HF module path, e.g. "model.layers.0.mlp.down_proj".
    def linear(self, layer, name, x, weight):
        b = self.p.get(name + ".bias")
        return torch.matmul(x, weight.t()) if b is None else torch.nn.functional.linear(x, weight, b)

    def rms_norm(self, x, weight):
        dt = x.dtype
        h = x.to(torch.float32)
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.eps)
        return weight * h.to(dt)

    def rope(self, position_ids):
        if self.cfg.get("rope_scaling"):
            inv_freq = rope_inv_freq(self.cfg, int(position_ids.max()) + 1)
        else:
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.D, 2, dtype=torch.int64).float() / self.D))
        freqs = position_ids.float()[:, :, None] * inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    @staticmethod
    def rotate_half(x):
        x1 = x[..., : x.shape[-1] // 2]
        x2 = x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    @staticmethod
    def repeat_kv(x, n_rep):
        b, hkv, s, d = x.shape
        if n_rep == 1:
            return x
        return x[:, :, None, :, :].expand(b, hkv, n_rep, s, d).reshape(b, hkv * n_rep, s, d)

    def causal_mask(self, attention_mask, T):
        """HF's 4-D additive mask [B, 1, T, S]: finfo.min on future keys and on pad keys."""
        B, S = attention_mask.shape
        mn = torch.finfo(self.dtype).min
        causal = torch.full((T, S), mn, dtype=self.dtype)
        causal = torch.triu(causal, diagonal=S - T + 1)
        causal = causal[None, None].expand(B, 1, T, S).clone()
        padding = causal.eq(0.0) * attention_mask[:, None, None, :].eq(0.0)
        return causal.masked_fill(padding, mn)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        p, B, T = self.p, input_ids.shape[0], input_ids.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.long)
        if position_ids is None:
            position_ids = torch.arange(T)[None].expand(B, T)
        cos, sin = self.rope(position_ids)
        cos, sin = cos[:, None], sin[:, None]
        mask = self.causal_mask(attention_mask, T)
        h = p["model.embed_tokens.weight"][input_ids]
        for i in range(self.cfg["num_hidden_layers"]):
            pre = "model.layers.%d." % i
            x = self.rms_norm(h, p[pre + "input_layernorm.weight"])
            lin = lambda n, t: self.linear(i, pre + n, t, p[pre + n + ".weight"])
            q = lin("self_attn.q_proj", x).view(B, T, self.H, self.D).transpose(1, 2)
            k = lin("self_attn.k_proj", x).view(B, T, self.Hkv, self.D).transpose(1, 2)
            v = lin("self_attn.v_proj", x).view(B, T, self.Hkv, self.D).transpose(1, 2)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            k = self.repeat_kv(k, self.H // self.Hkv)
            v = self.repeat_kv(v, self.H // self.Hkv)
            att = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.D)
            att = att + mask
            att = torch.softmax(att, dim=-1, dtype=torch.float32).to(self.dtype)
            o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, self.H * self.D)
            h = h + lin("self_attn.o_proj", o)
            x = self.rms_norm(h, p[pre + "post_attention_layernorm.weight"])
            g = torch.nn.functional.silu(lin("mlp.gate_proj", x))
            u = lin("mlp.up_proj", x)
            h = h + lin("mlp.down_proj", g * u)
        h = self.rms_norm(h, p["model.norm.weight"])
        head = p["model.embed_tokens.weight"] if self.cfg.get("tie_word_embeddings", False) else p["lm_head.weight"]
        return torch.matmul(h, head.t()).float()


def save_hf(out_dir, cfg, params):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), params, {"format": "pt"})


def load_hf(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    params, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return cfg, params


def left_pad(prompts, pad_id=0):
    P = max(len(x) for x in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)
    for b, x in enumerate(prompts):
        ids[b, P - len(x):] = torch.tensor(x)
        mask[b, P - len(x):] = 1
    return ids, mask


TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 101,
    "max_position_embeddings": 128, "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": None, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    "torch_dtype": "float32",
}


# Random tiny models of the newer families, in the shapes their published config.json files use.
FAMILY_CONFIGS = {
    # LLaMA-3.2 style: llama3 rope scaling, tied embeddings, head_dim given (q_proj out 4*24 = 96 != 64),
    # an eos list.
    "llama3": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
        "vocab_size": 128, "max_position_embeddings": 131072, "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": [2, 3, 4], "attention_bias": False,
        "attention_dropout": 0.0, "mlp_bias": False, "pretraining_tp": 1, "initializer_range": 0.02,
        "use_cache": True, "torch_dtype": "bfloat16", "transformers_version": "4.45.0",
    },
    # Qwen2.5 style (0.5B-3B): q/k/v bias, rope_theta 1e6, eps 1e-6, tied, no sliding window.
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 160,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 160,
        "max_position_embeddings": 32768, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 2,
        "bos_token_id": 150, "eos_token_id": 151, "attention_dropout": 0.0, "initializer_range": 0.02,
        "use_cache": True, "use_mrope": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.1",
    },
    # Mistral-7B-v0.3 style: the v3 vocabulary (32768), rope_theta 1e6, sliding_window null, untied.
    # Stored in float16 (the values are float16-exact) to keep the 32768-row matrices small.
    "mistral_v03": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 8, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 32768,
        "max_position_embeddings": 32768, "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.42.0.dev0",
    },
}

# Inverse-frequency cases for the pure rope test: (name, config fields, seq_len).
ROPE_CASES = [
    ("llama3_d128", {"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 500000.0,
                     "max_position_embeddings": 131072,
                     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}, 0),
    ("llama3_d64_f32", {"hidden_size": 2048, "num_attention_heads": 32, "rope_theta": 500000.0,
                        "max_position_embeddings": 131072,
                        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}, 0),
    ("llama3_d24", {"hidden_size": 64, "num_attention_heads": 4, "head_dim": 24, "rope_theta": 500000.0,
                    "max_position_embeddings": 131072,
                    "rope_scaling": FAMILY_CONFIGS["llama3"]["rope_scaling"]}, 0),
    ("linear_d64", {"hidden_size": 4096, "num_attention_heads": 64, "rope_theta": 10000.0,
                    "max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 4.0}}, 0),
    ("dynamic_d128_short", {"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 10000.0,
                            "max_position_embeddings": 4096, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, 100),
    ("dynamic_d128_long", {"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 10000.0,
                           "max_position_embeddings": 4096, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, 10000),
    ("dynamic_d16_long", {"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 500000.0,
                          "max_position_embeddings": 64, "rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}, 1000),
]


def greedy(model, prompts, max_new, eos_ids, pad_id=0):
    """Greedy decoding without a cache: the whole left-padded batch is re-run each step (real tokens never
    see pads, so this equals HF's cached generate). Returns per prompt the new tokens, up to and
    including the first eos."""
    rows = [list(p) for p in prompts]
    new = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(max_new):
        ids, mask = left_pad(rows, pad_id)
        with torch.no_grad():
            nxt = model(ids, mask, positions_from_mask(mask))[:, -1].argmax(-1)
        for b, t in enumerate(nxt.tolist()):
            rows[b].append(t)
            if not done[b]:
                new[b].append(t)
                done[b] = t in eos_ids
        if all(done):
            break
    return new


def write_family(out_dir, name, seed):
    cfg = FAMILY_CONFIGS[name]
    params = random_params(cfg, seed)
    if cfg["tie_word_embeddings"]:  # stronger layers, else a tied random model just repeats its last token
        params = {k: v * 4 if k.endswith("_proj.weight") else v for k, v in params.items()}
    if name == "qwen2":  # biases of the size real Qwen2 q/k/v carry relative to their weights
        params = {k: v * 5 if k.endswith(".bias") else v for k, v in params.items()}
    if name == "mistral_v03":
        params = {k: v.half() for k, v in params.items()}
    save_hf(out_dir, cfg, params)
    params = {k: v.float() for k, v in params.items()}
    model = TwinLlama(cfg, params)
    g = torch.Generator().manual_seed(seed + 1)
    V, bos = cfg["vocab_size"], cfg["bos_token_id"]
    lens = [9, 5, 1, 7]
    prompts = [[bos] + torch.randint(5, V, (n - 1,), generator=g).tolist() for n in lens]
    if name == "mistral_v03":
        prompts[0][2], prompts[3][1] = 32767, 32001  # ids only the v3 vocabulary has
    ids, mask = left_pad(prompts)
    pos = positions_from_mask(mask)
    out = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    with torch.no_grad():
        logits = model(ids, mask, pos)
        far = model(ids, mask, pos + 20000)  # past original_max_position_embeddings: the scaled bands matter
    if V > 1024:  # a column sample (plus every argmax) keeps the golden small; argmax over all of V is kept
        cols = torch.randperm(V, generator=g)[:256]
        cols = torch.unique(torch.cat([cols, logits.argmax(-1).flatten(), far.argmax(-1).flatten()]))
        out.update({"columns": cols, "logits_columns": logits[..., cols], "far_logits_columns": far[..., cols]})
    else:
        out.update({"logits": logits, "far_logits": far})
    out.update({"argmax": logits.argmax(-1), "far_argmax": far.argmax(-1)})
    if name == "llama3":  # the same weights under the other scaling types
        for rtype, rs, maxpos in [("linear", {"rope_type": "linear", "factor": 4.0}, 131072),
                                  ("dynamic", {"rope_type": "dynamic", "factor": 4.0}, 8)]:
            c2 = dict(cfg, rope_scaling=rs, max_position_embeddings=maxpos)
            with torch.no_grad():
                out["logits_" + rtype] = TwinLlama(c2, params)(ids, mask, pos + 3)
    eos = cfg["eos_token_id"] if isinstance(cfg["eos_token_id"], list) else [cfg["eos_token_id"]]
    max_new = 8
    gen = greedy(model, prompts, max_new, eos)
    gt = torch.full((len(prompts), max_new), -1, dtype=torch.long)
    for b, t in enumerate(gen):
        gt[b, :len(t)] = torch.tensor(t)
    out["greedy_new_tokens"] = gt
    write_safetensors(os.path.join(out_dir, "golden.safetensors"), out,
                      {"source": "scripts/twin_llama.py --families", "seed": str(seed), "family": name})
    print("wrote", out_dir, "greedy", gen)


def write_rope_cases(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tensors, cases = {}, []
    for name, fields, seq_len in ROPE_CASES:
        tensors[name] = rope_inv_freq(fields, seq_len)
        cases.append({"name": name, "config": fields, "seq_len": seq_len})
    write_safetensors(os.path.join(out_dir, "inv_freq.safetensors"), tensors,
                      {"source": "scripts/twin_llama.py --families", "cases": json.dumps(cases)})
    print("wrote", out_dir, len(cases), "inverse-frequency cases")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "golden", "twin_llama"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--families", action="store_true", help="write the llama3/qwen2/mistral_v03 and rope goldens")
    ap.add_argument("--out-root", default=os.path.join(here, "..", "tests", "golden"))
    a = ap.parse_args()
    if a.families:
        torch.manual_seed(a.seed)
        for i, name in enumerate(FAMILY_CONFIGS):
            write_family(os.path.join(a.out_root, "twin_" + name), name, a.seed + 100 * (i + 1))
        write_rope_cases(os.path.join(a.out_root, "twin_rope"))
        return
    torch.manual_seed(a.seed)
    params = random_params(TINY_CONFIG, a.seed)
    save_hf(a.out, TINY_CONFIG, params)
    model = TwinLlama(TINY_CONFIG, params)
    g = torch.Generator().manual_seed(a.seed + 1)
    lens = [9, 5, 1, 7]
    prompts = [[1] + torch.randint(3, TINY_CONFIG["vocab_size"], (n - 1,), generator=g).tolist() for n in lens]
    ids, mask = left_pad(prompts)
    with torch.no_grad():
        pos_gen = positions_from_mask(mask)
        logits_gen = model(ids, mask, pos_gen)         # generation-style positions
        logits_arange = model(ids, mask, None)         # Trainer-style positions arange(T)
    write_safetensors(os.path.join(a.out, "golden.safetensors"), {
        "input_ids": ids, "attention_mask": mask, "position_ids": pos_gen,
        "logits_gen_positions": logits_gen, "logits_arange_positions": logits_arange,
    }, {"source": "scripts/twin_llama.py", "seed": str(a.seed)})
    print("wrote", a.out, "logits", tuple(logits_gen.shape))


if __name__ == "__main__":
    main()
