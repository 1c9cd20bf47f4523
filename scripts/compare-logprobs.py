#!/usr/bin/env python3
"""Log-probabilities of the endpoint against llama.cpp's on the same GGUF.

    scripts/compare-logprobs.py MODEL [TEXT...]

Starts `llama-coord serve` on a free loopback port, scores each text with
`echo: true, logprobs: 5, max_tokens: 0`, computes the same log-probabilities from
llama.cpp's logits (llama-cpp-python, logits_all) and prints per text the largest absolute
difference over the prompt's tokens and how often the top-5 alternatives agree. Needs
llama-cpp-python in the running Python (a virtual environment); a tool, not a test.
"""
import json, math, os, socket, subprocess, sys, time, urllib.request

import llama_cpp

model = os.path.realpath(sys.argv[1])
texts = sys.argv[2:] or [
    "Python is a programming language that lets you work quickly and integrate systems more effectively.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "The os module provides a portable way of using operating system dependent functionality.",
]
root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
binary = subprocess.check_output(["/opt/swift/usr/bin/swift", "build", "-c", "release", "--show-bin-path"], cwd=root, text=True).strip()
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
server = subprocess.Popen([binary + "/llama-coord", "serve", "--model", model, "--http", f"127.0.0.1:{port}", "--threads", "2",
                           "--kv-cache", "f32"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200: break
        except Exception: time.sleep(0.1)
    llm = llama_cpp.Llama(model, logits_all=True, verbose=False, n_threads=2, n_ctx=512)
    worst = 0.0
    for text in texts:
        body = json.dumps({"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 5, "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
        ours = json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["logprobs"]
        ids = llm.tokenize(text.encode(), add_bos=True)
        llm.reset(); llm.eval(ids)
        diffs, top_same = [], 0
        for i in range(1, len(ids)):
            row = llm.scores[i - 1]
            m = max(row); lse = m + math.log(sum(math.exp(x - m) for x in row))
            ref = row[ids[i]] - lse
            diffs.append(abs(ref - ours["token_logprobs"][i]))
            ref_top = sorted(range(len(row)), key=lambda t: -row[t])[:5]
            our_top = list(ours["top_logprobs"][i].keys())
            top_same += [llm.detokenize([t]).decode("utf-8", "replace") for t in ref_top] == our_top
        n = len(ids) - 1
        worst = max(worst, max(diffs))
        print(f"{n:3d} tokens  max |logprob diff| {max(diffs):.4f}  mean {sum(diffs) / n:.4f}  top-5 identical at {top_same}/{n} positions  {text[:40]!r}")
    print(f"largest difference {worst:.4f}")
finally:
    server.terminate(); server.wait()
