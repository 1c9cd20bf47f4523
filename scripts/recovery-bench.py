#!/usr/bin/env python3
"""What a lost worker costs: starts a cluster on this machine (coordinator, workers w1 and w2,
standby s1; free loopback ports), runs N concurrent greedy streams of T tokens, SIGKILLs w2
halfway through, and measures from the streams and the coordinator's log:

- loss -> next token: seconds from the kill to the next piece of every stream (the heartbeat
  timeout, the standby loading w2's layers, the new epoch, the replay);
- whole -> next token: from the cluster being whole again (the takeover done) to that piece;
- the replay: tokens rebuilt, seconds, tokens/s (the coordinator's "replay done" line);
- plain prefill through the same cluster for comparison: N prompts of the same total length
  at once, time to their first tokens;
- the coordinator's resident memory before the streams and at the kill (history and sampler
  state per sequence are in it).

  scripts/recovery-bench.py --model models/demo/llama-cluster-demo.q8_0.gguf --streams 8 --tokens 400
  scripts/recovery-bench.py --model /tmp/7b4l.gguf --streams 8 --tokens 400 --threads 1

With --rejoin the killed worker is started again after the heartbeat timeout instead of the
standby taking over. Python 3 standard library only; BIN (default .build/release) holds the
executables.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PROMPTS = ["Once upon a time", "The little dog", "Python is", "Tom and Sue went to the park.",
           "One day, a bird", "The sun was hot and", "Mom said", "There was a big tree"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def post(port, body, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    return c, c.getresponse()


def stream(port, prompt, tokens, arrivals, index):
    """Streams one completion; appends the arrival time of every piece to arrivals[index]."""
    c, r = post(port, {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True})
    assert r.status == 200, r.read()
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            if event["choices"][0].get("text"):
                arrivals[index].append(time.monotonic())
    c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1, help="threads of the coordinator and of each worker")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat_timeout, seconds")
    ap.add_argument("--rejoin", action="store_true", help="restart w2 instead of letting the standby take over")
    ap.add_argument("--keep", action="store_true", help="keep the logs directory")
    args = ap.parse_args()
    binary = os.environ.get("BIN", os.path.join(os.path.dirname(__file__), "..", ".build", "release"))
    model = os.path.realpath(args.model)
    work = tempfile.mkdtemp(prefix="llamacluster-recovery-")
    control, http_port = f"tcp://127.0.0.1:{free_port()}", free_port()
    with open(os.path.join(work, "cluster.yaml"), "w") as f:
        f.write(f"""model: {model}
coordinator: {{ control: "{control}", http: "127.0.0.1:{http_port}", threads: {args.threads} }}
activations: f16
frames_in_flight: 1
max_sequences: {max(args.streams, 1)}
context: {max(512, args.tokens + 64)}
heartbeat_timeout: {args.heartbeat}
workers:
  - {{ name: w1, threads: {args.threads} }}
  - {{ name: w2, threads: {args.threads} }}
  - {{ name: s1, standby: true, threads: {args.threads} }}
""")
    procs = {}

    def start(name, argv):
        log = open(os.path.join(work, f"{name}.log"), "a")
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    worker = lambda n: [os.path.join(binary, "llama-worker"), "join", "--coordinator", control, "--name", n,
                        "--threads", str(args.threads), "--model", model]
    try:
        start("coord", [os.path.join(binary, "llama-coord"), "start", "--manifest", os.path.join(work, "cluster.yaml")])
        for n in ["w1", "w2", "s1"]:
            start(n, worker(n))
        deadline = time.monotonic() + 300
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("cluster not ready")
            time.sleep(0.1)
        load = lambda: open("/proc/loadavg").read().split()[:3]
        print(f"cluster ready ({args.model}, {args.threads} thread(s) per process); load average {' '.join(load())}")

        # Plain prefill through the cluster: as many prompts at once, of the length the replay rebuilds.
        prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(args.streams)]
        filler = " ".join(["the cat sat on the mat and"] * (args.tokens // 14 + 1))
        started = time.monotonic()
        threads = []
        counts = []
        for i in range(args.streams):
            def one(i=i):
                c, r = post(http_port, {"prompt": f"{i} {filler}", "max_tokens": 1, "temperature": 0})
                counts.append(json.loads(r.read())["usage"]["prompt_tokens"])
            threads.append(threading.Thread(target=one))
            threads[-1].start()
        for t in threads:
            t.join()
        prefill_seconds = time.monotonic() - started
        prefill_tokens = sum(counts)
        print(f"plain prefill: {prefill_tokens} prompt tokens in {args.streams} requests at once: {prefill_seconds:.2f} s "
              f"({prefill_tokens / prefill_seconds:.0f} tokens/s, including one decode step)")

        rss_before = rss_mib(procs["coord"].pid)
        arrivals = [[] for _ in range(args.streams)]
        threads = [threading.Thread(target=stream, args=(http_port, prompts[i], args.tokens, arrivals, i))
                   for i in range(args.streams)]
        for t in threads:
            t.start()
        while min(len(a) for a in arrivals) < args.tokens // 2:
            time.sleep(0.01)
        rss_at_kill = rss_mib(procs["coord"].pid)
        killed_at = time.monotonic()
        progress = [len(a) for a in arrivals]
        procs["w2"].send_signal(signal.SIGKILL)
        procs["w2"].wait()
        if args.rejoin:
            time.sleep(args.heartbeat + 0.5)
            start("w2", worker("w2"))
        for t in threads:
            t.join()
        # The next token after the loss: the first piece ending the stream's stall (pieces of
        # frames already computed can still arrive just after the kill).
        gaps = []
        for a in arrivals:
            stall_end = None
            for prev, t in zip(a, a[1:]):
                if t > killed_at and t - max(prev, killed_at) > 0.25:
                    stall_end = t
                    break
            gaps.append(stall_end - killed_at if stall_end else float("nan"))
        with open(os.path.join(work, "coord.log")) as f:
            log = f.read()
        whole = re.findall(r"whole again after ([0-9.]+) s", log)
        replay = re.findall(r"replay done: (\d+) tokens of (\d+) sequences rebuilt in ([0-9.]+) s \((\d+) tokens/s\)", log)
        print(f"load average at the end {' '.join(load())}")
        print(f"{args.streams} streams of {args.tokens} tokens; w2 killed with streams at {min(progress)}-{max(progress)} tokens; "
              f"{'w2 restarted' if args.rejoin else 'standby s1 takes over'} (heartbeat_timeout {args.heartbeat} s)")
        print(f"loss -> next token: min {min(gaps):.2f} s, max {max(gaps):.2f} s")
        if whole:
            print(f"missing -> whole again (coordinator log, from the heartbeat timeout firing): {float(whole[-1]):.3f} s")
        if replay:
            tokens, seqs, seconds, rate = replay[-1]
            print(f"replay: {tokens} tokens of {seqs} sequences in {float(seconds):.2f} s = {rate} tokens/s "
                  f"(plain prefill above: {prefill_tokens / prefill_seconds:.0f} tokens/s)")
        print(f"coordinator RSS: {rss_before:.1f} MiB before the streams, {rss_at_kill:.1f} MiB with {args.streams} "
              f"sequences of ~{min(progress) + 8} tokens")
        texts_ok = all(len(a) > 0 for a in arrivals)
        print("every stream ended" if texts_ok else "a stream got no text")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if args.keep:
            print(f"logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
