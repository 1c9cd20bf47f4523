#!/usr/bin/env python3
"""Check the numpy reference (llama_ref.py) against llama.cpp.

Usage:  validate_reference.py [--demo-dir DIR] [--vocab VOCAB.gguf] [--chunks N] [--threads T]
                              [--without-llama-cpp]

Needs numpy, gguf and llama-cpp-python (with --without-llama-cpp, only numpy
and gguf: then only the test files, the MODEL.md text, the layer slices and a
run of every tensor type are checked). Runs the command-line tools the way a
user would and compares what they print:

1. Dequantization: for GGUF files of every supported tensor type (written by
   scripts/make_test_gguf.py and scripts/make_tiny_llama.py), the values
   ``gguf.quants.dequantize`` gives (what the reference computes with) are
   bit-identical to ggml's own dequantize_row_* / fp16 / bf16 row converters,
   called from the libggml-base library that llama-cpp-python ships.
2. Greedy text: "Python is" on the demo f16 model gives the same 30 tokens
   from the reference and from llama.cpp, and the text MODEL.md quotes.
3. Logits: last-position logits of two prompts on the demo f16 and q8_0
   models, and on tiny random models of each tensor type, agree with
   llama.cpp's to within a tolerance set by llama.cpp's reduced-precision
   arithmetic (it rounds activations to F16/BF16/Q8 before its dot products
   and keeps the KV cache in F16), with the same argmax.
4. Layer slices: running layers 0:k, then k:n from the printed hidden state,
   gives exactly the logits of the whole model.
5. Perplexity: the first N chunks of heldout.txt at n_ctx 512 give the same
   figure from the reference and from llama.cpp's method to 0.1 %.

Ends with "N passed, M failed"; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REF = HERE / "llama_ref.py"
ORACLE = ROOT / "scripts" / "llamacpp_oracle.py"
MAKE_TEST = ROOT / "scripts" / "make_test_gguf.py"
MAKE_TINY = ROOT / "scripts" / "make_tiny_llama.py"

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)


def _run(args) -> str:
    command = [sys.executable, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr.strip()}")
    return done.stdout


def run_json(*args) -> dict:
    return json.loads(_run(args))


def run_text(*args) -> str:
    return _run(args)


# MARK: - Checks

def check_dequantization(paths: list[Path]) -> None:
    import gguf
    import llama_cpp
    Q = gguf.GGMLQuantizationType
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    converters = {Q.F16: "ggml_fp16_to_fp32_row", Q.BF16: "ggml_bf16_to_fp32_row",
                  Q.Q8_0: "dequantize_row_q8_0", Q.Q4_0: "dequantize_row_q4_0",
                  Q.Q4_K: "dequantize_row_q4_K", Q.Q6_K: "dequantize_row_q6_K"}
    seen = set()
    for path in paths:
        reader = gguf.GGUFReader(str(path))
        mismatched = []
        for t in reader.tensors:
            fn = converters.get(t.tensor_type)
            if fn is None:
                continue
            seen.add(t.tensor_type.name)
            raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
            n = int(t.n_elements)
            ggml = np.empty(n, dtype=np.float32)
            getattr(lib, fn)(raw.ctypes.data_as(ctypes.c_void_p), ggml.ctypes.data_as(ctypes.c_void_p),
                             ctypes.c_int64(n))
            mine = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
            if not np.array_equal(ggml.view(np.uint32), mine.view(np.uint32)):
                mismatched.append(t.name)
        check(f"dequantize == ggml: {path.name}", not mismatched, f"mismatched: {mismatched}" if mismatched else "")
    check("dequantization covered every quantized type",
          seen >= {"F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"}, f"types seen: {sorted(seen)}")


def compare_logits(name: str, model: Path, prompt: str, tol_rel: float, threads: int) -> None:
    oracle = run_json(ORACLE, "logits", model, prompt, "--threads", str(threads))
    tokens = ",".join(map(str, oracle["tokens"]))
    ref = np.array(run_json(REF, model, "--tokens", tokens)["logits"])
    o = np.array(oracle["logits"])
    rel = float(np.sqrt(np.mean((o - ref) ** 2)) / np.std(ref))
    same_top = int(np.argmax(o)) == int(np.argmax(ref))
    check(f"logits {name}", rel < tol_rel and same_top,
          f"rms diff / std = {rel:.2e} (limit {tol_rel:.0e}), max |diff| = {np.max(np.abs(o - ref)):.4f}, "
          f"argmax {int(np.argmax(o))} vs {int(np.argmax(ref))}")


def check_greedy(model: Path, threads: int, with_llama_cpp: bool) -> None:
    ref = run_json(REF, model, "--tokens", "1,5132,338", "--greedy", "30")     # "Python is"
    # MODEL.md shows the text on one line: compare with whitespace runs folded.
    expected = " a subclass of the built-in function, ``PyObject_NewVar`` is used to convert the object"
    check("greedy 'Python is' matches MODEL.md",
          ref["text"].startswith(" ") and " ".join(ref["text"].split()).startswith(" ".join(expected.split())),
          f"text {ref['text']!r}")
    if with_llama_cpp:
        oracle = run_json(ORACLE, "greedy", model, "Python is", "-n", "30", "--threads", str(threads))
        check("greedy 'Python is': llama.cpp tokenizes the prompt as 1,5132,338",
              oracle["prompt_tokens"] == [1, 5132, 338], str(oracle["prompt_tokens"]))
        check("greedy 'Python is': reference tokens == llama.cpp tokens", ref["tokens"] == oracle["tokens"])


def check_tiny_runs(tiny: dict) -> None:
    """Without llama.cpp: each tensor type loads and gives finite logits."""
    for qtype, path in tiny.items():
        logits = np.array(run_json(REF, path, "--tokens", "1,450,4996,17354")["logits"])
        check(f"reference runs tiny random {qtype}", logits.shape == (32000,) and bool(np.all(np.isfinite(logits))),
              f"std {np.std(logits):.3f}")


def check_layer_split(model: Path, work: Path) -> None:
    tokens = "1,5132,338,263,19481"
    full = np.array(run_json(REF, model, "--tokens", tokens, "--all-positions")["logits"])
    first = work / "hidden-0-2.json"
    first.write_text(run_text(REF, model, "--tokens", tokens, "--layers", "0:2"))
    second = work / "hidden-2-5.json"
    second.write_text(run_text(REF, model, "--layers", "2:5", "--hidden-in", first))
    split = np.array(run_json(REF, model, "--layers", "5:6", "--hidden-in", second, "--all-positions")["logits"])
    check("layer slices 0:2 + 2:5 + 5:6 == whole model", np.array_equal(full, split),
          f"max |diff| = {np.max(np.abs(full - split)):.3g}")


def check_perplexity(model: Path, text: Path, chunks: int, threads: int, work: Path) -> None:
    out = run_text(ORACLE, "perplexity", model, text, "--ctx", "512", "--chunks", str(chunks),
                   "--threads", str(threads))
    line = [ln for ln in out.splitlines() if ln.startswith("PPL = ")][-1]
    oracle_ppl = float(line.split()[2])
    tokens = work / "heldout-tokens.json"
    tokens.write_text(run_text(ORACLE, "tokenize", model, text, "--file"))
    ref = run_json(REF, model, "--perplexity-tokens", tokens, "--ctx", "512", "--chunks", str(chunks))
    rel = abs(ref["ppl"] - oracle_ppl) / oracle_ppl
    check(f"perplexity, {chunks} chunks of 512", rel < 1e-3,
          f"reference {ref['ppl']:.4f}, llama.cpp {oracle_ppl:.4f}, relative diff {rel:.1e}")


# MARK: - Main

def main() -> int:
    ap = argparse.ArgumentParser(description="Check llama_ref.py against llama.cpp.")
    ap.add_argument("--demo-dir", default="/work/shared/models/demo")
    ap.add_argument("--vocab", default="/work/shared/testdata/llama2-vocab/ggml-vocab-llama-spm.gguf")
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--without-llama-cpp", action="store_true",
                    help="run only the checks that need no llama.cpp (test files, MODEL.md text, layer slices)")
    args = ap.parse_args()
    with_llama_cpp = not args.without_llama_cpp
    demo = Path(args.demo_dir)
    f16 = demo / "llama-cluster-demo.f16.gguf"
    q8 = demo / "llama-cluster-demo.q8_0.gguf"
    for path in (f16, q8, demo / "heldout.txt", Path(args.vocab)):
        if not path.is_file():
            print(f"validate_reference.py: error: missing {path}", file=sys.stderr)
            return 2
    if with_llama_cpp:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as error:
            print(f"validate_reference.py: error: llama-cpp-python is needed ({error}); "
                  "--without-llama-cpp runs the rest", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_all(Path(tmp), args, demo, f16, q8, with_llama_cpp)
        except RuntimeError as error:
            check("every tool ran", False, str(error))

    passed = sum(ok for _, ok, _ in results)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def run_all(work: Path, args, demo: Path, f16: Path, q8: Path, with_llama_cpp: bool) -> None:
    test_files = [Path(p) for p in run_text(MAKE_TEST, work / "gguf").split() if p.endswith(".gguf")]
    tiny = {}
    for qtype in ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"]:
        path = work / f"tiny-{qtype}.gguf"
        extra = ["--tied"] if qtype == "q4_0" else []
        run_text(MAKE_TINY, path, "--vocab", args.vocab, "--type", qtype, *extra)
        tiny[qtype] = path

    check("make_test_gguf.py wrote and re-read its files", len(test_files) == 3)
    check_greedy(f16, args.threads, with_llama_cpp)
    check_layer_split(q8, work)
    if not with_llama_cpp:
        check_tiny_runs(tiny)
    else:
        check_dequantization(test_files + [tiny[q] for q in ("f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k")])
        prompts = ["Python is", "Q: What is the meaning of life?\nA:"]
        for i, prompt in enumerate(prompts):
            compare_logits(f"demo f16, prompt {i + 1}", f16, prompt, 2e-3, args.threads)
            compare_logits(f"demo q8_0, prompt {i + 1}", q8, prompt, 2e-2, args.threads)
        # Limits per type follow llama.cpp's activation precision for that type.
        limits = {"f32": 2e-3, "f16": 5e-3, "bf16": 2e-2, "q8_0": 5e-2, "q4_0": 5e-2, "q4_k": 5e-2,
                  "q6_k": 5e-2}
        for qtype, path in tiny.items():
            compare_logits(f"tiny random {qtype}" + (" (tied output)" if qtype == "q4_0" else ""), path,
                           "The quick brown fox jumps over the lazy dog, and then", limits[qtype],
                           args.threads)
        check_perplexity(f16, demo / "heldout.txt", args.chunks, args.threads, work)


if __name__ == "__main__":
    sys.exit(main())
