"""Turn the plain fp32 ONNX export into its serving variants, and store any graph the same way.

Variants: a fused fp32 graph (ONNX Runtime's transformer optimiser at O1/O2/O3), an fp16 graph
for CUDA (converted on CPU, float inputs/outputs kept fp32) and a dynamic int8 graph for CPU. Every
file goes through `store`, which keeps weights inline up to a size threshold and in an external
`<file>_data` file beyond it: protobuf cannot serialise a message over 2 GiB (XLM-R large in fp32).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

OptimizeLevel = Literal["O1", "O2", "O3"]
OPTIMIZE_LEVELS: tuple[OptimizeLevel, ...] = ("O1", "O2", "O3")
# Below protobuf's 2 GiB hard limit, leaving room for the graph itself beside the weights.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
EXTERNAL_DATA_SUFFIX = "_data"


@dataclass(frozen=True)
class ModelShape:
    num_heads: int
    hidden_size: int


def read_model_shape(checkpoint_dir: Path) -> ModelShape:
    """Attention heads and hidden size the ORT transformer optimiser needs to fuse attention."""
    config = json.loads((checkpoint_dir / "config.json").read_text(encoding="utf-8"))
    return ModelShape(
        num_heads=int(config["num_attention_heads"]), hidden_size=int(config["hidden_size"])
    )


def onnx_bytes(path: Path) -> int:
    """A graph's size on disk: the .onnx file plus every external data file it references."""
    return path.stat().st_size + sum((path.parent / n).stat().st_size for n in external_files(path))


def external_files(path: Path) -> list[str]:
    """The external data files a graph references, relative to its folder."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    tensors = [*model.graph.initializer]
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    return sorted({ExternalDataInfo(t).location for t in tensors if uses_external_data(t)})


def store(path: Path, threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Rewrite `path` with its weights inline (at most `threshold` bytes) or in `<name>_data`.

    Tools name their external files differently (`.data`, random names); afterwards a graph has at
    most one, named after it, so a bundle's file list is predictable. Returns the external file
    names (relative to the graph's folder).
    """
    import onnx

    old = external_files(path)
    external = onnx_bytes(path) > threshold
    if not old and not external:
        return []
    model = onnx.load(str(path), load_external_data=True)
    # onnx appends to an existing external file, so stale ones go before saving.
    for name in old:
        (path.parent / name).unlink()
    if not external:
        onnx.save_model(model, str(path))
        return []
    location = path.name + EXTERNAL_DATA_SUFFIX
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=1024,
    )
    # onnx creates the data file owner-only (0600); a server running as another user (the Docker
    # image's) must read it like the graph beside it.
    (path.parent / location).chmod(path.stat().st_mode & 0o777)
    return [location]


def optimize_fp32(
    source: Path, target: Path, shape: ModelShape, level: OptimizeLevel, *, external: bool
) -> str:
    """ORT's optimiser at an optimum-style level; returns a description of what was done.

    O1: ONNX Runtime's basic graph rewrites only (constant folding, redundant nodes), saved offline.
    O2: O1 plus the transformer fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization,
    BiasGelu). O3: O2 with GELU replaced by its tanh approximation (FastGelu), not exact.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if level == "O1":
        optimized = optimize_model(str(source), opt_level=1, only_onnxruntime=True)
        what = "onnxruntime basic graph optimisations (opt_level 1), no transformer fusions"
    else:
        options = FusionOptions("bert")
        options.enable_gelu_approximation = level == "O3"
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=shape.num_heads,
            hidden_size=shape.hidden_size,
            optimization_options=options,
            opt_level=1,
        )
        fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
        what = (
            f"onnxruntime.transformers optimize_model bert (num_heads={shape.num_heads}, "
            f"hidden_size={shape.hidden_size}, gelu approximation {level == 'O3'}); fused {fused}"
        )
    optimized.save_model_to_file(str(target), use_external_data_format=external)
    return f"{level}: {what}"


def convert_fp16(source: Path, target: Path, *, external: bool) -> str:
    """fp16 weights and compute, float32 graph inputs/outputs (casts at the edges), for CUDA."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source), load_external_data=True))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target), use_external_data_format=external)
    return "onnxruntime.transformers convert_float_to_float16 (keep_io_types=True)"


_EMBEDDING_LOOKUPS = frozenset({"Gather", "EmbedLayerNormalization"})


def word_embedding_nodes(model_path: Path) -> list[str]:
    """Nodes that look up `input_ids` in a weight table: the word embeddings (plain or fused)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in _EMBEDDING_LOOKUPS
        and "input_ids" in node.input
        and weights.intersection(node.input)
    ]


def quantize_int8(
    source: Path,
    target: Path,
    *,
    keep_word_embeddings_fp32: bool,
    external: bool,
    per_channel: bool = False,
    reduce_range: bool = False,
) -> str:
    """Dynamic int8 (QInt8 weights, activations quantized at run time); returns a description."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = word_embedding_nodes(source) if keep_word_embeddings_fp32 else []
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        nodes_to_exclude=excluded,
        use_external_data_format=external,
        # ONNX shape inference cannot type the outputs of ORT's fused contrib ops (Attention,
        # SkipLayerNormalization); everything in these graphs is float, so say so.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    kept = f"word embeddings kept fp32 ({', '.join(excluded)})" if excluded else "all quantized"
    return f"onnxruntime.quantization quantize_dynamic QInt8 weights; {kept}"
