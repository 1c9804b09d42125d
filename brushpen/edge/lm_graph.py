"""The copywriter LM as a Llama (or Qwen2) forward with the KV cache as plain tensors: the ONNX graph's reference.

`LlamaGraph` loads a Hugging Face Llama state dict (SmolLM2, the shipped `fortunes-lm`) or a Qwen2 one
(the installable `qwen2.5-coder-0.5b`: Llama plus q/k/v biases) and runs

    (input_ids, attention_mask, position_ids, num_logits, past_key_0, past_value_0, ...)
        -> (logits, present_key_0, present_value_0, ...)

The past may be empty (length 0) on the first call, so one graph serves prefill and decode.
`attention_mask` covers past + new tokens, which is what makes left-padded batches work; logits
come for the last `num_logits` positions only (1 while generating, all of them for perplexity),
since the 49k-word output layer over a whole prompt would dominate the time to first token.

Why hand-written rather than using `LlamaForCausalLM` itself: transformers 5 threads the cache
through a `DynamicCache` object and builds its masks in helpers, while the graph needs the cache
as plain inputs and outputs. This module is the Llama equations and nothing else (RMSNorm, rotary
positions, grouped-query attention, SwiGLU); `edge.lm_onnx` writes the same function out as ONNX
nodes from its weights, and both are checked against the Hugging Face logits at export time and in tests/test_edge_lm.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class LlamaShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int
    tie_word_embeddings: bool
    qkv_bias: bool = False          # Qwen2 adds a bias to the q, k and v projections; Llama does not

    @classmethod
    def from_hf(cls, config) -> "LlamaShape":
        rope = getattr(config, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(f"rope_type '{rope_type}' is not supported by the ONNX export (only 'default')")
        if getattr(config, "use_sliding_window", False):
            raise ValueError("sliding-window attention is not supported by the ONNX export")
        qkv_bias = config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False))
        theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                   config.num_attention_heads, config.num_key_value_heads, head_dim, float(config.rms_norm_eps),
                   float(theta), int(config.max_position_embeddings), bool(config.tie_word_embeddings), qkv_bias)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.s = s
        self.q_proj = nn.Linear(s.hidden_size, s.num_heads * s.head_dim, bias=s.qkv_bias)
        self.k_proj = nn.Linear(s.hidden_size, s.num_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.v_proj = nn.Linear(s.hidden_size, s.num_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.o_proj = nn.Linear(s.num_heads * s.head_dim, s.hidden_size, bias=False)

    def forward(self, x, cos, sin, bias, past_k, past_v):
        b, t, _ = x.shape
        s = self.s
        q = self.q_proj(x).view(b, t, s.num_heads, s.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, s.num_kv_heads, s.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, s.num_kv_heads, s.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = torch.cat([past_k, k], dim=2)   # the cache holds rotated keys, as in Hugging Face's
        v = torch.cat([past_v, v], dim=2)
        group = s.num_heads // s.num_kv_heads
        # Grouped-query attention: view the query heads as (kv head, group) instead of copying K/V.
        qg = q.reshape(b, s.num_kv_heads, group * t, s.head_dim)
        scores = (qg @ k.transpose(2, 3)).view(b, s.num_kv_heads, group, t, -1) * (s.head_dim ** -0.5)
        attn = torch.softmax(scores + bias.unsqueeze(1), dim=-1)
        out = (attn.view(b, s.num_kv_heads, group * t, -1) @ v).view(b, s.num_heads, t, s.head_dim)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, s.num_heads * s.head_dim)), k, v


class MLP(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.up_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.self_attn = Attention(s)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.mlp = MLP(s)

    def forward(self, x, cos, sin, bias, past_k, past_v):
        h, k, v = self.self_attn(self.input_layernorm(x), cos, sin, bias, past_k, past_v)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


class LlamaGraph(nn.Module):
    """Llama decoder with tensor KV cache in and out; parameter names match Hugging Face's `model.*`."""

    def __init__(self, s: LlamaShape):
        super().__init__()
        self.s = s
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(Block(s) for _ in range(s.num_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.lm_head = None if s.tie_word_embeddings else nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.float32) / s.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @classmethod
    def from_hf(cls, hf_model) -> "LlamaGraph":
        graph = cls(LlamaShape.from_hf(hf_model.config))
        state = {k.removeprefix("model."): v for k, v in hf_model.state_dict().items()}
        if graph.lm_head is None:
            state.pop("lm_head.weight", None)
        graph.load_state_dict(state, strict=True)
        return graph.eval()

    def forward(self, input_ids, attention_mask, position_ids, num_logits, *past):
        b, t = input_ids.shape
        past_len = past[0].shape[2]
        x = self.embed_tokens(input_ids)
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1).unsqueeze(1)   # (b, 1, t, head_dim)
        cos, sin = emb.cos(), emb.sin()
        # Query i (absolute position past_len + i) sees key j if j <= past_len + i and j is not padding.
        keys = torch.arange(past_len + t).view(1, 1, -1)
        queries = torch.arange(t).view(1, -1, 1) + past_len
        allowed = (keys <= queries) & attention_mask.bool().unsqueeze(1)
        # A finite floor, not -inf: a left-padding query sees no key at all and must not give NaN.
        bias = torch.where(allowed, 0.0, -1e9).unsqueeze(1)   # (b, 1, t, total), broadcast over heads
        presents = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, bias, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        last = torch.arange(t - num_logits.reshape(()), t)
        h = self.norm(x.index_select(1, last))
        # The tied head as Linear on the embedding itself: one weight in the model, not two.
        flat = h.reshape(-1, self.s.hidden_size)
        logits = F.linear(flat, self.embed_tokens.weight) if self.lm_head is None else self.lm_head(flat)
        logits = logits.view(b, -1, self.s.vocab_size)
        return (logits, *presents)
