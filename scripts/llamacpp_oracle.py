#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) as an oracle for tokens, logits, text,
perplexity and speed.

Usage:
    llamacpp_oracle.py tokenize   MODEL TEXT [--file] [--no-bos]
    llamacpp_oracle.py greedy     MODEL PROMPT -n N [--threads T] [--ctx C]
    llamacpp_oracle.py logits     MODEL PROMPT [--threads T]
    llamacpp_oracle.py perplexity MODEL FILE [--ctx 512] [--chunks K] [--threads T]
    llamacpp_oracle.py bench      MODEL [--threads T] [--prompt-tokens P] [--gen-tokens G] [--reps R]

tokenize    Prints {"tokens": [...]}: TEXT (or the contents of the file TEXT
            with --file) tokenized by llama.cpp with BOS (unless --no-bos),
            special tokens not parsed.
greedy      Temperature 0: the argmax token is taken at every step (first
            index on ties, like llama.cpp's greedy sampler), stopping after N
            tokens or at an end-of-generation token. Prints {"prompt_tokens",
            "tokens", "text"}; text is the concatenated pieces of the
            generated tokens (leading space kept, as llama.cpp prints it).
logits      Prints {"tokens": [...], "logits": [...]}: the logits of the last
            prompt position (n_vocab floats).
perplexity  What llama.cpp's perplexity tool computes: the file is read (one
            trailing newline dropped, as its -f option does), tokenized whole
            with BOS; n_chunk = n_tokens // ctx; the first token of each chunk
            is set to BOS; the chunk is decoded in one batch from an empty KV
            cache with logits requested for positions >= ctx/2; the negative
            log-likelihoods of tokens ctx/2+1 .. ctx-1 are summed (log-softmax
            as the tool does it: float max, double sum of expf). Prints the
            running figure per chunk ("[i]x.xxxx,") and then
            "PPL = x +/- err" (err as the tool's "Final estimate") and the
            run time.
bench       llama-bench's method: a warm-up run, then for each of R reps the
            KV cache is cleared, a prompt of P tokens (BOS then seeded
            pseudo-random ids) is decoded in one batch (n_batch = n_ubatch >=
            P), then G single-token decode steps continue after it, each
            followed by llama_synchronize. Model load time is excluded. Prints
            JSON with prefill and decode tokens/s (mean and standard deviation
            over the reps). Unlike llama-bench's separate tg test, the decode
            steps run at positions P .. P+G-1, after the prompt.

All subcommands print JSON or plain figures on stdout; diagnostics go to
stderr; bad input exits with status 2 and a message naming the problem.
Requires llama-cpp-python (``import llama_cpp``) and numpy.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np


class OracleError(Exception):
    """Bad input or an environment problem, reported without a traceback."""


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as error:
        raise OracleError(f"llama-cpp-python is not importable ({error}); install it into this Python") from error
    return llama_cpp


# MARK: - Model and context

class Session:
    """A loaded model with one context, driven through llama.cpp's C API."""

    def __init__(self, model_path: str, n_ctx: int, n_batch: int, n_threads: int):
        self.lib = _import_llama_cpp()
        if not Path(model_path).is_file():
            raise OracleError(f"model file not found: {model_path}")
        if n_threads < 1:
            raise OracleError(f"--threads must be at least 1, got {n_threads}")
        try:
            self.llm = self.lib.Llama(
                model_path=model_path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                n_threads=n_threads, n_threads_batch=n_threads, n_gpu_layers=0,
                logits_all=False, verbose=False)
        except (ValueError, RuntimeError) as error:
            raise OracleError(f"llama.cpp could not load {model_path}: {error}") from error
        self.ctx = self.llm.ctx
        self.vocab = self.lib.llama_model_get_vocab(self.llm.model)
        self.n_vocab = self.lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = self.lib.llama_n_ctx(self.ctx)
        self.n_batch = n_batch
        self.bos = self.lib.llama_vocab_bos(self.vocab)
        self.add_bos = bool(self.lib.llama_vocab_get_add_bos(self.vocab))
        self._batch = self.lib.llama_batch_init(n_batch, 0, 1)

    def close(self) -> None:
        self.lib.llama_batch_free(self._batch)
        self.llm.close()

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            raise OracleError(f"token {token} has a piece longer than {len(buf)} bytes")
        return buf.raw[:n]

    def clear_memory(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def decode(self, tokens: list[int], start_pos: int, want_logits) -> None:
        """Decode tokens at positions start_pos.. in one batch (sequence 0).

        want_logits(i) says whether position start_pos + i needs its logits."""
        if len(tokens) > self.n_batch:
            raise OracleError(f"{len(tokens)} tokens exceed the batch size {self.n_batch}")
        if start_pos + len(tokens) > self.n_ctx:
            raise OracleError(f"{start_pos + len(tokens)} positions exceed the context size {self.n_ctx}")
        b = self._batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            if not 0 <= t < self.n_vocab:
                raise OracleError(f"token id {t} is outside the vocabulary (0..{self.n_vocab - 1})")
            b.token[i] = t
            b.pos[i] = start_pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if want_logits(i) else 0
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise OracleError(f"llama_decode failed with code {rc}")

    def logits(self, i: int) -> np.ndarray:
        """Logits of batch index i (negative counts from the end) as float32."""
        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        if not ptr:
            raise OracleError(f"no logits for batch index {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def all_logits(self, n_outputs: int) -> np.ndarray:
        """Logits of every position of the last batch that asked for them,
        in batch order: (n_outputs, n_vocab) float32."""
        ptr = self.lib.llama_get_logits(self.ctx)
        if not ptr:
            raise OracleError("the last batch produced no logits")
        return np.ctypeslib.as_array(ptr, shape=(n_outputs, self.n_vocab)).copy()

    def synchronize(self) -> None:
        self.lib.llama_synchronize(self.ctx)

    def is_end(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


# MARK: - Subcommands

def cmd_tokenize(args) -> dict:
    text = Path(args.text).read_text(encoding="utf-8") if args.file else args.text
    session = Session(args.model, n_ctx=64, n_batch=64, n_threads=1)
    try:
        return {"tokens": session.tokenize(text, add_bos=not args.no_bos)}
    finally:
        session.close()


def cmd_greedy(args) -> dict:
    if args.n < 1:
        raise OracleError(f"-n must be at least 1, got {args.n}")
    probe = Session(args.model, n_ctx=64, n_batch=64, n_threads=1)
    prompt = probe.tokenize(args.prompt)
    probe.close()
    n_ctx = args.ctx or (len(prompt) + args.n)
    session = Session(args.model, n_ctx=n_ctx, n_batch=max(len(prompt), 1), n_threads=args.threads)
    try:
        session.decode(prompt, 0, lambda i: i == len(prompt) - 1)
        generated: list[int] = []
        text = b""
        pos = len(prompt)
        while len(generated) < args.n:
            token = int(np.argmax(session.logits(-1)))
            generated.append(token)
            if session.is_end(token):
                break
            text += session.piece(token)
            if len(generated) == args.n:
                break
            session.decode([token], pos, lambda i: True)
            pos += 1
        return {"prompt_tokens": prompt, "tokens": generated, "text": text.decode("utf-8", errors="replace")}
    finally:
        session.close()


def cmd_logits(args) -> dict:
    probe = Session(args.model, n_ctx=64, n_batch=64, n_threads=1)
    prompt = probe.tokenize(args.prompt)
    probe.close()
    session = Session(args.model, n_ctx=max(len(prompt), 8), n_batch=max(len(prompt), 1), n_threads=args.threads)
    try:
        session.decode(prompt, 0, lambda i: i == len(prompt) - 1)
        return {"tokens": prompt, "logits": [float(v) for v in session.logits(-1)]}
    finally:
        session.close()


def nll_rows(logits: np.ndarray, targets: list[int]) -> np.ndarray:
    """-log p(target) per row, as llama.cpp's perplexity tool computes it:
    float32 max and exp(logit - max), summed in double."""
    max_logit = logits.max(axis=1, keepdims=True)
    sum_exp = np.exp(logits - max_logit).astype(np.float64).sum(axis=1)
    picked = logits[np.arange(len(targets)), targets] - max_logit[:, 0]
    return -(picked.astype(np.float64) - np.log(sum_exp))


def cmd_perplexity(args) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise OracleError(f"text file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    n_ctx = args.ctx
    if n_ctx < 4 or n_ctx % 2:
        raise OracleError(f"--ctx must be an even number >= 4, got {n_ctx}")
    session = Session(args.model, n_ctx=n_ctx, n_batch=n_ctx, n_threads=args.threads)
    try:
        if session.n_ctx < n_ctx:
            raise OracleError(f"llama.cpp made a context of {session.n_ctx} < {n_ctx}")
        t_start = time.perf_counter()
        tokens = session.tokenize(text, add_bos=True)
        if len(tokens) < 2 * n_ctx:
            raise OracleError(f"{path} tokenizes to {len(tokens)} tokens; at least {2 * n_ctx} are needed")
        n_chunk = len(tokens) // n_ctx
        if args.chunks is not None:
            n_chunk = min(n_chunk, args.chunks)
        first = n_ctx // 2
        print(f"tokens: {len(tokens)}, chunks: {n_chunk}, ctx: {n_ctx}, threads: {args.threads}",
              file=sys.stderr)
        nll = 0.0
        nll2 = 0.0
        count = 0
        for i in range(n_chunk):
            start = i * n_ctx
            chunk = tokens[start:start + n_ctx]
            if session.add_bos:
                chunk[0] = session.bos
            session.clear_memory()
            session.decode(chunk, 0, lambda k: k >= first)
            outputs = session.all_logits(n_ctx - first)      # positions first .. n_ctx-1
            v = nll_rows(outputs[:-1], chunk[first + 1:])
            nll += float(np.sum(v))
            nll2 += float(np.sum(v * v))
            count += n_ctx - 1 - first
            print(f"[{i + 1}]{math.exp(nll / count):.4f},", end="", flush=True)
        print()
        seconds = time.perf_counter() - t_start
        mean = nll / count
        ppl = math.exp(mean)
        var = nll2 / count - mean * mean
        err = math.sqrt(var / (count - 1)) * ppl if var > 0 else float("nan")
        print(f"PPL = {ppl:.4f} +/- {err:.5f}")
        print(f"chunks {n_chunk}, scored tokens {count}, {seconds:.2f} s", file=sys.stderr)
    finally:
        session.close()


def cmd_bench(args) -> dict:
    p, g = args.prompt_tokens, args.gen_tokens
    if p < 1 or g < 0 or args.reps < 1:
        raise OracleError("--prompt-tokens and --reps must be >= 1, --gen-tokens >= 0")
    session = Session(args.model, n_ctx=p + g + 1, n_batch=p, n_threads=args.threads)
    rng = np.random.default_rng(args.seed)

    def prompt_tokens() -> list[int]:
        ids = [int(t) for t in rng.integers(0, session.n_vocab, size=p)]
        if session.add_bos:
            ids[0] = session.bos
        return ids

    def run_once(n_gen: int) -> tuple[float, float]:
        session.clear_memory()
        ids = prompt_tokens()
        t0 = time.perf_counter()
        session.decode(ids, 0, lambda i: i == p - 1)
        session.synchronize()
        t1 = time.perf_counter()
        token = int(rng.integers(0, session.n_vocab))
        for k in range(n_gen):
            session.decode([token], p + k, lambda i: True)
            session.synchronize()
            token = int(rng.integers(0, session.n_vocab))
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    try:
        run_once(min(g, 1))                      # warm-up, not timed
        pp_rates, tg_rates = [], []
        for _ in range(args.reps):
            t_pp, t_tg = run_once(g)
            pp_rates.append(p / t_pp)
            if g:
                tg_rates.append(g / t_tg)

        def stats(xs):
            return (float(np.mean(xs)), float(np.std(xs))) if xs else (None, None)

        pp_mean, pp_std = stats(pp_rates)
        tg_mean, tg_std = stats(tg_rates)
        return {"model": args.model, "threads": args.threads, "prompt_tokens": p, "gen_tokens": g,
                "reps": args.reps, "prefill_tokens_per_s": pp_mean, "prefill_std": pp_std,
                "decode_tokens_per_s": tg_mean, "decode_std": tg_std,
                "prefill_samples": pp_rates, "decode_samples": tg_rates}
    finally:
        session.close()


# MARK: - Command line

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="llama.cpp as an oracle (see the module docstring).")
    sub = ap.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("tokenize", help="token ids of a text, with BOS")
    sp.add_argument("model")
    sp.add_argument("text", help="the text, or a path with --file")
    sp.add_argument("--file", action="store_true", help="TEXT names a file to read")
    sp.add_argument("--no-bos", action="store_true")

    sp = sub.add_parser("greedy", help="greedy continuation of a prompt")
    sp.add_argument("model")
    sp.add_argument("prompt")
    sp.add_argument("-n", type=int, required=True, help="tokens to generate")
    sp.add_argument("--threads", type=int, default=default_threads())
    sp.add_argument("--ctx", type=int, help="context size (default: prompt + n)")

    sp = sub.add_parser("logits", help="last-position logits of a prompt")
    sp.add_argument("model")
    sp.add_argument("prompt")
    sp.add_argument("--threads", type=int, default=default_threads())

    sp = sub.add_parser("perplexity", help="llama.cpp perplexity-tool figure")
    sp.add_argument("model")
    sp.add_argument("file")
    sp.add_argument("--ctx", type=int, default=512)
    sp.add_argument("--chunks", type=int, help="score at most this many chunks")
    sp.add_argument("--threads", type=int, default=default_threads())

    sp = sub.add_parser("bench", help="prefill and decode speed, llama-bench style")
    sp.add_argument("model")
    sp.add_argument("--threads", type=int, default=default_threads())
    sp.add_argument("--prompt-tokens", type=int, default=128)
    sp.add_argument("--gen-tokens", type=int, default=32)
    sp.add_argument("--reps", type=int, default=3)
    sp.add_argument("--seed", type=int, default=1234)

    args = ap.parse_args(argv)
    try:
        if args.command == "perplexity":
            cmd_perplexity(args)
            return 0
        handler = {"tokenize": cmd_tokenize, "greedy": cmd_greedy, "logits": cmd_logits,
                   "bench": cmd_bench}[args.command]
        print(json.dumps(handler(args), ensure_ascii=False))
        return 0
    except (OracleError, OSError, UnicodeDecodeError) as error:
        print(f"llamacpp_oracle.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
