"""`brushpen export` for the copywriter LM: an fp32 ONNX graph with a KV cache, its int8 twin, and a
parity report.

The graph is `edge.lm_graph.LlamaGraph` written out node by node on opset 23's LLM operators
(`edge.lm_onnx`): one graph whose past may be empty, dynamic in batch, new tokens and past length.
The int8 graph (`quantize`) holds every MatMul weight as 8-bit blocks and quantizes activations to
int8 at run time; parity is greedy decoding under onnxruntime against PyTorch greedy (`generate`)
on fixed prompts; the report lands in `edge/report.json`.

Small models (fortunes-lm) keep their graphs in the store's `edge/` folder; SmolLM2's 540 MB graph
is derived, so it goes to `$BRUSHPEN_HOME/edge/text/<name>/` (see `edge.common.edge_dir`). A model
whose fp32 graph would pass protobuf's 2 GB (the installable qwen2.5-coder-0.5b: 2.5 GB) exports its
int8 graph only (670 MB); torch stays its fp32 backend.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from brushpen.adapters import weights_sha256
from brushpen.edge.common import TensorSpec, VariantInfo, edge_dir, write_info, write_onnx, write_report
from brushpen.edge.lm_graph import LlamaGraph
from brushpen.edge.lm_onnx import build_model
from brushpen.edge.lm_runtime import OrtCausalLM, greedy_tokens
from brushpen.errors import BadParameter
from brushpen.text.base import load_text_model

Progress = Callable[[str, float], None]
COMMIT_LIMIT = 25 * 2**20          # a graph this small is committed beside the model; bigger ones are derived
PARITY_PROMPTS = ("The best thing about", "Write one punchy headline for a bakery:", "Q: What is a cat?\nA:")
PARITY_NEW_TOKENS = 24
INT8_BLOCK = 32                    # inputs per int8 weight scale (and per activation scale)
OPSET_LM = 23                      # RMSNormalization, RotaryEmbedding and Attention (see edge.lm_onnx)
FP32_FILE_LIMIT = 2**31 - 2**26    # protobuf's 2 GB, less room for the graph itself: bigger models export int8 only


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
    tm = load_text_model(model_dir)
    source = weights_sha256(sorted(model_dir.glob("*.safetensors")))
    approx_bytes = 4 * sum(p.numel() for p in tm.model.parameters())
    edge = edge_dir(model_dir, big=approx_bytes > COMMIT_LIMIT)
    edge.mkdir(parents=True, exist_ok=True)

    # The tied output layer is written twice (a Gather table and a transposed MatMul weight).
    config = tm.model.config
    graph_bytes = approx_bytes + (4 * config.vocab_size * config.hidden_size if config.tie_word_embeddings else 0)
    keep_fp32 = graph_bytes < FP32_FILE_LIMIT
    if not keep_fp32 and not int8:
        raise BadParameter(f"the fp32 graph of {model_dir.name} would be {graph_bytes / 2**30:.1f} GB, over ONNX's "
                           "2 GB single-file limit: export it with --int8 (torch serves it in fp32)")
    progress("exporting the fp32 graph", 0.1)
    proto, shape = export_proto(tm.model)
    name = f"{model_dir.parent.name}/{model_dir.name}"
    inputs, outputs = graph_specs(shape.num_layers, shape.num_kv_heads, shape.head_dim, shape.vocab_size)
    extra = {"num_layers": shape.num_layers, "num_kv_heads": shape.num_kv_heads, "head_dim": shape.head_dim,
             "vocab_size": shape.vocab_size, "max_positions": shape.max_positions,
             "exporter": "brushpen.edge.lm_onnx (opset 23 RMSNormalization, RotaryEmbedding, Attention)"}
    variants = []
    if keep_fp32:
        sha = write_onnx(proto, edge / "model.onnx")
        write_info(VariantInfo(name, "onnx", "model.onnx", OPSET_LM, inputs, outputs, sha, source, None, extra),
                   edge)
        variants.append("onnx")
    else:   # a graph from an earlier export must not pose as this one's fp32 twin
        for stale in ("model.onnx", "model.json"):
            (edge / stale).unlink(missing_ok=True)
    if int8:
        progress("quantizing to int8", 0.45)
        proto8 = quantize(proto)
        del proto
        sha8 = write_onnx(proto8, edge / "model.int8.onnx")
        write_info(VariantInfo(name, "onnx-int8", "model.int8.onnx", OPSET_LM, inputs, outputs, sha8, source,
                               f"MatMulNBits: every MatMul weight int8, symmetric, one scale per {INT8_BLOCK} "
                               "inputs of each output; activations quantized to int8 per row and block at "
                               "run time (accuracy_level 4); embedding Gather int8 per tensor", extra), edge)
        variants.append("onnx-int8")
    report = parity_report(tm, edge, variants, progress)
    write_report(edge, report)
    progress("done", 1.0)
    return report


def export_proto(hf_model) -> tuple[object, object]:
    """The fp32 ONNX model (in memory) of a Hugging Face Llama and its shape, written node by node on
    opset 23 (`edge.lm_onnx`)."""
    graph = LlamaGraph.from_hf(hf_model)
    s = graph.s
    inputs, outputs = graph_specs(s.num_layers, s.num_kv_heads, s.head_dim, s.vocab_size)
    return build_model(graph, inputs, outputs, OPSET_LM), s


def quantize(proto) -> object:
    """The int8 graph: blockwise int8 MatMul weights (onnxruntime's `MatMulNBitsQuantizer`, 8 bits)
    and an int8 embedding table (`quantize_dynamic` on the Gather).

    Why blocks rather than `quantize_dynamic`'s MatMulInteger: that path quantizes each activation
    with one scale per tensor, and SmolLM2 has a few activation channels thousands of times larger
    than the rest. Plain, it measured a held-out perplexity in the millions; with SmoothQuant and the
    six worst down projections kept fp32 it reached +14.9% and greedy copy departed from fp32's
    within a few tokens. `accuracy_level` 4 quantizes activations per row and per block of
    INT8_BLOCK inputs instead, so an outlier costs precision only in its own block (+0.6% on the
    same text, no smoothing), and a row's numbers no longer depend on its batch mates. It decodes
    about 10% slower than MatMulInteger here (see BENCHMARKS.md). The 8-bit Gather of
    `MatMulNBitsQuantizer` is not supported (4 bits only), hence `quantize_dynamic` for the table.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                  MatMulNBitsQuantizer)

    with tempfile.TemporaryDirectory() as tmp:
        # Through files with external data: a 0.5B model's fp32 graph is over protobuf's 2 GB.
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "gather8.onnx"
        onnx.save_model(proto, src, save_as_external_data=True, location="fp32.onnx.data")
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"],
                         use_external_data_format=True)
        model = onnx.load_model(dst)
    config = DefaultWeightOnlyQuantConfig(block_size=INT8_BLOCK, is_symmetric=True, accuracy_level=4, bits=8,
                                          op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    return quantizer.model.model


def parity_report(tm, edge: Path, variants: list[str], progress: Progress) -> dict:
    """Greedy tokens of each ONNX variant against PyTorch greedy on PARITY_PROMPTS, as one batch."""
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
