#!/usr/bin/env python3
"""A transparent TCP relay that delays every byte by a fixed time: netem's egress delay in
userspace, for kernels without sch_netem (deploy/bench-netns.sh uses it that way).

    delay-relay.py --port 15001 --delay-ms 2 [--mark 0x4c43] [--max-queue-mib 4]

Run it as root inside a network namespace whose outgoing connections an iptables rule sends
to it, sparing the relay's own connections (marked with SO_MARK):

    iptables -t nat -A OUTPUT -p tcp -m mark --mark 0x4c43 -j RETURN
    iptables -t nat -A OUTPUT -p tcp -d 10.214.7.0/24 -j REDIRECT --to-ports 15001

For each redirected connection the relay asks the kernel for the original destination
(SO_ORIGINAL_DST), connects there and copies bytes both ways, writing every chunk it read
DELAY ms after it read it, in order. Chunks are scheduled, not slept on one after another,
so the throughput is not capped at one chunk per delay. Only the connecting side's relay
sees a connection, and it delays both directions: each one-way hop gets DELAY ms, a round
trip twice that, as netem on every host's egress would give. (Connection setup is not
delayed: connect() returns at once and the relay's own connect takes no added time.)

A direction holding more than --max-queue-mib unwritten stops reading until it falls below,
so a fast sender cannot make the relay buffer without limit. Stops on SIGTERM (and SIGINT
unless started with it ignored), printing how many connections and bytes it relayed on stderr.
"""
import argparse
import asyncio
import collections
import ctypes
import errno
import selectors
import signal
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, level SOL_IP
SO_MARK = getattr(socket, "SO_MARK", 36)
# Queue markers: shut down writing (a FIN) / close / reset the other side.
EOF, CLOSE, RESET = object(), object(), object()

stats = {"connections": 0, "failed": 0, "bytes": 0}


def log(message):
    print(f"delay-relay: {message}", file=sys.stderr, flush=True)


class Pipe:
    """One direction of a relayed connection: chunks read from `src`, each written to `dst` at
    its read time plus the delay, in order."""

    def __init__(self, relay, src):
        self.relay, self.src = relay, src
        self.dst = None  # the other side's Side, once it is connected
        self.queue = collections.deque()  # (due time, bytes | EOF | CLOSE | RESET)
        self.queued = 0  # bytes in the queue
        self.timer = None
        self.dst_paused = False  # the other side's transport buffer is full
        self.src_paused = False  # we stopped reading `src` (queue over the limit)

    def push(self, item):
        loop = self.relay.loop
        self.queue.append((loop.time() + self.relay.delay, item))
        if isinstance(item, bytes):
            self.queued += len(item)
            stats["bytes"] += len(item)
            if self.queued > self.relay.max_queue and not self.src_paused and self.src.transport:
                self.src_paused = True
                self.src.transport.pause_reading()
        self.schedule()

    def schedule(self):
        if self.timer or not self.queue or self.dst is None or self.dst.transport is None or self.dst_paused:
            return
        due = self.queue[0][0]
        if due <= self.relay.loop.time():
            self.flush()
        else:
            self.timer = self.relay.loop.call_at(due, self.flush)

    def flush(self):
        self.timer = None
        loop, transport = self.relay.loop, self.dst.transport
        while self.queue and not self.dst_paused and self.queue[0][0] <= loop.time():
            if transport.is_closing():  # reset, failed or closed: nothing more can be written to it
                self.drop()
                return
            _, item = self.queue.popleft()
            if item is EOF:
                try:
                    transport.write_eof()
                except OSError:  # the other side is already gone (reset): its connection_lost follows
                    transport.abort()
                    break
                self.dst.wrote_eof = True
                if self.dst.read_eof:
                    transport.close()
            elif item is CLOSE:
                transport.close()  # after its buffer has been written
            elif item is RESET:
                self.dst.reset()
            else:
                self.queued -= len(item)
                transport.write(item)  # may call dst.pause_writing(), which stops this loop
        if self.src_paused and self.queued <= self.relay.max_queue // 2 and self.src.transport:
            self.src_paused = False
            self.src.transport.resume_reading()
        self.schedule()

    def drop(self):
        """The other side is gone: nothing more can be written."""
        if self.timer:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0
        self.dst = None


class Side(asyncio.Protocol):
    """One socket of a relayed connection: what it reads goes into `out`; `into` writes to it."""

    def __init__(self, relay):
        self.relay = relay
        self.transport = None
        self.out = Pipe(relay, self)
        self.into = None  # the other side's `out`
        self.read_eof = self.wrote_eof = self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.into is not None:
            self.into.schedule()

    def data_received(self, data):
        self.out.push(data)

    def eof_received(self):
        self.read_eof = True
        self.out.push(EOF)
        if self.wrote_eof:
            return False  # both directions finished: the transport closes itself
        return True  # keep writing the other direction (a half-closed connection)

    def reset(self):
        """Closes with a TCP reset rather than an orderly end."""
        try:
            self.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed
        self.transport.abort()

    def connection_lost(self, exc):
        self.lost = True
        if self.into is not None:
            self.into.drop()
        if not self.read_eof:  # deliver what was read, then end the other side the same way
            self.out.push(RESET if isinstance(exc, ConnectionResetError) else CLOSE)

    def pause_writing(self):
        if self.into is not None:
            self.into.dst_paused = True

    def resume_writing(self):
        if self.into is not None:
            self.into.dst_paused = False
            # Not from inside the transport's own write handler, which calls this: a flush that
            # closed the transport there would have connection_lost called twice.
            self.relay.loop.call_soon(self.into.schedule)


class Client(Side):
    """The redirected connection: looks up where it was going and connects there."""

    def connection_made(self, transport):
        super().connection_made(transport)
        stats["connections"] += 1
        sock = transport.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        except OSError as e:
            log(f"no original destination for {transport.get_extra_info('peername')} ({e}): not a redirected connection")
            stats["failed"] += 1
            self.reset()
            return
        port, packed = struct.unpack_from("!2xH4s", raw)
        target = (socket.inet_ntoa(packed), port)
        if target == transport.get_extra_info("sockname"):
            log(f"connection from {transport.get_extra_info('peername')} was addressed to the relay itself: refused")
            stats["failed"] += 1
            self.reset()
            return
        task = self.relay.loop.create_task(self.connect(target))
        self.relay.tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self.relay.tasks.discard)

    async def connect(self, target):
        loop = self.relay.loop
        upstream = Side(self.relay)
        upstream.into, self.into = self.out, upstream.out
        self.out.dst, upstream.out.dst = upstream, self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The mark exempts this connection from the redirect that brought the client here.
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.relay.mark)
            sock.setblocking(False)
            await loop.sock_connect(sock, target)
            await loop.create_connection(lambda: upstream, sock=sock)
        except OSError as e:
            sock.close()
            stats["failed"] += 1
            log(f"connecting to {target[0]}:{target[1]} failed: {e}")
            self.out.drop()
            if self.transport and not self.lost:
                self.reset()  # the client sees a reset, as from a refused connection
            return
        if self.lost:  # the client went away while we connected: forward what it sent, then close
            self.out.schedule()


def quiet_disconnects(loop, context):
    """asyncio's transport shuts a half-closed socket down after its buffer drains without
    catching the error when the peer has reset it meanwhile; the reset reaches connection_lost
    anyway. Other errors are logged as usual."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET):
        return
    loop.default_exception_handler(context)


class Relay:
    def __init__(self, loop, delay_ms, mark, max_queue):
        self.loop, self.delay, self.mark, self.max_queue = loop, delay_ms / 1000, mark, max_queue
        self.tasks = set()  # connects under way


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 the REDIRECT rule sends to")
    parser.add_argument("--delay-ms", type=float, required=True, help="delay of every byte, each way (ms)")
    parser.add_argument("--mark", type=lambda s: int(s, 0), default=0x4C43,
                        help="SO_MARK of the relay's own connections, for the rule to spare (default 0x4c43)")
    parser.add_argument("--max-queue-mib", type=float, default=4, help="unwritten bytes per direction before reading pauses")
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")

    # The default selector (epoll) waits in whole milliseconds, which would round a 0.5 ms delay
    # up to 1 ms; select() waits in microseconds (and a relay has few sockets).
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    loop.set_exception_handler(quiet_disconnects)
    # Linux lets a timed wait end up to 50 us late by default (timer slack); ask for 1 ns.
    try:
        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass
    asyncio.set_event_loop(loop)
    relay = Relay(loop, args.delay_ms, args.mark, int(args.max_queue_mib * 1024 * 1024))
    try:
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, SO_MARK, args.mark)
        probe.close()
    except OSError as e:
        sys.exit(f"delay-relay: cannot set SO_MARK ({e}): run it as root (CAP_NET_ADMIN)")
    try:
        server = loop.run_until_complete(loop.create_server(lambda: Client(relay), "127.0.0.1", args.port,
                                                            reuse_address=True, backlog=512))
    except OSError as e:
        sys.exit(f"delay-relay: cannot listen on 127.0.0.1:{args.port}: {e}")
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job of a script ignores it
        loop.add_signal_handler(signal.SIGINT, stop.set)
    # A line on stdout for scripts to wait on.
    print(f"delay-relay: listening on 127.0.0.1:{args.port}, {args.delay_ms:g} ms each way", flush=True)
    loop.run_until_complete(stop.wait())
    server.close()
    log(f"stopped: {stats['connections']} connections ({stats['failed']} failed), {stats['bytes']} bytes relayed")
    loop.close()


if __name__ == "__main__":
    main()
