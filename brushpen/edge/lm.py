"""`brushpen export` for the copywriter LM: an fp32 ONNX graph with a KV cache, its dynamic int8
twin, and a parity report.

The graph is `edge.lm_graph.LlamaGraph` traced with `torch.onnx.export(dynamo=False)`: one graph
whose past may be empty, dynamic in batch, new tokens and past length. The int8 graph is
onnxruntime's dynamic quantization of every MatMul (weights int8 per output channel, activations
quantized on the fly) and of the embedding Gather, after SmoothQuant rescaling (`edge.lm_smooth`). Parity is greedy decoding under onnxruntime
against PyTorch greedy (`generate`) on fixed prompts; the report lands in `edge/report.json`.

Small models (fortunes-lm) keep their graphs in the store's `edge/` folder; SmolLM2's 540 MB graph
is derived, so it goes to `$BRUSHPEN_HOME/edge/text/<name>/` (see `edge.common.edge_dir`).
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from brushpen.adapters import weights_sha256
from brushpen.edge.common import (OPSET, TensorSpec, VariantInfo, edge_dir, write_info, write_onnx,
                                  write_report)
from brushpen.errors import BadParameter

Progress = Callable[[str, float], None]
COMMIT_LIMIT = 25 * 2**20          # a graph this small is committed beside the model; bigger ones are derived
PARITY_PROMPTS = ("The best thing about", "Write one punchy headline for a bakery:", "Q: What is a cat?\nA:")
PARITY_NEW_TOKENS = 24


def graph_specs(num_layers: int, num_kv_heads: int, head_dim: int, vocab: int) -> tuple[list, list]:
    inputs = [TensorSpec("input_ids", "int64", ["batch", "seq"]),
              TensorSpec("attention_mask", "int64", ["batch", "total"]),
              TensorSpec("position_ids", "int64", ["batch", "seq"]),
              TensorSpec("num_logits", "int64", [1])]
    outputs = [TensorSpec("logits", "float32", ["batch", "num_logits", vocab])]
    for i in range(num_layers):
        for kind in ("key", "value"):
            inputs.append(TensorSpec(f"past_{kind}_{i}", "float32", ["batch", num_kv_heads, "past", head_dim]))
            outputs.append(TensorSpec(f"present_{kind}_{i}", "float32", ["batch", num_kv_heads, "total", head_dim]))
    return inputs, outputs


def export(model_dir: Path, int8: bool = False, student: bool = False, progress: Progress | None = None) -> dict:
    """Write model.onnx (and model.int8.onnx) for a text model; return the report of every variant."""
    if student:
        raise BadParameter("the copywriter LM has no distilled student (only the GAN and the detector do): "
                           "drop --student; --int8 gives the small variant")
    progress = progress or (lambda stage, frac: None)
    model_dir = Path(model_dir)
    progress("loading the model", 0.0)
    from brushpen.text.base import load_text_model

    tm = load_text_model(model_dir)
    source = weights_sha256(sorted(model_dir.glob("*.safetensors")))
    approx_bytes = 4 * sum(p.numel() for p in tm.model.parameters())
    edge = edge_dir(model_dir, big=approx_bytes > COMMIT_LIMIT)
    edge.mkdir(parents=True, exist_ok=True)

    progress("exporting the fp32 graph", 0.1)
    proto, shape, _ = export_proto(tm.model)
    name = f"{model_dir.parent.name}/{model_dir.name}"
    inputs, outputs = graph_specs(shape.num_layers, shape.num_kv_heads, shape.head_dim, shape.vocab_size)
    extra = {"num_layers": shape.num_layers, "num_kv_heads": shape.num_kv_heads, "head_dim": shape.head_dim,
             "vocab_size": shape.vocab_size, "max_positions": shape.max_positions,
             "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}"}
    sha = write_onnx(proto, edge / "model.onnx")
    write_info(VariantInfo(name, "onnx", "model.onnx", OPSET, inputs, outputs, sha, source, None, extra), edge)
    variants = ["onnx"]
    if int8:
        progress("smoothing and quantizing to int8", 0.45)
        from brushpen.edge.lm_smooth import calibration_batches

        del proto
        smoothed, _, skip = export_proto(tm.model, calibration_batches(tm.tokenizer))
        proto8 = quantize(smoothed, skip)
        del smoothed
        sha8 = write_onnx(proto8, edge / "model.int8.onnx")
        write_info(VariantInfo(name, "onnx-int8", "model.int8.onnx", OPSET, inputs, outputs, sha8, source,
                               "SmoothQuant (alpha 0.5, 8 calibration prompts), then dynamic int8: MatMul "
                               "weights per output channel, embedding Gather per tensor; activations "
                               f"quantized per tensor at run time; fp32 kept for {skip or 'none'}",
                               extra), edge)
        variants.append("onnx-int8")
    report = parity_report(tm, edge, variants, progress)
    write_report(edge, report)
    progress("done", 1.0)
    return report


def export_proto(hf_model, calibration: list[torch.Tensor] | None = None) -> tuple[object, object, list[str]]:
    """The fp32 ONNX model (in memory) of a Hugging Face Llama, its shape, and the MatMuls int8 should
    skip; with `calibration`, smoothed for int8 first (`edge.lm_smooth`: the same function, outliers
    moved into the weights)."""
    import onnx

    from brushpen.edge.lm_graph import LlamaGraph
    from brushpen.edge.lm_smooth import smooth

    graph = LlamaGraph.from_hf(hf_model)
    keep_fp32 = smooth(graph, calibration) if calibration is not None else []
    s = graph.s
    b, t, past = 2, 3, 2   # example sizes only: every axis is dynamic
    args = (torch.zeros(b, t, dtype=torch.long), torch.ones(b, past + t, dtype=torch.long),
            torch.arange(past, past + t).repeat(b, 1), torch.tensor([1]),
            *[torch.zeros(b, s.num_kv_heads, past, s.head_dim) for _ in range(2 * s.num_layers)])
    inputs, outputs = graph_specs(s.num_layers, s.num_kv_heads, s.head_dim, s.vocab_size)
    dynamic = {spec.name: {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
               for spec in inputs + outputs}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(graph, args, buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                          input_names=[i.name for i in inputs], output_names=[o.name for o in outputs],
                          dynamic_axes=dynamic)
    skip = [f"/layers.{i}/mlp/down_proj/MatMul" for i in keep_fp32]   # the tracer's node names
    return onnx.load_model_from_string(buf.getvalue()), s, skip


def quantize(proto, skip: list[str] = ()) -> object:
    """Dynamic int8 of the MatMuls and the embedding Gather (onnxruntime.quantization).

    The tracer's constant folding already stored the tied output layer as its own transposed table,
    so the quantizer sees a plain weight there too (the fp32 file holds the 49k-word table twice,
    once for the Gather and once for the output MatMul; the int8 file holds both in int8).
    Per-channel weights: on fortunes-lm they kept perplexity within 1% of fp32 (see the report).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = {n.name for n in proto.graph.node}
    if not set(skip) <= names:  # a renamed node would silently be quantized
        raise RuntimeError(f"int8 export: nodes to keep in fp32 not found: {sorted(set(skip) - names)}")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(proto, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gather"], nodes_to_exclude=list(skip))
        return onnx.load_model(dst)


def parity_report(tm, edge: Path, variants: list[str], progress: Progress) -> dict:
    """Greedy tokens of each ONNX variant against PyTorch greedy on PARITY_PROMPTS, as one batch."""
    from brushpen.edge.lm_runtime import OrtCausalLM, greedy_tokens

    prompts = [p for p in PARITY_PROMPTS]
    start = time.perf_counter()
    ref = greedy_tokens(tm.model, tm.tokenizer, prompts, PARITY_NEW_TOKENS)
    torch_s = time.perf_counter() - start
    report = {"torch": {"new_tokens": sum(map(len, ref)), "seconds": round(torch_s, 3)}}
    # Teacher-forced too: over the torch continuations, does each variant pick the same next token
    # at every position? Greedy runs diverge for good after one flip; this counts every position.
    enc = tm.tokenizer([p + tm.tokenizer.decode(r) for p, r in zip(prompts, ref)], return_tensors="pt",
                       padding=True, add_special_tokens=False)
    with torch.inference_mode():
        ref_top = tm.model(**enc).logits.argmax(-1)
    for k, variant in enumerate(variants):
        progress(f"parity: {variant} vs torch", 0.6 + 0.35 * k / len(variants))
        path = edge / ("model.onnx" if variant == "onnx" else "model.int8.onnx")
        lm = OrtCausalLM(path)
        start = time.perf_counter()
        got = greedy_tokens(lm, tm.tokenizer, prompts, PARITY_NEW_TOKENS)
        agree = token_agreement(ref, got)
        real = enc["attention_mask"].bool()
        top = lm.logits(enc["input_ids"], enc["attention_mask"]).argmax(-1)
        next_agree = round((top == ref_top)[real].float().mean().item(), 4)
        report[variant] = {"file_mb": round(path.stat().st_size / 2**20, 2), "greedy_token_agreement": agree,
                           "next_token_agreement": next_agree,
                           "identical_sequences": sum(a == b for a, b in zip(ref, got)), "prompts": len(prompts),
                           "seconds": round(time.perf_counter() - start, 3)}
    return report


def token_agreement(ref: list[list[int]], got: list[list[int]]) -> float:
    """Share of reference tokens matched position by position (a sequence counts up to its first
    divergence only: after one different token the two continue from different texts)."""
    total = sum(len(r) for r in ref)
    same = 0
    for r, g in zip(ref, got):
        for a, b in zip(r, g):
            if a != b:
                break
            same += 1
    return round(same / max(total, 1), 4)
