#!/usr/bin/python3
"""PyTorch twin of MoLA scoring (the reference's numerics), writing golden files for tests/test_score.cpp
and tests/test_adapter.cpp. Run with Debian's /usr/bin/python3 (torch 1.13, sentencepiece):

    /usr/bin/python3 scripts/twin_mola.py [--out tests/golden/mola_tiny]

It builds a random tiny LLaMA (Hugging Face LlamaForCausalLM numerics: float32 RMSNorm, rotate-half
RoPE, additive mask at the dtype minimum clamped as HF 4.30 does, so all-masked pad rows attend
uniformly), attaches MoLA adapters exactly like GCYZSL/MoLA's patched PEFT (router Linear without
bias on x before dropout, softmax in float32, top-k, renormalise, a per-expert loop of
B_e(A_e(dropout(x))) * scaling * weight), with different experts, ranks (one layer a mixture of ranks)
and top-k per layer and random nonzero B, tokenizes the first rows of the ScienceQA sample as the
reference's training script does (alpaca prompt, BOS, cutoff, EOS, masking), and scores them at batch
size 1 and 4 (left-padded to a multiple of 8): per-example cross-entropy, per-batch balance (aux) loss.
Outputs: model/ (config.json, model.safetensors), adapter/ (ours: adapter_model.safetensors,
adapter_config.json, mola_config.json), adapter_ref/ (the reference's: adapter_model.bin via
torch.save, adapter_config.json), data.json, golden.json (token ids, labels, ce, aux, loss per setting).
"""
import argparse
import collections
import json
import math
import os
import struct

import sentencepiece as spm
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "..", "shared", "testdata")

CFG = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
           num_key_value_heads=2, vocab_size=512, rms_norm_eps=1e-5, rope_theta=10000.0)
TARGETS = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj"]
MODULE_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXPERTS = [2, 3, 4]
RANKS = [[4, 4], [2, 4, 2], [8, 8, 8, 8]]  # layer 1: a mixture of ranks
TOP_K = [1, 2, 3]
LORA_ALPHA = 16
N_ROWS = 8
CUTOFF = 256

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                "{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def module_path(il, name):
    return "model.layers.%d.%s.%s" % (il, "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp", name)


def module_shape(name):
    C, Fd = CFG["hidden_size"], CFG["intermediate_size"]
    D = C // CFG["num_attention_heads"]
    kv = CFG["num_key_value_heads"] * D
    return {"q_proj": (C, C), "k_proj": (C, kv), "v_proj": (C, kv), "o_proj": (C, C),
            "gate_proj": (C, Fd), "up_proj": (C, Fd), "down_proj": (Fd, C)}[name]


class MolaLinear(torch.nn.Module):
    """nn.Linear (no bias) with the reference's per-expert MoLA loop."""

    def __init__(self, inf, outf):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(outf, inf), requires_grad=False)
        self.experts = 0

    def add_adapter(self, E, ranks, top_k, alpha):
        inf, outf = self.weight.shape[1], self.weight.shape[0]
        self.experts, self.top_k = E, top_k
        self.router = torch.nn.Linear(inf, E, bias=False)
        self.lora_A = torch.nn.ModuleList([torch.nn.Linear(inf, r, bias=False) for r in ranks])
        self.lora_B = torch.nn.ModuleList([torch.nn.Linear(r, outf, bias=False) for r in ranks])
        self.scaling = [alpha / r for r in ranks]
        self.dropout = torch.nn.Dropout(0.05)

    def forward(self, x, sink):
        result = F.linear(x, self.weight)
        if not self.experts:
            return result
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        router_logits = self.router(flat)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected = torch.topk(routing_weights, self.top_k, dim=-1)
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(x.dtype)
        final = torch.zeros(flat.shape[0], result.shape[-1], dtype=x.dtype)
        expert_mask = F.one_hot(selected, num_classes=self.experts).permute(2, 1, 0)
        for e in range(self.experts):
            idx, top_x = torch.where(expert_mask[e])
            if top_x.shape[0] == 0:
                continue
            cur = flat[top_x]
            out = self.lora_B[e](self.lora_A[e](self.dropout(cur))) * self.scaling[e] * routing_weights[top_x, idx, None]
            final.index_add_(0, top_x, out.to(x.dtype))
        sink.append(router_logits)
        return result + final.reshape(*shape[:-1], -1)


def rms_norm(x, w, eps):
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mods = torch.nn.ModuleDict({n: MolaLinear(*module_shape(n)) for n in MODULE_ORDER})
        self.ln1 = torch.nn.Parameter(torch.empty(CFG["hidden_size"]), requires_grad=False)
        self.ln2 = torch.nn.Parameter(torch.empty(CFG["hidden_size"]), requires_grad=False)

    def forward(self, x, cos, sin, mask, sink):
        B, T, C = x.shape
        H, Hkv = CFG["num_attention_heads"], CFG["num_key_value_heads"]
        D = C // H
        h = rms_norm(x, self.ln1, CFG["rms_norm_eps"])
        q = self.mods["q_proj"](h, sink).view(B, T, H, D).transpose(1, 2)
        k = self.mods["k_proj"](h, sink).view(B, T, Hkv, D).transpose(1, 2)
        v = self.mods["v_proj"](h, sink).view(B, T, Hkv, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D)
        w = w + mask
        w = torch.max(w, torch.tensor(torch.finfo(w.dtype).min))
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        a = torch.matmul(w, v).transpose(1, 2).reshape(B, T, C)
        x = x + self.mods["o_proj"](a, sink)
        h = rms_norm(x, self.ln2, CFG["rms_norm_eps"])
        g = self.mods["gate_proj"](h, sink)
        u = self.mods["up_proj"](h, sink)
        return x + self.mods["down_proj"](F.silu(g) * u, sink)


class Llama(torch.nn.Module):
    def __init__(self):
        super().__init__()
        C, V = CFG["hidden_size"], CFG["vocab_size"]
        self.embed = torch.nn.Parameter(torch.empty(V, C), requires_grad=False)
        self.layers = torch.nn.ModuleList([Layer() for _ in range(CFG["num_hidden_layers"])])
        self.norm = torch.nn.Parameter(torch.empty(C), requires_grad=False)
        self.lm_head = torch.nn.Parameter(torch.empty(V, C), requires_grad=False)

    def forward(self, ids, attn):
        B, T = ids.shape
        D = CFG["hidden_size"] // CFG["num_attention_heads"]
        x = self.embed[ids]
        pos = torch.arange(T).float()
        inv = 1.0 / (CFG["rope_theta"] ** (torch.arange(0, D, 2).float() / D))
        freqs = torch.outer(pos, inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mn = torch.finfo(torch.float32).min
        causal = torch.full((T, T), mn).triu(1)[None, None].expand(B, 1, T, T)
        pad = (1.0 - attn[:, None, None, :].float()).masked_fill((attn[:, None, None, :] == 0), mn)
        pad = pad.masked_fill(attn[:, None, None, :] != 0, 0.0).expand(B, 1, T, T)
        mask = causal + pad  # HF 4.30: min + min overflows to -inf, clamped back to min in attention
        sink = []
        per_layer = []
        for layer in self.layers:
            n0 = len(sink)
            x = layer(x, cos, sin, mask, sink)
            per_layer.append(sink[n0:])
        x = rms_norm(x, self.norm, CFG["rms_norm_eps"])
        return F.linear(x, self.lm_head).float(), per_layer


def balance_loss(logits_list, E, k):
    l = torch.cat(logits_list, dim=0).float()
    p = F.softmax(l, dim=-1)
    _, sel = torch.topk(p, k, dim=-1)
    counts = F.one_hot(sel.reshape(-1), E).sum(0).float()
    f = counts / counts.sum()
    P = p.mean(0)
    return E * (f * P).sum()


def make_rows():
    """Synthetic rows of varied length (with and without input; one longer than the cutoff)."""
    words = "the cat sat on a mat and then it ran to the big red ball while Lily looked at the sky".split()
    rows = []
    for i in range(N_ROWS):
        n_ins, n_inp, n_out = 3 + (i * 5) % 11, (i * 7) % 9, 2 + (i * 3) % 7
        if i == 5:
            n_ins, n_inp, n_out = 40, 30, 10  # longer than the cutoff
        w = lambda n, o: " ".join(words[(o + j) % len(words)] for j in range(n))
        rows.append({"instruction": w(n_ins, i).capitalize() + "?", "input": w(n_inp, 2 * i) if n_inp else "",
                     "output": "The answer is " + w(n_out, 3 * i) + "."})
    return rows


def tokenize(sp, row, train_on_inputs, add_eos):
    def prompt(with_output):
        t = ALPACA_INPUT if row.get("input") else ALPACA_NO_INPUT
        s = t.format(instruction=row["instruction"], input=row.get("input", ""))
        return s + row["output"] if with_output else s

    def tok(text):
        ids = [1] + sp.encode(text)
        ids = ids[:CUTOFF]
        if add_eos and ids[-1] != 2 and len(ids) < CUTOFF:
            ids.append(2)
        return ids

    ids = tok(prompt(True))
    labels = list(ids)
    if not train_on_inputs:
        n = len(tok(prompt(False)))
        if add_eos:
            n -= 1
        labels = [-100] * n + labels[n:]
    return ids, labels


def collate(exs):
    L = max(len(i) for i, _ in exs)
    L = (L + 7) // 8 * 8
    ids = torch.tensor([[0] * (L - len(i)) + i for i, _ in exs])
    att = torch.tensor([[0] * (L - len(i)) + [1] * len(i) for i, _ in exs])
    lab = torch.tensor([[-100] * (L - len(l)) + l for _, l in exs])
    return ids, att, lab


def save_safetensors(path, tensors, metadata):
    header, off, blobs = {}, 0, []
    for name, t in tensors:
        b = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "golden", "mola_tiny"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    for d in ("model", "adapter", "adapter_ref"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    torch.manual_seed(1234)
    model = Llama()
    with torch.no_grad():
        model.embed.normal_(0, 0.5)
        model.lm_head.normal_(0, 0.2)
        model.norm.uniform_(0.5, 1.5)
        for layer in model.layers:
            layer.ln1.uniform_(0.5, 1.5)
            layer.ln2.uniform_(0.5, 1.5)
            for m in layer.mods.values():
                m.weight.normal_(0, 0.2)
    # Base model in Hugging Face layout.
    hf = [("model.embed_tokens.weight", model.embed)]
    for il, layer in enumerate(model.layers):
        for n in MODULE_ORDER:
            hf.append((module_path(il, n) + ".weight", layer.mods[n].weight))
        hf.append(("model.layers.%d.input_layernorm.weight" % il, layer.ln1))
        hf.append(("model.layers.%d.post_attention_layernorm.weight" % il, layer.ln2))
    hf += [("model.norm.weight", model.norm), ("lm_head.weight", model.lm_head)]
    save_safetensors(os.path.join(out, "model", "model.safetensors"), hf, {"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "max_position_embeddings": 512, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 0, "torch_dtype": "float32", **CFG}
    with open(os.path.join(out, "model", "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    # Adapters: random router/A, random nonzero B.
    state = collections.OrderedDict()
    modules = collections.OrderedDict()
    for il, layer in enumerate(model.layers):
        for n in MODULE_ORDER:
            m = layer.mods[n]
            m.add_adapter(EXPERTS[il], RANKS[il], TOP_K[il], LORA_ALPHA)
            with torch.no_grad():
                for b in m.lora_B:
                    b.weight.normal_(0, 0.3)
            key = "base_model.model." + module_path(il, n)
            for e in range(EXPERTS[il]):
                state[key + ".lora_A_%d.weight" % e] = m.lora_A[e].weight.detach().clone()
            for e in range(EXPERTS[il]):
                state[key + ".lora_B_%d.weight" % e] = m.lora_B[e].weight.detach().clone()
            state[key + ".router.router.weight"] = m.router.weight.detach().clone()
            inf, outf = module_shape(n)
            modules[module_path(il, n)] = {"experts": EXPERTS[il], "top_k": TOP_K[il], "ranks": RANKS[il],
                                           "in_features": inf, "out_features": outf}
    model.eval()
    save_safetensors(os.path.join(out, "adapter", "adapter_model.safetensors"), list(state.items()), {"format": "pt"})
    peft_cfg = {"auto_mapping": None, "base_model_name_or_path": "mola_tiny", "bias": "none", "fan_in_fan_out": False,
                "inference_mode": True, "init_lora_weights": True, "layers_pattern": None,
                "layers_to_transform": None, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.05,
                "modules_to_save": None, "peft_type": "LORA", "r": [r[0] for r in RANKS], "revision": None,
                "target_modules": TARGETS, "task_type": "CAUSAL_LM"}
    for d in ("adapter", "adapter_ref"):
        with open(os.path.join(out, d, "adapter_config.json"), "w") as f:
            f.write(json.dumps(peft_cfg, indent=2, sort_keys=True))
    with open(os.path.join(out, "adapter", "mola_config.json"), "w") as f:
        json.dump({"format": "mor-mola-allocation", "version": 1, "num_hidden_layers": CFG["num_hidden_layers"],
                   "target_modules": TARGETS, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.05, "modules": modules},
                  f, indent=2)
    # The reference's own file: a torch.save zip of name -> tensor (same tensors as adapter/).
    # PEFT saves a plain dict (get_peft_model_state_dict builds one).
    torch.save(dict(state), os.path.join(out, "adapter_ref", "adapter_model.bin"))

    sp = spm.SentencePieceProcessor(model_file=os.path.join(TESTDATA, "stories260K", "tokenizer.model"))
    rows = make_rows()
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(rows, f, indent=1)
    golden = {"cutoff_len": CUTOFF, "n_rows": len(rows), "data": "data.json", "settings": []}
    with torch.no_grad():
        for train_on_inputs in (True, False):
            exs = [tokenize(sp, r, train_on_inputs, True) for r in rows]
            for bs in (1, 4):
                for ob in (False, True):
                    res = []
                    for s in range(0, len(exs), bs):
                        chunk = exs[s:s + bs]
                        ids, att, lab = collate(chunk)
                        logits, per_layer = model(ids, att)
                        aux = sum(balance_loss(pl, EXPERTS[il], TOP_K[il]) for il, pl in enumerate(per_layer))
                        lg, lb = logits[:, :-1], lab[:, 1:]
                        nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=-100,
                                              reduction="none").view(lb.shape)
                        ce_batch = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=-100)
                        loss = ce_batch + 0.001 * aux if ob else ce_batch
                        for b in range(len(chunk)):
                            n = int((lb[b] != -100).sum())
                            res.append({"index": s + b, "n_tokens": len(chunk[b][0]), "n_label_tokens": n,
                                        "ce": float(nll[b].sum() / n), "aux": float(aux), "loss": float(loss)})
                    golden["settings"].append({"train_on_inputs": train_on_inputs, "batch_size": bs, "obalance": ob,
                                               "input_ids": [e[0] for e in exs], "labels": [e[1] for e in exs],
                                               "rows": res})
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
