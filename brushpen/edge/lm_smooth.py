"""SmoothQuant for the int8 LM graph: move activation outliers into the weights before quantizing.

onnxruntime's dynamic int8 MatMul quantizes its input with one scale per tensor. SmolLM2 has a few
activation channels hundreds of times larger than the rest, so one scale rounds every ordinary
channel to zero: plain dynamic int8 measured a perplexity in the millions on held-out text. Here,
as in SmoothQuant (Xiao et al., 2023), each input channel j of a Linear is divided by
s_j = max|x_j|^a / max|W_:,j|^(1-a) and the weight's column j multiplied by it. The division is folded
into whatever produces x (an RMSNorm weight, the up projection, the value projection), so the fp32
graph computes the same function; only the int8 rounding sees flatter activations. The
per-channel maxima come from a calibration batch of copy prompts.

Written here rather than taken from a library: onnxruntime's quantizer has no SmoothQuant pass for a
plain ONNX graph (its smoothing lives in the Intel Neural Compressor integration, not installed).
"""

from __future__ import annotations

import torch
from torch import nn

from brushpen.edge.lm_graph import LlamaGraph

ALPHA = 0.5
OUTLIER_RATIO = 50.0
# Calibration briefs: copy requests like the studio's, none of them from tests/data/briefs.json (the
# benchmark's agreement set), each rendered with one kind of copy in turn.
CALIBRATION_BRIEFS = (
    "Handmade ceramic mugs glazed in ocean colours, dishwasher safe",
    "Budgeting app that sorts your spending automatically and warns before bills are due",
    "Electric cargo bike with a 90 km range and room for two children",
    "Weekend pottery workshop for beginners, all materials included",
    "Plant-based protein bars with 20 g of protein and no added sugar",
    "Cloud backup for small offices, encrypted, set up in ten minutes",
    "Vintage vinyl record store opening a second shop downtown",
    "Waterproof hiking boots resoled for free for the first two years",
)


def calibration_batches(tokenizer) -> list[torch.Tensor]:
    """One unpadded batch per calibration prompt, in the copy service's own prompt format."""
    from brushpen.text import prompts

    kinds = list(prompts.KINDS)
    texts = [prompts.build_prompt(tokenizer, b, kinds[i % len(kinds)]) for i, b in enumerate(CALIBRATION_BRIEFS)]
    return [tokenizer(t, return_tensors="pt", add_special_tokens=False)["input_ids"] for t in texts]


def input_absmax(graph: LlamaGraph, batches: list[torch.Tensor]) -> dict[nn.Linear, torch.Tensor]:
    """Per-input-channel max |x| of every Linear over the calibration batches (no padding)."""
    stats: dict[nn.Linear, torch.Tensor] = {}

    def hook(mod, inputs, _out):
        m = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
        stats[mod] = torch.maximum(stats[mod], m) if mod in stats else m

    linears = [m for m in graph.modules() if isinstance(m, nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in linears]
    s = graph.s
    with torch.no_grad():
        for ids in batches:
            empty = [torch.zeros(ids.shape[0], s.num_kv_heads, 0, s.head_dim)] * (2 * s.num_layers)
            graph(ids, torch.ones_like(ids), torch.arange(ids.shape[1]).repeat(ids.shape[0], 1),
                  torch.tensor([ids.shape[1]]), *empty)   # every position: the head sees them all
    for h in handles:
        h.remove()
    return stats


def _scale(act: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w = torch.stack([x.abs().amax(0) for x in weights]).amax(0)
    return (act.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smooth(graph: LlamaGraph, batches: list[torch.Tensor], alpha: float = ALPHA) -> list[int]:
    """Rescale `graph` in place (same fp32 function) so its MatMul inputs quantize well.

    Returns the layers whose down projection should stay fp32: smoothing cannot tame an input whose
    largest channel is over OUTLIER_RATIO times its median (SmolLM2's layers 11 and 28 reach 4,400x
    and 630x), and quantizing those MatMuls alone moved held-out perplexity from 23.9 to 30.3.
    """
    s = graph.s
    if graph.lm_head is None:  # untie: the output layer gets its own, rescaled copy of the table
        graph.lm_head = nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        graph.lm_head.weight.copy_(graph.embed_tokens.weight)
    stats = input_absmax(graph, batches)
    keep_fp32 = [i for i, layer in enumerate(graph.layers)
                 if stats[layer.mlp.down_proj].max() > OUTLIER_RATIO * stats[layer.mlp.down_proj].median()]
    group = s.num_heads // s.num_kv_heads
    for layer in graph.layers:
        att, mlp = layer.self_attn, layer.mlp
        for norm, linears in ((layer.input_layernorm, [att.q_proj, att.k_proj, att.v_proj]),
                              (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj])):
            sc = _scale(stats[linears[0]], [m.weight for m in linears], alpha)
            norm.weight.div_(sc)
            for m in linears:
                m.weight.mul_(sc)
        # down_proj's input is silu(gate) * up: linear in up's output channel.
        sc = _scale(stats[mlp.down_proj], [mlp.down_proj.weight], alpha)
        mlp.up_proj.weight.div_(sc[:, None])
        mlp.down_proj.weight.mul_(sc)
        # o_proj's input is attention @ v: linear in v's channel, which the query heads of a group
        # share, so one scale per (kv head, dim), the largest the group asks for.
        act = stats[att.o_proj].view(s.num_kv_heads, group, s.head_dim).amax(1)
        w = att.o_proj.weight.abs().amax(0).view(s.num_kv_heads, group, s.head_dim).amax(1)
        sc = (act.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5).reshape(-1)
        att.v_proj.weight.div_(sc[:, None])
        att.o_proj.weight.mul_(sc.view(s.num_kv_heads, 1, s.head_dim).expand(-1, group, -1).reshape(-1))
    sc = _scale(stats[graph.lm_head], [graph.lm_head.weight], alpha)
    graph.norm.weight.div_(sc)
    graph.lm_head.weight.mul_(sc)
    return keep_fp32
