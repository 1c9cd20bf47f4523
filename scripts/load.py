#!/usr/bin/env python3
"""Load on a running LlamaCluster endpoint: many clients, each on one kept HTTP/1.1 connection
(as requests.Session or the openai client keep theirs), posting /v1/completions in a mix of
plain and streamed requests, some streams hung up on mid-way (a client cancelling).

Prints, every --report-every seconds and at the end: requests, answers, cancellations,
failures by reason, latency p50/p99 (plain requests; streams: first piece and whole), and the
resident memory of every process named with --pid (at the start, and now). Exits 1 when any
request failed. Python 3 standard library only.

  scripts/load.py --endpoint http://127.0.0.1:8080 --clients 64 --seconds 600 \\
      --pid coord=1234 --pid w1=1235 --pid w2=1236
"""
import argparse
import glob
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

PROMPTS = ["Once upon a time", "The little dog", "Python is", "Tom and Sue went to the park.",
           "One day, a bird", "The sun was hot and", "Mom said", "There was a big tree"]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.answered = self.cancelled = 0
        self.failures = {}
        self.plain = []
        self.stream_first = []
        self.stream_whole = []

    def fail(self, reason):
        with self.lock:
            self.failures[reason] = self.failures.get(reason, 0) + 1


class Client(threading.Thread):
    def __init__(self, index, args, stats, deadline):
        super().__init__(daemon=True)
        self.index, self.args, self.stats, self.deadline = index, args, stats, deadline
        self.rng = random.Random(1000 + index)
        url = urllib.parse.urlsplit(args.endpoint)
        self.host, self.port = url.hostname, url.port or 80
        self.conn = None

    def connection(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)
        return self.conn

    def hang_up(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def run(self):
        while time.monotonic() < self.deadline:
            stream = self.rng.random() < self.args.stream_share
            cancel = stream and self.rng.random() < self.args.cancel_share
            body = {"prompt": self.rng.choice(PROMPTS), "max_tokens": self.args.max_tokens,
                    "temperature": 0 if self.rng.random() < 0.5 else 0.8, "seed": self.rng.randrange(1 << 30),
                    "stream": stream}
            with self.stats.lock:
                self.stats.requests += 1
            started = time.monotonic()
            try:
                conn = self.connection()
                conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                if resp.status != 200:
                    text = resp.read().decode(errors="replace")
                    try:
                        text = json.loads(text)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        pass
                    self.stats.fail(f"HTTP {resp.status}: {text[:100]}")
                    if resp.status == 503:
                        time.sleep(float(resp.getheader("Retry-After", "1")))
                    continue
                if not stream:
                    answer = json.loads(resp.read())
                    if answer["choices"][0].get("finish_reason") is None:
                        self.stats.fail("answer without finish_reason")
                        continue
                    with self.stats.lock:
                        self.stats.answered += 1
                        self.stats.plain.append(time.monotonic() - started)
                    continue
                first, pieces, done, error = None, 0, False, None
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    line = line.strip()
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:]
                    if data == b"[DONE]":
                        done = True
                        continue
                    event = json.loads(data)
                    if "error" in event:
                        error = event["error"].get("message", "error event")
                        continue
                    pieces += 1
                    if first is None:
                        first = time.monotonic() - started
                    if cancel and pieces >= 3:
                        break
                if cancel and pieces >= 3 and not done:
                    self.hang_up()
                    with self.stats.lock:
                        self.stats.cancelled += 1
                    continue
                if error or not done:
                    self.stats.fail(f"stream: {error or 'ended without [DONE]'}")
                    self.hang_up()
                    continue
                with self.stats.lock:
                    self.stats.answered += 1
                    self.stats.stream_first.append(first if first is not None else time.monotonic() - started)
                    self.stats.stream_whole.append(time.monotonic() - started)
            except Exception as e:  # every way a request can fail is a reason to count
                self.stats.fail(f"{type(e).__name__}: {e}"[:140])
                self.hang_up()
        self.hang_up()


def watched(args):
    """(name, pid) of every process named with --pid, or by a NAME.pid file in --pid-dir (read
    again each time: a restarted process has a new pid)."""
    out = []
    for item in args.pid:
        name, _, pid = item.partition("=")
        out.append((name, int(pid)))
    if args.pid_dir:
        for path in sorted(glob.glob(os.path.join(args.pid_dir, "*.pid"))):
            try:
                with open(path) as f:
                    out.append((os.path.basename(path)[:-4], int(f.read().strip())))
            except (OSError, ValueError):
                pass
    return out


def report(stats, pids, rss_start, elapsed, final):
    with stats.lock:
        failures = dict(stats.failures)
        failed = sum(failures.values())
        lines = [f"{'final' if final else 'after'} {elapsed:.0f} s: {stats.requests} requests, {stats.answered} answered, "
                 f"{stats.cancelled} cancelled by the client, {failed} failed"]
        lines.append(f"  plain: {len(stats.plain)}, latency p50 {percentile(stats.plain, 50) * 1e3:.0f} ms, "
                     f"p99 {percentile(stats.plain, 99) * 1e3:.0f} ms")
        lines.append(f"  streamed: {len(stats.stream_whole)}, first piece p50 {percentile(stats.stream_first, 50) * 1e3:.0f} ms, "
                     f"p99 {percentile(stats.stream_first, 99) * 1e3:.0f} ms; whole p50 {percentile(stats.stream_whole, 50) * 1e3:.0f} ms, "
                     f"p99 {percentile(stats.stream_whole, 99) * 1e3:.0f} ms")
    for reason, n in sorted(failures.items(), key=lambda kv: -kv[1]):
        lines.append(f"  failure x{n}: {reason}")
    for name, pid in pids:
        now = rss_kib(pid)
        start_pid, start = rss_start.get(name, (None, None))
        fmt = lambda k: "gone" if k is None else f"{k / 1024:.1f} MiB"
        again = "" if start_pid in (None, pid) else f" (restarted; pid {start_pid} at the start)"
        lines.append(f"  RSS {name} (pid {pid}): start {fmt(start)}, now {fmt(now)}{again}")
    print("\n".join(lines), flush=True)
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--stream-share", type=float, default=0.4, help="share of requests streamed")
    ap.add_argument("--cancel-share", type=float, default=0.25, help="share of streams hung up on after 3 pieces")
    ap.add_argument("--timeout", type=float, default=120, help="socket timeout per request, seconds")
    ap.add_argument("--report-every", type=float, default=60)
    ap.add_argument("--pid", action="append", default=[], help="NAME=PID of a cluster process to watch (repeatable)")
    ap.add_argument("--pid-dir", help="a directory of NAME.pid files of the cluster's processes")
    args = ap.parse_args()
    rss_start = {name: (pid, rss_kib(pid)) for name, pid in watched(args)}
    stats = Stats()
    start = time.monotonic()
    clients = [Client(i, args, stats, start + args.seconds) for i in range(args.clients)]
    for c in clients:
        c.start()
    next_report = start + args.report_every
    while any(c.is_alive() for c in clients):
        time.sleep(0.5)
        if time.monotonic() >= next_report and time.monotonic() < start + args.seconds:
            report(stats, watched(args), rss_start, time.monotonic() - start, False)
            next_report += args.report_every
    failed = report(stats, watched(args), rss_start, time.monotonic() - start, True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
