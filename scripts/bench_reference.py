#!/usr/bin/python3
"""Reference side of bench_eval (not a test): Hugging Face-style eager LLaMA generation (repeat_kv,
additive finfo.min mask, float32 softmax, KV cache grown by torch.cat as transformers' DynamicCache
does) plus MoLA's original per-expert Linear_MoE (router -> float32 softmax -> top-k -> renormalise ->
one LoRA expert at a time over the tokens that chose it, index_add_), on Debian's torch 1.13 with the
same kernels and BLAS as mor. Same shape and protocol as bench/bench_eval.cpp: hidden 1024,
intermediate 2816, 8 layers, 16 heads, 4 kv heads, vocab 32000, bf16, prompts of 200 tokens, 64 new
tokens without an EOS stop, B = 1 and 8, base and MoLA experts 2,2,4,4,6,6,8,8 top-2 rank 8 on all 7
modules, configurations interleaved in rounds after a warm-up, medians, and the bf16 mm peak at the
prefill shape at the start and the end.

  /usr/bin/python3 scripts/bench_reference.py [--threads 2] [--rounds 7]

Prints "RESULT <key> <median>" lines that scripts/bench_side_by_side.sh pairs with bench_eval's.
"""
import argparse
import math
import statistics
import time

import torch

C, F, L, H, HKV, V = 1024, 2816, 8, 16, 4, 32000
D = C // H
EXPERTS = [2, 2, 4, 4, 6, 6, 8, 8]
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DT = torch.bfloat16


class LinearMoE:
    """MoLA's Linear_MoE forward in eval mode (dropout off): base + per-expert LoRA over routed tokens."""

    def __init__(self, w, E, r, top_k, alpha, g):
        O, I = w.shape
        self.w, self.E, self.top_k, self.scaling = w, E, top_k, alpha / r
        b = 1 / math.sqrt(I)
        self.router = (torch.rand(E, I, generator=g) * 2 * b - b).to(DT)
        self.A = [(torch.rand(r, I, generator=g) * 2 * b - b).to(DT) for _ in range(E)]
        self.B = [(torch.randn(O, r, generator=g) * 0.01).to(DT) for _ in range(E)]

    def __call__(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = torch.nn.functional.linear(x2, self.w)
        logits = torch.nn.functional.linear(x2, self.router)
        p = torch.softmax(logits, dim=1, dtype=torch.float)
        rw, sel = torch.topk(p, self.top_k, dim=-1)
        rw = (rw / rw.sum(dim=-1, keepdim=True)).to(x.dtype)
        expert_mask = torch.nn.functional.one_hot(sel, num_classes=self.E).permute(2, 1, 0)
        for e in range(self.E):
            idx, top_x = torch.where(expert_mask[e])
            if top_x.shape[0] == 0:
                continue
            cur = x2[top_x]
            h = torch.nn.functional.linear(torch.nn.functional.linear(cur, self.A[e]), self.B[e]) * self.scaling
            y.index_add_(0, top_x, h * rw[top_x, idx, None])
        return y.reshape(*shape[:-1], -1)


class Model:
    def __init__(self, adapters, seed=1):
        g = torch.Generator().manual_seed(seed)
        w = lambda *s: (torch.randn(*s, generator=g) * 0.02).to(DT)
        self.embed = w(V, C)
        self.layers = []
        for il in range(L):
            lw = {"q_proj": w(H * D, C), "k_proj": w(HKV * D, C), "v_proj": w(HKV * D, C), "o_proj": w(C, H * D),
                  "gate_proj": w(F, C), "up_proj": w(F, C), "down_proj": w(C, F)}
            lin = {}
            for n in PROJ:
                if adapters:
                    lin[n] = LinearMoE(lw[n], EXPERTS[il], 8, 2, 16.0, g)
                else:
                    lin[n] = (lambda wt: (lambda x: torch.nn.functional.linear(x, wt)))(lw[n])
            self.layers.append((lin, torch.ones(C, dtype=DT), torch.ones(C, dtype=DT)))
        self.norm = torch.ones(C, dtype=DT)
        self.head = w(V, C)
        self.inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))

    @staticmethod
    def rms(x, wt):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
        return wt * h.to(x.dtype)

    @staticmethod
    def rotate_half(x):
        return torch.cat((-x[..., D // 2:], x[..., : D // 2]), dim=-1)

    def forward(self, ids, attn_mask, pos, cache):
        B, T = ids.shape
        S = attn_mask.shape[1]
        freqs = pos.float()[:, :, None] * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(DT)[:, None], emb.sin().to(DT)[:, None]
        mn = torch.finfo(DT).min
        mask = torch.triu(torch.full((T, S), mn, dtype=DT), diagonal=S - T + 1)[None, None].expand(B, 1, T, S).clone()
        mask = mask.masked_fill(mask.eq(0.0) * attn_mask[:, None, None, :].eq(0), mn)
        h = self.embed[ids]
        for il, (lin, n1, n2) in enumerate(self.layers):
            x = self.rms(h, n1)
            q = lin["q_proj"](x).view(B, T, H, D).transpose(1, 2)
            k = lin["k_proj"](x).view(B, T, HKV, D).transpose(1, 2)
            v = lin["v_proj"](x).view(B, T, HKV, D).transpose(1, 2)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            if cache[il] is not None:
                k = torch.cat([cache[il][0], k], dim=-2)
                v = torch.cat([cache[il][1], v], dim=-2)
            cache[il] = (k, v)
            kk = k[:, :, None].expand(B, HKV, H // HKV, S, D).reshape(B, H, S, D)
            vv = v[:, :, None].expand(B, HKV, H // HKV, S, D).reshape(B, H, S, D)
            att = torch.matmul(q, kk.transpose(2, 3)) / math.sqrt(D)
            att = torch.max(att + mask, torch.tensor(mn, dtype=DT))
            att = torch.softmax(att, dim=-1, dtype=torch.float32).to(DT)
            o = torch.matmul(att, vv).transpose(1, 2).reshape(B, T, C)
            h = h + lin["o_proj"](o)
            x = self.rms(h, n2)
            h = h + lin["down_proj"](torch.nn.functional.silu(lin["gate_proj"](x)) * lin["up_proj"](x))
        h = self.rms(h[:, -1:], self.norm)  # HF computes every position's logits in generate(); last only is kinder
        return torch.matmul(h, self.head.t()).float()


def time_generation(m, ids, new_tokens):
    B, P = ids.shape
    mask = torch.ones(B, P, dtype=torch.long)
    cache = [None] * L
    t = time.perf_counter()
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    nxt = m.forward(ids, mask, pos, cache)[:, -1].argmax(-1)
    pre = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(new_tokens - 1):
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long)], 1)
        pos = mask.sum(1, keepdim=True) - 1
        nxt = m.forward(nxt[:, None], mask, pos, cache)[:, -1].argmax(-1)
    return pre, (time.perf_counter() - t) / max(1, new_tokens - 1)


def mm_peak(M, K, N, reps=7):
    a, w = torch.randn(M, K).to(DT), torch.randn(N, K).to(DT)
    torch.mm(a, w.t())
    best = 0
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, w.t())
        best = max(best, 2.0 * M * K * N / (time.perf_counter() - t))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompt_len", type=int, default=200)
    ap.add_argument("--new_tokens", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    peak0 = mm_peak(8 * a.prompt_len, C, F)
    print("bench_reference: threads %d, mm peak at start %.1f GFLOP/s" % (torch.get_num_threads(), peak0 / 1e9))
    g = torch.Generator().manual_seed(7)
    batches = {B: torch.randint(3, V, (B, a.prompt_len), generator=g) for B in (1, 8)}
    models = {"base": Model(False), "mola": Model(True)}
    layer_params = C * C * 2.0 + C * HKV * D * 2.0 + 3.0 * C * F
    series = {}
    with torch.no_grad():
        for r in range(-1, a.rounds):
            res = {}
            for kind in ("base", "mola"):
                for B in (1, 8):
                    res[(kind, B)] = time_generation(models[kind], batches[B], a.new_tokens)
            if r < 0:
                continue
            for (kind, B), (pre, dec) in res.items():
                T = a.prompt_len
                flops = 2.0 * B * T * layer_params * L + 4.0 * B * T * T * C * L + 2.0 * B * C * V
                series.setdefault("prefill_B%d_%s_tok_s" % (B, kind), []).append(B * T / pre)
                series.setdefault("prefill_B%d_%s_pct_peak" % (B, kind), []).append(100 * flops / pre / peak0)
                series.setdefault("decode_B%d_%s_ms" % (B, kind), []).append(dec * 1e3)
            for B in (1, 8):
                series.setdefault("adapter_overhead_decode_B%d_pct" % B, []).append(
                    100 * (res[("mola", B)][1] / res[("base", B)][1] - 1))
                series.setdefault("adapter_overhead_prefill_B%d_pct" % B, []).append(
                    100 * (res[("mola", B)][0] / res[("base", B)][0] - 1))
            print("round %d done" % (r + 1), flush=True)
    peak1 = mm_peak(8 * a.prompt_len, C, F)
    print("mm peak at end %.1f GFLOP/s" % (peak1 / 1e9))
    for k in sorted(series):
        v = series[k]
        print("RESULT %s %.3f  [%s]" % (k, statistics.median(v), " ".join("%.2f" % x for x in v)))


if __name__ == "__main__":
    main()
