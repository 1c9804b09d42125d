"""The copywriter LM written out as an ONNX graph node by node, on opset 23's LLM operators.

`build_model(graph, inputs, outputs, opset)` turns a `LlamaGraph` (the Hugging Face weights, possibly
smoothed for int8) into the same function as its traced export, with the inputs and outputs the
exporter declares (`edge.lm.graph_specs`, passed in, so this module does not import its caller):

    (input_ids, attention_mask, position_ids, num_logits, past_key_0, past_value_0, ...)
        -> (logits, present_key_0, present_value_0, ...)

Why build it rather than trace it: decoding one token is about 14 MB of int8 weights but, traced,
about 2,000 small nodes (every `view` becomes Shape/Gather/Unsqueeze/Concat/Reshape, every rotary
half a Slice/Neg/Concat), and onnxruntime's per-node cost was a third of a decode step at one
thread. Opset 23 has the Llama pieces as single operators: `RMSNormalization`, `RotaryEmbedding`
(position ids into cos/sin tables, the rotate-half layout) and `Attention` (grouped-query heads,
the KV cache in and out, an additive mask), so a layer is 16 nodes. The q/k/v projections are one
MatMul and so are gate/up, which gives the int8 kernels bigger, fewer products.

The mask is built once from `attention_mask` as in `LlamaGraph.forward` (causal, padding keys
hidden, a finite -1e9 floor so a left-padding query gives no NaN) and shared by every layer.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from brushpen.edge.common import TensorSpec
from brushpen.edge.lm_graph import LlamaGraph

_DTYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, name: str, tensor: torch.Tensor) -> str:
        return self.const(name, tensor.detach().float().numpy())

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int | list[str] = 1, **attrs):
        """Add a node; its outputs are named after the node (`name`, or `name:k` for several)."""
        if isinstance(outputs, int):
            outputs = [name] if outputs == 1 else [f"{name}:{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def _attention_bias(b: _Builder) -> str:
    """(batch, 1, seq, total) additive mask: 0 where query i may see key j, -1e9 elsewhere."""
    b.const("zero", np.array(0, np.int64))
    b.const("one", np.array(1, np.int64))
    b.const("axis0", np.array([0], np.int64))
    b.const("axis1", np.array([1], np.int64))
    past = b.op("Shape", ["past_key_0"], "past_len", start=2, end=3)
    seq = b.op("Shape", ["input_ids"], "seq_len", start=1, end=2)
    total = b.op("Add", [past, seq], "total_len")
    keys = b.op("Range", ["zero", b.op("Squeeze", [total, "axis0"], "total_s"), "one"], "key_pos")
    queries = b.op("Range", [b.op("Squeeze", [past, "axis0"], "past_s"), "total_s", "one"], "query_pos")
    causal = b.op("LessOrEqual", [keys, b.op("Unsqueeze", [queries, "axis1"], "query_col")], "causal")
    real = b.op("Unsqueeze", [b.op("Cast", ["attention_mask"], "mask_bool", to=TensorProto.BOOL), "axis1"],
                "mask_row")
    allowed = b.op("And", [causal, real], "allowed")
    b.const("open", np.array(0.0, np.float32))
    b.const("shut", np.array(-1e9, np.float32))
    bias = b.op("Where", [allowed, "open", "shut"], "bias3")
    return b.op("Unsqueeze", [bias, "axis1"], "attn_bias")


def build_model(graph: LlamaGraph, inputs: list[TensorSpec], outputs: list[TensorSpec], opset: int) -> onnx.ModelProto:
    """The ONNX model of `graph` (fp32 weights inside; quantize it afterwards for int8), declaring
    `inputs` and `outputs` (by name, dtype and shape) on the given opset (23 or later)."""
    s = graph.s
    b = _Builder()
    q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    eps = float(s.rms_norm_eps)
    pos = torch.arange(s.max_positions, dtype=torch.float32)[:, None] * graph.inv_freq   # as LlamaGraph
    b.const("cos_cache", pos.cos().numpy())
    b.const("sin_cache", pos.sin().numpy())
    b.const("split_qkv", np.array([q_dim, kv_dim, kv_dim], np.int64))
    b.const("split_mlp", np.array([s.intermediate_size] * 2, np.int64))
    bias = _attention_bias(b)
    x = b.op("Gather", [b.weight("embed_tokens.weight", graph.embed_tokens.weight), "input_ids"], "embed")
    presents = []
    for i, layer in enumerate(graph.layers):
        p, att, mlp = f"layers.{i}", layer.self_attn, layer.mlp
        h = b.op("RMSNormalization", [x, b.weight(f"{p}.input_layernorm.weight", layer.input_layernorm.weight)],
                 f"{p}/input_norm", epsilon=eps, axis=-1)
        wqkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).T
        qkv = b.op("MatMul", [h, b.weight(f"{p}.qkv_proj.weight_t", wqkv)], f"{p}/qkv_proj/MatMul")
        if s.qkv_bias:
            bqkv = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias])
            qkv = b.op("Add", [qkv, b.weight(f"{p}.qkv_proj.bias", bqkv)], f"{p}/qkv_proj/Add")
        q, k, v = b.op("Split", [qkv, "split_qkv"], f"{p}/split_qkv", outputs=3, axis=-1)
        q = b.op("RotaryEmbedding", [q, "cos_cache", "sin_cache", "position_ids"], f"{p}/rotary_q",
                 num_heads=s.num_heads)
        k = b.op("RotaryEmbedding", [k, "cos_cache", "sin_cache", "position_ids"], f"{p}/rotary_k",
                 num_heads=s.num_kv_heads)
        present_k, present_v = f"present_key_{i}", f"present_value_{i}"
        y = b.op("Attention", [q, k, v, bias, f"past_key_{i}", f"past_value_{i}"], f"{p}/attention",
                 outputs=[f"{p}/attention", present_k, present_v], q_num_heads=s.num_heads,
                 kv_num_heads=s.num_kv_heads, scale=float(s.head_dim ** -0.5))[0]
        presents += [present_k, present_v]
        o = b.op("MatMul", [y, b.weight(f"{p}.o_proj.weight_t", att.o_proj.weight.T)], f"{p}/o_proj/MatMul")
        x = b.op("Add", [x, o], f"{p}/attn_residual")
        h = b.op("RMSNormalization", [x, b.weight(f"{p}.post_attention_layernorm.weight",
                                                  layer.post_attention_layernorm.weight)],
                 f"{p}/post_norm", epsilon=eps, axis=-1)
        wgu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).T
        gu = b.op("MatMul", [h, b.weight(f"{p}.gate_up_proj.weight_t", wgu)], f"{p}/gate_up_proj/MatMul")
        gate, up = b.op("Split", [gu, "split_mlp"], f"{p}/split_mlp", outputs=2, axis=-1)
        silu = b.op("Mul", [gate, b.op("Sigmoid", [gate], f"{p}/gate_sigmoid")], f"{p}/silu")
        m = b.op("Mul", [silu, up], f"{p}/swiglu")
        d = b.op("MatMul", [m, b.weight(f"{p}.down_proj.weight_t", mlp.down_proj.weight.T)],
                 f"{p}/mlp/down_proj/MatMul")
        x = b.op("Add", [x, d], f"{p}/mlp_residual")
    # Logits for the last num_logits positions only (1 while decoding).
    first = b.op("Sub", ["seq_len", "num_logits"], "first_logit")
    last = b.op("Slice", [x, first, "seq_len", "axis1"], "last_hidden")
    h = b.op("RMSNormalization", [last, b.weight("norm.weight", graph.norm.weight)], "final_norm",
             epsilon=eps, axis=-1)
    head = graph.embed_tokens.weight if graph.lm_head is None else graph.lm_head.weight
    # The output layer as its own transposed table even when tied: the int8 pass quantizes a MatMul
    # weight and a Gather table in different layouts.
    b.op("MatMul", [h, b.weight("lm_head.weight_t", head.T)], "lm_head/MatMul", outputs=["logits"])

    value_info = lambda t: helper.make_tensor_value_info(t.name, _DTYPES[t.dtype], t.shape)  # noqa: E731
    g = helper.make_graph(b.nodes, "brushpen_llama", [value_info(t) for t in inputs],
                          [value_info(t) for t in outputs], initializer=b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="brushpen")
    model.ir_version = 10
    return model
