#!/usr/bin/env python3
"""Independent numpy reference of the Llama 2 forward pass, read from a GGUF file.

This is the yardstick the Swift engine is checked against. It is written for
clarity, not speed: every step of the model is a few lines of numpy, computed
in float64 by default (``--dtype float32`` computes in float32 instead).

Model file
    Read with the ``gguf`` package (``GGUFReader``). Tensors are dequantized
    with ``gguf.quants.dequantize``; accepted types are F32, F16, BF16, Q8_0,
    Q4_0, Q4_K and Q6_K. A GGUF tensor of shape (ne0, ne1) = (in, out) is a
    row-major (out, in) matrix W, applied as y = W @ x.

Configuration (``llama.*`` metadata)
    block_count, embedding_length, feed_forward_length, attention.head_count,
    attention.head_count_kv (default head_count),
    attention.layer_norm_rms_epsilon, rope.freq_base (default 10000),
    rope.dimension_count (default head size), context_length.
    ``output.weight`` falls back to ``token_embd.weight`` (tied embeddings).

Math, per layer (GGUF names in brackets)
    h   = x + Wo . Attn(RoPE(Wq . n), RoPE(Wk . n), Wv . n),
          n = RMSNorm(x) * attn_norm          [attn_q, attn_k, attn_v, attn_output]
    out = h + W2 . (silu(W1 . m) * (W3 . m)),
          m = RMSNorm(h) * ffn_norm           [ffn_gate = W1, ffn_up = W3, ffn_down = W2]
    RMSNorm(x) = x / sqrt(mean(x^2) + eps)
    logits = output . (RMSNorm(x_last_layer) * output_norm)

RoPE layout
    llama.cpp's converter permutes the rows of the Q and K projections when it
    writes attn_q / attn_k (undoing the Hugging Face "rotate half" order), so
    the GGUF file holds them in the original adjacent-pair layout. At inference
    llama.cpp applies its "normal" RoPE mode to the stored weights: within each
    head the ADJACENT pair (x[2i], x[2i+1]), i < rope_dim/2, is rotated by
    theta = pos * base^(-2i/rope_dim); components at or past rope_dim are left
    alone. This reference does exactly that, with no permutation of its own.

Attention
    Grouped-query: query head h reads KV head h // (n_head / n_head_kv).
    Scores scaled by 1/sqrt(head_dim), causal mask, softmax over keys.
    Positions of the given tokens are 0 .. n-1 (the whole sequence is run at
    once; there is no KV cache, which keeps the reference simple).

Command line (all output is JSON on stdout; errors go to stderr, exit code 2)
    llama_ref.py MODEL.gguf --tokens 1,450,... [--all-positions]
        {"logits": [...]} for the last position, or [[...], ...] for all.
    llama_ref.py MODEL.gguf --tokens 1,450,... --layers 0:3
        Runs the embedding and layers 0, 1, 2 only and prints
        {"hidden": [[...], ...]} (all positions, before any final norm).
    llama_ref.py MODEL.gguf --layers 3:6 --hidden-in FILE
        Starts from a hidden state (n_tokens x n_embd; JSON {"hidden": ...},
        a bare JSON matrix, or .npy), runs layers 3..5 and, because the slice
        reaches the last layer, prints logits (add --emit hidden for the raw
        hidden state instead). A slice that ends before the last layer prints
        {"hidden": ...}.
    llama_ref.py MODEL.gguf --tokens ... --greedy N
        Greedy continuation: {"tokens": [...], "text": "..."} (text decoded
        from the GGUF vocabulary's SentencePiece pieces).
    llama_ref.py MODEL.gguf --perplexity-tokens FILE --ctx 512 [--chunks K]
        Perplexity the way llama.cpp's perplexity tool computes it, from the
        token ids in FILE (JSON list or {"tokens": [...]}, or ids separated by
        commas / whitespace) that must already start with BOS: chunks of ctx
        tokens, the first token of each set to BOS, only the predictions of
        positions ctx/2 .. ctx-2 scored. Prints the running figure per chunk
        on stderr and {"ppl": x, "chunks": k, ...} on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType, GGUFValueType
except ImportError as error:  # pragma: no cover - environment problem
    sys.exit(f"llama_ref.py: the 'gguf' Python package is required ({error})")


class ReferenceError(Exception):
    """Bad input: a missing tensor, an unsupported type, malformed tokens."""


SUPPORTED_TYPES = {
    GGMLQuantizationType.F32,
    GGMLQuantizationType.F16,
    GGMLQuantizationType.BF16,
    GGMLQuantizationType.Q8_0,
    GGMLQuantizationType.Q4_0,
    GGMLQuantizationType.Q4_K,
    GGMLQuantizationType.Q6_K,
}


# MARK: - Model file

@dataclass
class Config:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_base: float
    rope_dim: int
    n_ctx_train: int
    n_vocab: int


def _field(reader: gguf.GGUFReader, key: str, default=None, required: bool = False):
    field = reader.fields.get(key)
    if field is None:
        if required:
            raise ReferenceError(f"metadata key '{key}' is missing")
        return default
    return field.contents()


class Model:
    """Configuration plus lazily dequantized weights of one GGUF file."""

    def __init__(self, path: str | Path, dtype=np.float64):
        path = Path(path)
        if not path.is_file():
            raise ReferenceError(f"model file not found: {path}")
        try:
            self.reader = gguf.GGUFReader(str(path))
        except Exception as error:
            raise ReferenceError(f"cannot read GGUF file {path}: {error}") from error
        self.dtype = dtype
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._cache: dict[str, np.ndarray] = {}

        arch = _field(self.reader, "general.architecture", required=True)
        if arch != "llama":
            raise ReferenceError(f"general.architecture is '{arch}', expected 'llama'")
        n_embd = int(_field(self.reader, "llama.embedding_length", required=True))
        n_head = int(_field(self.reader, "llama.attention.head_count", required=True))
        if n_head <= 0 or n_embd % n_head != 0:
            raise ReferenceError(f"embedding_length {n_embd} is not a multiple of head_count {n_head}")
        n_head_kv = int(_field(self.reader, "llama.attention.head_count_kv", n_head))
        if n_head_kv <= 0 or n_head % n_head_kv != 0:
            raise ReferenceError(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
        head_dim = n_embd // n_head
        rope_dim = int(_field(self.reader, "llama.rope.dimension_count", head_dim))
        if rope_dim % 2 != 0 or rope_dim > head_dim:
            raise ReferenceError(f"rope.dimension_count {rope_dim} must be even and <= head size {head_dim}")
        scaling = _field(self.reader, "llama.rope.scaling.factor", 1.0)
        if float(scaling) not in (0.0, 1.0):
            raise ReferenceError(f"RoPE scaling (factor {scaling}) is not supported by this reference")
        embd = self._tensor_info("token_embd.weight")
        self.config = Config(
            n_layer=int(_field(self.reader, "llama.block_count", required=True)),
            n_embd=n_embd,
            n_ff=int(_field(self.reader, "llama.feed_forward_length", required=True)),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            rms_eps=float(_field(self.reader, "llama.attention.layer_norm_rms_epsilon", required=True)),
            rope_base=float(_field(self.reader, "llama.rope.freq_base", 10000.0)),
            rope_dim=rope_dim,
            n_ctx_train=int(_field(self.reader, "llama.context_length", required=True)),
            n_vocab=int(embd.shape[1]),
        )
        if int(embd.shape[0]) != n_embd:
            raise ReferenceError(f"token_embd.weight has row length {embd.shape[0]}, expected {n_embd}")
        self.bos_id = int(_field(self.reader, "tokenizer.ggml.bos_token_id", 1))

    def _tensor_info(self, name: str):
        info = self.tensors.get(name)
        if info is None:
            raise ReferenceError(f"tensor '{name}' is missing from the model file")
        if info.tensor_type not in SUPPORTED_TYPES:
            raise ReferenceError(f"tensor '{name}' has unsupported type {info.tensor_type.name}")
        return info

    def weight(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Dequantized tensor as a row-major array of the given numpy shape
        (GGUF's dimension order reversed: (out, in) for a matrix)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        info = self._tensor_info(name)
        expected = tuple(reversed([int(d) for d in info.shape]))
        if expected != shape:
            raise ReferenceError(f"tensor '{name}' has shape {expected} (numpy order), expected {shape}")
        values = gguf.quants.dequantize(info.data, info.tensor_type)
        values = np.asarray(values, dtype=self.dtype).reshape(shape)
        self._cache[name] = values
        return values

    def output_weight(self) -> np.ndarray:
        c = self.config
        name = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"
        return self.weight(name, (c.n_vocab, c.n_embd))

    def vocabulary(self) -> list[str]:
        tokens = _field(self.reader, "tokenizer.ggml.tokens")
        if tokens is None:
            raise ReferenceError("the model file has no tokenizer.ggml.tokens to decode text with")
        return tokens


# MARK: - Building blocks

def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight, over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x: np.ndarray, positions: np.ndarray, rope_dim: int, base: float) -> np.ndarray:
    """GGML normal-mode RoPE. x: (n_tokens, n_heads, head_dim).

    Rotates adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/rope_dim)."""
    i = np.arange(rope_dim // 2, dtype=np.float64)
    inv_freq = base ** (-2.0 * i / rope_dim)
    theta = positions.astype(np.float64)[:, None] * inv_freq[None, :]   # (n, rope_dim/2)
    cos = np.cos(theta)[:, None, :].astype(x.dtype)
    sin = np.sin(theta)[:, None, :].astype(x.dtype)
    x0 = x[..., 0:rope_dim:2]
    x1 = x[..., 1:rope_dim:2]
    out = x.copy()
    out[..., 0:rope_dim:2] = x0 * cos - x1 * sin
    out[..., 1:rope_dim:2] = x0 * sin + x1 * cos
    return out


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head_kv: int) -> np.ndarray:
    """Causal grouped-query attention.

    q: (n, n_head, d); k, v: (n, n_head_kv, d). Returns (n, n_head * d)."""
    n, n_head, d = q.shape
    group = n_head // n_head_kv
    scale = 1.0 / math.sqrt(d)
    mask = np.triu(np.full((n, n), -np.inf, dtype=q.dtype), k=1)
    out = np.empty_like(q)
    for h in range(n_head):
        kv = h // group
        scores = (q[:, h, :] @ k[:, kv, :].T) * scale + mask
        out[:, h, :] = softmax(scores) @ v[:, kv, :]
    return out.reshape(n, n_head * d)


# MARK: - Forward pass

def embed(model: Model, tokens: list[int]) -> np.ndarray:
    c = model.config
    for t in tokens:
        if not 0 <= t < c.n_vocab:
            raise ReferenceError(f"token id {t} is outside the vocabulary (0..{c.n_vocab - 1})")
    table = model.weight("token_embd.weight", (c.n_vocab, c.n_embd))
    return table[np.asarray(tokens, dtype=np.int64)].copy()


def layer(model: Model, il: int, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """One transformer block on hidden states x: (n_tokens, n_embd)."""
    c = model.config
    p = f"blk.{il}."
    w = model.weight
    n = x.shape[0]
    kv_dim = c.n_head_kv * c.head_dim

    h = rms_norm(x, w(p + "attn_norm.weight", (c.n_embd,)), c.rms_eps)
    q = h @ w(p + "attn_q.weight", (c.n_embd, c.n_embd)).T
    k = h @ w(p + "attn_k.weight", (kv_dim, c.n_embd)).T
    v = h @ w(p + "attn_v.weight", (kv_dim, c.n_embd)).T
    q = rope(q.reshape(n, c.n_head, c.head_dim), positions, c.rope_dim, c.rope_base)
    k = rope(k.reshape(n, c.n_head_kv, c.head_dim), positions, c.rope_dim, c.rope_base)
    v = v.reshape(n, c.n_head_kv, c.head_dim)
    a = attention(q, k, v, c.n_head_kv)
    x = x + a @ w(p + "attn_output.weight", (c.n_embd, c.n_embd)).T

    h = rms_norm(x, w(p + "ffn_norm.weight", (c.n_embd,)), c.rms_eps)
    gate = h @ w(p + "ffn_gate.weight", (c.n_ff, c.n_embd)).T
    up = h @ w(p + "ffn_up.weight", (c.n_ff, c.n_embd)).T
    x = x + (silu(gate) * up) @ w(p + "ffn_down.weight", (c.n_embd, c.n_ff)).T
    return x


def run_layers(model: Model, x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    positions = np.arange(x.shape[0])
    for il in range(lo, hi):
        x = layer(model, il, x, positions)
    return x


def head(model: Model, x: np.ndarray) -> np.ndarray:
    """Final norm and output projection: (n, n_embd) -> (n, n_vocab)."""
    c = model.config
    h = rms_norm(x, model.weight("output_norm.weight", (c.n_embd,)), c.rms_eps)
    return h @ model.output_weight().T


def forward(model: Model, tokens: list[int]) -> np.ndarray:
    """Logits of every position: (n_tokens, n_vocab)."""
    x = embed(model, tokens)
    x = run_layers(model, x, 0, model.config.n_layer)
    return head(model, x)


# MARK: - Tasks built on the forward pass

def decode_pieces(vocab: list[str], ids: list[int]) -> str:
    """SentencePiece pieces to text: '▁' is a space, <0xXX> is a raw byte."""
    out = bytearray()
    for t in ids:
        piece = vocab[t]
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(int(piece[3:5], 16))
        else:
            out += piece.replace("\u2581", " ").encode("utf-8")
    return out.decode("utf-8", errors="replace")


def greedy(model: Model, tokens: list[int], n_new: int, stop_at_eos: bool = True) -> list[int]:
    eos = int(_field(model.reader, "tokenizer.ggml.eos_token_id", 2))
    seq = list(tokens)
    out = []
    for _ in range(n_new):
        x = run_layers(model, embed(model, seq), 0, model.config.n_layer)
        next_id = int(np.argmax(head(model, x[-1:])[0]))
        out.append(next_id)
        seq.append(next_id)
        if stop_at_eos and next_id == eos:
            break
    return out


def perplexity(model: Model, tokens: list[int], n_ctx: int, max_chunks: int | None,
               log=sys.stderr) -> dict:
    """llama.cpp's perplexity tool: only the second half of each chunk is scored."""
    n_chunk = len(tokens) // n_ctx
    if max_chunks is not None:
        n_chunk = min(n_chunk, max_chunks)
    if n_chunk < 1:
        raise ReferenceError(f"{len(tokens)} tokens are fewer than one chunk of {n_ctx}")
    first = n_ctx // 2
    nll = 0.0
    count = 0
    running = []
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        chunk[0] = model.bos_id
        x = run_layers(model, embed(model, chunk), 0, model.config.n_layer)
        logits = head(model, x[first:n_ctx - 1]).astype(np.float64)
        targets = np.asarray(chunk[first + 1:n_ctx])
        m = logits.max(axis=1)
        log_z = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
        nll += float(np.sum(log_z - logits[np.arange(len(targets)), targets]))
        count += len(targets)
        running.append(math.exp(nll / count))
        print(f"[{i + 1}]{running[-1]:.4f}", file=log, flush=True)
    return {"ppl": math.exp(nll / count), "chunks": n_chunk, "ctx": n_ctx,
            "scored": count, "running": running}


# MARK: - Command line

def parse_ids(text: str, what: str) -> list[int]:
    text = text.strip()
    try:
        if text.startswith("[") or text.startswith("{"):
            value = json.loads(text)
            if isinstance(value, dict):
                value = value["tokens"]
            ids = [int(v) for v in value]
        else:
            ids = [int(v) for v in text.replace(",", " ").split()]
    except (ValueError, KeyError, TypeError) as error:
        raise ReferenceError(f"{what} is not a list of token ids: {error}") from error
    if not ids:
        raise ReferenceError(f"{what} holds no token ids")
    return ids


def load_hidden(path: str, n_embd: int, dtype) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ReferenceError(f"hidden-state file not found: {p}")
    try:
        if p.suffix == ".npy":
            values = np.load(p)
        else:
            data = json.loads(p.read_text())
            values = np.asarray(data["hidden"] if isinstance(data, dict) else data, dtype=np.float64)
    except (ValueError, KeyError, OSError) as error:
        raise ReferenceError(f"cannot read hidden state from {p}: {error}") from error
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != n_embd or values.shape[0] == 0:
        raise ReferenceError(f"hidden state in {p} has shape {values.shape}, expected (n_tokens, {n_embd})")
    return values.astype(dtype)


def parse_layers(spec: str | None, n_layer: int) -> tuple[int, int]:
    if spec is None:
        return 0, n_layer
    try:
        lo_text, hi_text = spec.split(":")
        lo = int(lo_text) if lo_text else 0
        hi = int(hi_text) if hi_text else n_layer
    except ValueError as error:
        raise ReferenceError(f"--layers must be LO:HI, got '{spec}'") from error
    if not 0 <= lo <= hi <= n_layer:
        raise ReferenceError(f"--layers {spec} is outside 0:{n_layer}")
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="GGUF model file")
    ap.add_argument("--tokens", help="comma-separated token ids (include BOS yourself)")
    ap.add_argument("--tokens-file", help="file of token ids (JSON list, {'tokens': [...]}, or separated ids)")
    ap.add_argument("--all-positions", action="store_true", help="print logits of every position")
    ap.add_argument("--layers", help="LO:HI, run only layers LO..HI-1")
    ap.add_argument("--hidden-in", help="start from this hidden state instead of token embeddings")
    ap.add_argument("--emit", choices=["logits", "hidden"],
                    help="what to print (default: logits if the last layer ran, else hidden)")
    ap.add_argument("--greedy", type=int, metavar="N", help="generate N tokens greedily")
    ap.add_argument("--perplexity-tokens", metavar="FILE", help="compute llama.cpp-style perplexity")
    ap.add_argument("--ctx", type=int, default=512, help="perplexity chunk size (default 512)")
    ap.add_argument("--chunks", type=int, help="score at most this many chunks")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    args = ap.parse_args(argv)

    try:
        model = Model(args.model, dtype=np.dtype(args.dtype).type)
        c = model.config

        tokens = None
        if args.tokens is not None:
            tokens = parse_ids(args.tokens, "--tokens")
        elif args.tokens_file is not None:
            tokens = parse_ids(Path(args.tokens_file).read_text(), args.tokens_file)

        if args.perplexity_tokens is not None:
            path = Path(args.perplexity_tokens)
            if not path.is_file():
                raise ReferenceError(f"token file not found: {path}")
            ids = parse_ids(path.read_text(), str(path))
            if args.ctx < 4:
                raise ReferenceError("--ctx must be at least 4")
            start = time.perf_counter()
            result = perplexity(model, ids, args.ctx, args.chunks)
            result["seconds"] = round(time.perf_counter() - start, 3)
            print(f"PPL = {result['ppl']:.4f}", file=sys.stderr)
            print(json.dumps(result))
            return 0

        if args.greedy is not None:
            if tokens is None:
                raise ReferenceError("--greedy needs --tokens or --tokens-file")
            new = greedy(model, tokens, args.greedy)
            text = decode_pieces(model.vocabulary(), new)
            print(json.dumps({"tokens": new, "text": text}))
            return 0

        lo, hi = parse_layers(args.layers, c.n_layer)
        if args.hidden_in is not None:
            x = load_hidden(args.hidden_in, c.n_embd, model.dtype)
        elif tokens is not None:
            if lo != 0:
                raise ReferenceError("a layer range not starting at 0 needs --hidden-in")
            x = embed(model, tokens)
        else:
            raise ReferenceError("give --tokens, --tokens-file, --hidden-in or --perplexity-tokens")
        if x.shape[0] > c.n_ctx_train:
            print(f"warning: {x.shape[0]} positions exceed context_length {c.n_ctx_train}", file=sys.stderr)

        x = run_layers(model, x, lo, hi)
        emit = args.emit or ("logits" if hi == c.n_layer else "hidden")
        if emit == "hidden":
            print(json.dumps({"hidden": x.tolist(), "layers": [lo, hi]}))
            return 0
        rows = x if args.all_positions else x[-1:]
        logits = head(model, rows)
        print(json.dumps({"logits": logits.tolist() if args.all_positions else logits[0].tolist()}))
        return 0
    except ReferenceError as error:
        print(f"llama_ref.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
