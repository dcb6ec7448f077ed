#!/usr/bin/python3
"""An independent PyTorch twin of Hugging Face's LlamaForCausalLM (eager attention), written from its
semantics: RMSNorm in float32 cast back then times weight, rotate-half RoPE with float32 tables,
grouped-query attention via repeat_kv, an additive causal+padding mask filled with finfo.min (so a
left-pad query whose keys are all masked attends uniformly to its whole row), softmax in float32,
SiLU-gated MLP, tied or separate lm_head, float32 logits.

Run with Debian's /usr/bin/python3 (torch 1.13); no transformers, no safetensors package.
  /usr/bin/python3 scripts/twin_llama.py [--out tests/golden/twin_llama]
writes a random tiny model in Hugging Face layout (config.json + model.safetensors) and golden logits
(golden.safetensors) for a left-padded batch of unequal prompts, which tests/test_llama.cpp checks.

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
    D = C // H
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
    return p


class TwinLlama(torch.nn.Module):
    def __init__(self, cfg, params, dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.p = {k: v.to(dtype) for k, v in params.items()}
        self.C = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads", self.H)
        self.D = self.C // self.H
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)

    # Override to add adapters; `name` is the HF module path, e.g. "model.layers.0.mlp.down_proj".
    def linear(self, layer, name, x, weight):
        return torch.matmul(x, weight.t())

    def rms_norm(self, x, weight):
        dt = x.dtype
        h = x.to(torch.float32)
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.eps)
        return weight * h.to(dt)

    def rope(self, position_ids):
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
            o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, self.C)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "golden", "twin_llama"))
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
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
