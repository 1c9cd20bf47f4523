#!/usr/bin/env python3
"""Write a tiny random Llama 2 model as GGUF, with its matrices in a chosen type.

Usage:
    make_tiny_llama.py OUT.gguf --vocab VOCAB.gguf [--type q4_k] [--layers 2]
                       [--embd 256] [--ff 512] [--heads 4] [--kv-heads 2]
                       [--tied] [--seed N]

The trained demo model exists only in F16 and Q8_0; this writes small models
whose 2-D weights (token embedding, attention and FFN matrices, output head)
are F32, F16, BF16, Q8_0, Q4_0, Q4_K or Q6_K, so that every tensor type can be
run end to end through llama.cpp and the numpy reference. Norm weights are
F32. The tokenizer metadata (``tokenizer.ggml.*``) is copied from VOCAB.gguf
(e.g. the vocab-only Llama 2 GGUF), so llama.cpp can load and tokenize.

Weights are random, scaled so activations stay of order one. F32/F16 are
written directly; BF16, Q8_0 and Q4_0 are quantized by ``gguf.quants``; the
gguf package cannot quantize Q4_K or Q6_K, so those blocks are random bytes
with float16 super-block scales chosen to give weights of a similar size.
Q4_K and Q6_K need every matrix's input dimension to be a multiple of 256
(--embd and --ff). ``--tied`` leaves out output.weight (the head then reuses
token_embd.weight). Prints the path written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QType
    from gguf import GGUFValueType as VType
except ImportError as error:  # pragma: no cover - environment problem
    sys.exit(f"make_tiny_llama.py: the 'gguf' Python package is required ({error})")

TYPES = {"f32": QType.F32, "f16": QType.F16, "bf16": QType.BF16, "q8_0": QType.Q8_0,
         "q4_0": QType.Q4_0, "q4_k": QType.Q4_K, "q6_k": QType.Q6_K}


def k_quant_rows(rng: np.random.Generator, qtype: QType, n_rows: int, row_len: int) -> np.ndarray:
    """Random Q4_K / Q6_K rows with scales giving weights of roughly +-0.05."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = n_rows * row_len // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if qtype == QType.Q4_K:
        # value = d * sc * q - dmin * m, sc and m 6-bit, q 4-bit: centre it.
        d = rng.uniform(1.0e-4, 2.0e-4, size=n_blocks)
        dmin = d * 7.5
        blocks[:, 0:2] = d.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        blocks[:, 2:4] = dmin.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    else:
        # value = d * scale * (q - 32), scale int8, q 6-bit.
        d = rng.uniform(2.0e-5, 4.0e-5, size=n_blocks) * rng.choice([-1.0, 1.0], size=n_blocks)
        blocks[:, type_size - 2:] = d.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(n_rows, -1)


def matrix(rng: np.random.Generator, qtype: QType, n_out: int, n_in: int, scale: float) -> np.ndarray:
    if qtype in (QType.Q4_K, QType.Q6_K):
        if n_in % 256:
            raise ValueError(f"{qtype.name} needs input dimension {n_in} to be a multiple of 256")
        return k_quant_rows(rng, qtype, n_out, n_in)
    values = (rng.standard_normal((n_out, n_in)) * scale).astype(np.float32)
    if qtype == QType.F32:
        return values
    if qtype == QType.F16:
        return values.astype(np.float16)
    if n_in % 32:
        raise ValueError(f"{qtype.name} needs input dimension {n_in} to be a multiple of 32")
    return gguf.quants.quantize(values, qtype)


def copy_tokenizer(writer: gguf.GGUFWriter, vocab_path: Path) -> int:
    reader = gguf.GGUFReader(str(vocab_path))
    n_vocab = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.ggml."):
            continue
        main = field.types[0]
        if main == VType.ARRAY:
            values = field.contents()
            writer.add_key_value(key, values, VType.ARRAY, sub_type=field.types[-1])
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(values)
        else:
            writer.add_key_value(key, field.contents(), main)
    if n_vocab is None:
        raise ValueError(f"{vocab_path} has no tokenizer.ggml.tokens")
    return n_vocab


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a tiny random Llama 2 GGUF model.")
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--vocab", required=True, help="GGUF file to copy tokenizer.ggml.* metadata from")
    ap.add_argument("--type", choices=sorted(TYPES), default="q4_k", help="type of the 2-D weights")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--ff", type=int, default=512)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=256, help="context_length metadata")
    ap.add_argument("--tied", action="store_true", help="omit output.weight")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    qtype = TYPES[args.type]
    if args.embd % args.heads or args.heads % args.kv_heads:
        print("make_tiny_llama.py: error: --embd must divide by --heads and --heads by --kv-heads",
              file=sys.stderr)
        return 2
    vocab_path = Path(args.vocab)
    if not vocab_path.is_file():
        print(f"make_tiny_llama.py: error: vocabulary file not found: {vocab_path}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    head_dim = args.embd // args.heads
    kv_dim = head_dim * args.kv_heads

    try:
        writer = gguf.GGUFWriter(args.out, arch="llama")
        writer.add_name(f"tiny-random-llama-{args.type}")
        writer.add_uint32("llama.context_length", args.ctx)
        writer.add_uint32("llama.embedding_length", args.embd)
        writer.add_uint32("llama.block_count", args.layers)
        writer.add_uint32("llama.feed_forward_length", args.ff)
        writer.add_uint32("llama.attention.head_count", args.heads)
        writer.add_uint32("llama.attention.head_count_kv", args.kv_heads)
        writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        writer.add_uint32("llama.rope.dimension_count", head_dim)
        writer.add_float32("llama.rope.freq_base", 10000.0)
        n_vocab = copy_tokenizer(writer, vocab_path)
        writer.add_uint32("llama.vocab_size", n_vocab)

        def add(name: str, data: np.ndarray) -> None:
            raw = None if data.dtype in (np.float32, np.float16) else qtype
            writer.add_tensor(name, data, raw_dtype=raw)

        def norm(n: int) -> np.ndarray:
            return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

        add("token_embd.weight", matrix(rng, qtype, n_vocab, args.embd, 0.5))
        for il in range(args.layers):
            p = f"blk.{il}."
            add(p + "attn_norm.weight", norm(args.embd))
            add(p + "attn_q.weight", matrix(rng, qtype, args.embd, args.embd, 0.1))
            add(p + "attn_k.weight", matrix(rng, qtype, kv_dim, args.embd, 0.1))
            add(p + "attn_v.weight", matrix(rng, qtype, kv_dim, args.embd, 0.1))
            add(p + "attn_output.weight", matrix(rng, qtype, args.embd, args.embd, 0.05))
            add(p + "ffn_norm.weight", norm(args.embd))
            add(p + "ffn_gate.weight", matrix(rng, qtype, args.ff, args.embd, 0.08))
            add(p + "ffn_up.weight", matrix(rng, qtype, args.ff, args.embd, 0.08))
            add(p + "ffn_down.weight", matrix(rng, qtype, args.embd, args.ff, 0.05))
        add("output_norm.weight", norm(args.embd))
        if not args.tied:
            add("output.weight", matrix(rng, qtype, n_vocab, args.embd, 0.1))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except (OSError, ValueError) as error:
        print(f"make_tiny_llama.py: error: {error}", file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
