#!/usr/bin/env python3
"""Write GGUF test files, with the values they hold, for the GGUF reader's tests.

Usage:  make_test_gguf.py OUT_DIR [--seed N]

Prints the path of every file it wrote, one a line. For each GGUF file
``NAME.gguf`` there is a sidecar ``NAME.json`` describing what the file holds:

    {
      "file": "NAME.gguf", "version": 3, "alignment": 32,
      "metadata": [ {"key": "...", "type": "UINT8", "value": 7}, ...,
                    {"key": "...", "type": "ARRAY", "element_type": "INT16", "value": [...]},
                    {"key": "...", "type": "ARRAY", "element_type": "ARRAY",
                     "value": [{"element_type": "UINT16", "value": [...]}, ...]} ],
      "tensors": [ {"name": "...", "type": "Q4_K", "shape": [ne0, ne1, ...],
                    "offset": bytes from the start of the data section,
                    "n_bytes": ..., "values": [dequantized floats, ne0 fastest]} ]
    }

Metadata lists every key in file order, including ``general.architecture``
(written first by the writer) and ``general.alignment`` where set. FLOAT32
values are given as the float32 value actually stored (e.g. 0.1 appears as
0.10000000149011612). Tensor values are what ``gguf.quants.dequantize``
returns for the bytes in the file (float32, written exactly as decimal).

Files:
    all-types-v3.gguf   every metadata value type (uint8 .. float64, bool,
                        string), arrays of each, nested arrays (arrays of
                        arrays of different element types, two levels deep),
                        an empty array, edge values (integer extremes, empty
                        and non-ASCII strings); tensors of type F32 (1-, 2- and
                        3-D), F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, two of each.
    all-types-v2.gguf   the same content as a GGUF version 2 file (v2 and v3
                        differ only in the version number for little-endian
                        files; the gguf writer emits v3, so the version field
                        is rewritten to 2).
    align64-v3.gguf     a few tensors with general.alignment = 64.

Quantized tensors: F16 and F32 are written from random floats; BF16, Q8_0 and
Q4_0 are quantized from random floats with ``gguf.quants.quantize``; the
``gguf`` package cannot quantize Q4_K or Q6_K, so those blocks are built from
random bytes (all bit patterns of the packed scales and quants) with finite
float16 super-block scales, then dequantized by the package like the others.

Every file is read back with ``gguf.GGUFReader`` and checked against the
sidecar before the script reports success (nested arrays are compared in the
flattened form that reader gives them).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QType
    from gguf import GGUFValueType as VType
except ImportError as error:  # pragma: no cover - environment problem
    sys.exit(f"make_test_gguf.py: the 'gguf' Python package is required ({error})")


# MARK: - Writer that also takes typed (nested or empty) arrays

class TypedArray:
    """A metadata array with an explicit element type.

    The stock writer infers an array's element type from its first item and
    refuses empty arrays; nested arrays and empty arrays are spelled with this
    class instead."""

    def __init__(self, element_type: VType, items: list):
        self.element_type = element_type
        self.items = items


class TestFileWriter(gguf.GGUFWriter):
    """GGUFWriter that also packs TypedArray values (nested and empty arrays)."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if isinstance(val, TypedArray):
            out = bytearray()
            if add_vtype:
                out += self._pack("I", VType.ARRAY)
            out += self._pack("I", val.element_type)
            out += self._pack("Q", len(val.items))
            for item in val.items:
                out += self._pack_val(item, val.element_type, add_vtype=False)
            return bytes(out)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


# MARK: - Metadata content

def f32(value: float) -> float:
    """The value a FLOAT32 field really holds."""
    return float(np.float32(value))


def metadata_entries() -> list[tuple[str, VType, object, VType | None]]:
    """(key, type, value, array element type) in the order written."""
    u64_max = 2**64 - 1
    i64_min, i64_max = -2**63, 2**63 - 1
    return [
        ("test.uint8", VType.UINT8, 255, None),
        ("test.int8", VType.INT8, -128, None),
        ("test.uint16", VType.UINT16, 65535, None),
        ("test.int16", VType.INT16, -32768, None),
        ("test.uint32", VType.UINT32, 4294967295, None),
        ("test.int32", VType.INT32, -2147483648, None),
        ("test.float32", VType.FLOAT32, 0.1, None),
        ("test.bool_true", VType.BOOL, True, None),
        ("test.bool_false", VType.BOOL, False, None),
        ("test.string", VType.STRING, "hello, GGUF", None),
        ("test.string_empty", VType.STRING, "", None),
        ("test.string_unicode", VType.STRING, "\u2581caf\u00e9 \u65e5\u672c \U0001F600", None),
        ("test.uint64", VType.UINT64, u64_max, None),
        ("test.int64", VType.INT64, i64_min, None),
        ("test.float64", VType.FLOAT64, -1.2345678901234567e-300, None),
        ("test.float32_large", VType.FLOAT32, 3.4028234663852886e38, None),
        ("test.float64_one_third", VType.FLOAT64, 1.0 / 3.0, None),
        ("test.array.uint8", VType.ARRAY, [0, 1, 127, 128, 255], VType.UINT8),
        ("test.array.int8", VType.ARRAY, [-128, -1, 0, 1, 127], VType.INT8),
        ("test.array.uint16", VType.ARRAY, [0, 1, 65535], VType.UINT16),
        ("test.array.int16", VType.ARRAY, [-32768, 0, 32767], VType.INT16),
        ("test.array.uint32", VType.ARRAY, [0, 1, 4294967295], VType.UINT32),
        ("test.array.int32", VType.ARRAY, [-2147483648, -1, 2147483647], VType.INT32),
        ("test.array.float32", VType.ARRAY, [0.0, -1.5, 0.1, 1e-10, 65504.0], VType.FLOAT32),
        ("test.array.bool", VType.ARRAY, [True, False, True], VType.BOOL),
        ("test.array.string", VType.ARRAY, ["a", "", "\u2581the", "<0x0A>", "\u00fc"], VType.STRING),
        ("test.array.uint64", VType.ARRAY, [0, 1, u64_max], VType.UINT64),
        ("test.array.int64", VType.ARRAY, [i64_min, -1, i64_max], VType.INT64),
        ("test.array.float64", VType.ARRAY, [0.0, -2.5, 1e300, 5e-324], VType.FLOAT64),
        ("test.array.empty", VType.ARRAY, TypedArray(VType.INT32, []), None),
        ("test.array.nested", VType.ARRAY, TypedArray(VType.ARRAY, [
            TypedArray(VType.UINT16, [1, 2, 3]),
            TypedArray(VType.STRING, ["x", "yz"]),
            TypedArray(VType.FLOAT64, []),
            TypedArray(VType.BOOL, [True]),
        ]), None),
        ("test.array.nested2", VType.ARRAY, TypedArray(VType.ARRAY, [
            TypedArray(VType.ARRAY, [TypedArray(VType.INT8, [-1, 2]), TypedArray(VType.INT8, [3])]),
            TypedArray(VType.ARRAY, []),
        ]), None),
        ("test.after_arrays", VType.UINT32, 12345, None),
    ]


def describe_array(element_type: VType, items: list) -> dict:
    """JSON description of an array: element type and (recursively) its items."""
    if element_type == VType.ARRAY:
        values = []
        for item in items:
            inner = describe_array(item.element_type, item.items)
            values.append(inner)
        return {"element_type": element_type.name, "value": values}
    if element_type == VType.FLOAT32:
        return {"element_type": element_type.name, "value": [f32(v) for v in items]}
    return {"element_type": element_type.name, "value": list(items)}


def describe_entry(key: str, vtype: VType, value, element_type: VType | None) -> dict:
    if vtype == VType.ARRAY:
        if isinstance(value, TypedArray):
            body = describe_array(value.element_type, value.items)
        else:
            body = describe_array(element_type, value)
        return {"key": key, "type": "ARRAY", **body}
    if vtype == VType.FLOAT32:
        value = f32(value)
    return {"key": key, "type": vtype.name, "value": value}


def flatten(description: dict) -> list:
    """Leaf values of an array description, in file order (how GGUFReader reads them)."""
    if description["element_type"] == "ARRAY":
        return [leaf for inner in description["value"] for leaf in flatten(inner)]
    return list(description["value"])


# MARK: - Tensor content

def random_k_blocks(rng: np.random.Generator, qtype: QType, n_rows: int, row_len: int) -> np.ndarray:
    """Raw Q4_K / Q6_K rows from random bytes with finite float16 scales."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if row_len % block_size:
        raise ValueError(f"{qtype.name} row length {row_len} is not a multiple of {block_size}")
    n_blocks = n_rows * row_len // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scales = (rng.uniform(0.001, 0.05, size=(n_blocks, 2)) * rng.choice([-1.0, 1.0], size=(n_blocks, 2)))
    scales = scales.astype(np.float16).view(np.uint8).reshape(n_blocks, 4)
    if qtype == QType.Q4_K:      # d, dmin (f16 each), scales[12], qs[128]
        blocks[:, 0:4] = scales
    elif qtype == QType.Q6_K:    # ql[128], qh[64], scales[16] (int8), d (f16)
        blocks[:, type_size - 2:] = scales[:, 0:2]
    else:
        raise ValueError(f"no random block builder for {qtype.name}")
    return blocks.reshape(n_rows, -1)


def make_tensor(rng: np.random.Generator, qtype: QType, shape: list[int]) -> np.ndarray:
    """Array to hand to GGUFWriter.add_tensor for a tensor of GGUF shape `shape` (ne0 first)."""
    numpy_shape = tuple(reversed(shape))
    floats = rng.standard_normal(numpy_shape).astype(np.float32)
    if qtype == QType.F32:
        return floats
    if qtype == QType.F16:
        return floats.astype(np.float16)
    if qtype in (QType.BF16, QType.Q8_0, QType.Q4_0):
        return gguf.quants.quantize(floats, qtype)
    if qtype in (QType.Q4_K, QType.Q6_K):
        rows = int(np.prod(numpy_shape[:-1]))
        raw = random_k_blocks(rng, qtype, rows, shape[0])
        return raw.reshape(*numpy_shape[:-1], -1)
    raise ValueError(f"unsupported tensor type {qtype.name}")


ALL_TENSORS = [
    ("f32.vector", QType.F32, [7]),
    ("f32.matrix", QType.F32, [5, 3]),
    ("f32.cube", QType.F32, [4, 3, 2]),
    ("f16.matrix", QType.F16, [8, 3]),
    ("f16.vector", QType.F16, [33]),
    ("bf16.matrix", QType.BF16, [8, 2]),
    ("bf16.vector", QType.BF16, [5]),
    ("q8_0.matrix", QType.Q8_0, [64, 3]),
    ("q8_0.row", QType.Q8_0, [32]),
    ("q4_0.matrix", QType.Q4_0, [64, 2]),
    ("q4_0.row", QType.Q4_0, [96]),
    ("q4_k.matrix", QType.Q4_K, [512, 2]),
    ("q4_k.row", QType.Q4_K, [256]),
    ("q6_k.matrix", QType.Q6_K, [256, 3]),
    ("q6_k.row", QType.Q6_K, [512]),
]

ALIGN64_TENSORS = [
    ("a", QType.F32, [3]),
    ("b", QType.Q8_0, [32, 2]),
    ("c", QType.F16, [5]),
]


# MARK: - Writing and checking

def write_file(path: Path, rng: np.random.Generator, entries, tensors, alignment: int | None,
               version: int) -> dict:
    writer = TestFileWriter(path, arch="test")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, vtype, value, element_type in entries:
        writer.add_key_value(key, value, vtype, sub_type=element_type)
    arrays = {}
    for name, qtype, shape in tensors:
        data = make_tensor(rng, qtype, shape)
        raw_dtype = None if qtype in (QType.F32, QType.F16) else qtype
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
        arrays[name] = (qtype, shape, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    if version != gguf.GGUF_VERSION:
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(struct.pack("<I", version))

    metadata = [{"key": "general.architecture", "type": "STRING", "value": "test"}]
    if alignment is not None:
        metadata.append({"key": "general.alignment", "type": "UINT32", "value": alignment})
    metadata += [describe_entry(*e) for e in entries]

    reader = gguf.GGUFReader(str(path))
    described_tensors = []
    for info in reader.tensors:
        qtype, shape, _ = arrays[info.name]
        values = np.asarray(gguf.quants.dequantize(info.data, info.tensor_type), dtype=np.float32)
        described_tensors.append({
            "name": info.name,
            "type": qtype.name,
            "shape": shape,
            "offset": int(info.data_offset - reader.data_offset),
            "n_bytes": int(info.n_bytes),
            "values": [float(v) for v in values.reshape(-1)],
        })
    return {"file": path.name, "version": version,
            "alignment": alignment if alignment is not None else gguf.GGUF_DEFAULT_ALIGNMENT,
            "metadata": metadata, "tensors": described_tensors}


def check_file(path: Path, description: dict, tensors) -> None:
    """Read the file back with GGUFReader and compare it with its description."""
    reader = gguf.GGUFReader(str(path))
    version = reader.fields["GGUF.version"].contents()
    if version != description["version"]:
        raise AssertionError(f"{path}: version {version}, expected {description['version']}")
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    expected_keys = [m["key"] for m in description["metadata"]]
    if keys != expected_keys:
        raise AssertionError(f"{path}: keys {keys} differ from {expected_keys}")
    for entry in description["metadata"]:
        field = reader.fields[entry["key"]]
        if field.types[0].name != entry["type"]:
            raise AssertionError(f"{path}: {entry['key']} has type {field.types[0].name}")
        if entry["type"] == "ARRAY":
            want = flatten(entry)
            # The reader flattens nested arrays to their leaves: a string leaf is
            # its bytes, a number or bool leaf a one-element array.
            leaves = [field.parts[i] for i in field.data] if want else []
            got = [leaf.tobytes().decode("utf-8") if isinstance(w, str) else leaf.tolist()[0]
                   for leaf, w in zip(leaves, want)]
            if len(leaves) != len(want) or any(not _same(g, w) for g, w in zip(got, want)):
                raise AssertionError(f"{path}: {entry['key']} reads back as {got}, expected {want}")
        else:
            got = field.contents()
            if not _same(got, entry["value"]):
                raise AssertionError(f"{path}: {entry['key']} reads back as {got!r}, expected {entry['value']!r}")
    if [t.name for t in reader.tensors] != [t[0] for t in tensors]:
        raise AssertionError(f"{path}: tensor names differ")
    for info, want in zip(reader.tensors, description["tensors"]):
        if info.tensor_type.name != want["type"] or [int(d) for d in info.shape] != want["shape"]:
            raise AssertionError(f"{path}: tensor {info.name} is {info.tensor_type.name} {info.shape}")
        if (info.data_offset - reader.data_offset) % description["alignment"]:
            raise AssertionError(f"{path}: tensor {info.name} is not aligned")
        values = gguf.quants.dequantize(info.data, info.tensor_type).reshape(-1)
        if not np.array_equal(values, np.asarray(want["values"], dtype=np.float32)):
            raise AssertionError(f"{path}: tensor {info.name} values differ")
        if not np.all(np.isfinite(values)):
            raise AssertionError(f"{path}: tensor {info.name} has non-finite values")


def _same(got, want) -> bool:
    if isinstance(want, float):
        return float(got) == want
    return got == want


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write GGUF test files and JSON descriptions of their content.")
    ap.add_argument("out_dir", help="directory to write into (created if missing)")
    ap.add_argument("--seed", type=int, default=20240601, help="random seed for tensor content")
    args = ap.parse_args(argv)

    out = Path(args.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"make_test_gguf.py: error: cannot create {out}: {error}", file=sys.stderr)
        return 2

    plans = [
        ("all-types-v3", metadata_entries(), ALL_TENSORS, None, 3, args.seed),
        ("all-types-v2", metadata_entries(), ALL_TENSORS, None, 2, args.seed),
        ("align64-v3", [("test.note", VType.STRING, "aligned to 64 bytes", None)], ALIGN64_TENSORS, 64, 3,
         args.seed + 1),
    ]
    written = []
    try:
        for stem, entries, tensors, alignment, version, seed in plans:
            path = out / f"{stem}.gguf"
            description = write_file(path, np.random.default_rng(seed), entries, tensors, alignment, version)
            check_file(path, description, tensors)
            sidecar = out / f"{stem}.json"
            sidecar.write_text(json.dumps(description, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
            written += [path, sidecar]
    except (OSError, ValueError, AssertionError) as error:
        print(f"make_test_gguf.py: error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
