"""A TCP proxy for Raft traffic that can cut the network between nodes.

Each node gets a proxy listener; the [cluster] member lines name the proxy
address, so every Raft connection *to* node D goes through D's proxy. libraft
(v0.15, src/uv_tcp_connect.c uvTcpEncodeHandshake and src/uv_tcp_listen.c
uvTcpDecodePreamble) starts each connection with a handshake:

    uint64 LE protocol version (1)
    uint64 LE id of the connecting server
    uint64 LE length of the address buffer (strlen + 1, padded to 8)
    the connecting server's address, NUL-padded

so the proxy reads the handshake, learns the sender, and refuses the
connection (closes it) when sender and destination are separated. Raft opens
one connection per direction (A sends on A->B, B answers on B->A). B sends
its answers to the address in A's handshake (src/recv_*.c set
message.server_address from it), which is A's listen address, not the member
address: so the proxy rewrites that address to A's proxy address, or answers
would bypass the proxy and a partition would cut one direction only. partition()/isolate()/heal() take
effect before they return: new connections between separated nodes are
refused and existing ones are aborted (RST).

Everything runs on one asyncio loop in a daemon thread owned by the test
process; stop() closes every listener and connection and joins the thread.
"""
import asyncio
import struct
import threading

PREAMBLE = struct.Struct("<QQQ")
HANDSHAKE_PROTOCOL = 1
HANDSHAKE_TIMEOUT = 5.0
MAX_ADDRESS = 4096


class NetProxy:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="netproxy")
        self.servers = {}      # dest id -> asyncio server
        self.targets = {}      # dest id -> (host, port) the node listens on
        self.public = {}       # node id -> its proxy address (member line)
        self.groups = None     # None: fully connected; else list of sets
        self.conns = set()     # (src, dst, client writer, upstream writer)
        self.stats = {"accepted": 0, "refused": 0, "aborted": 0,
                      "malformed": 0}
        self.thread.start()

    # ---- public API (called from the test thread) -------------------------

    def add(self, dest_id, target):
        """Start a listener for node dest_id forwarding to target
        ("host:port"); return the proxy address "127.0.0.1:PORT"."""
        host, port = target.rsplit(":", 1)
        self.targets[dest_id] = (host, int(port))
        self.public[dest_id] = self._call(self._listen(dest_id))
        return self.public[dest_id]

    def allowed(self, a, b):
        if a == b or self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def partition(self, groups):
        """Only nodes in the same group may talk; a node in no group is
        isolated from all others."""
        groups = [set(g) for g in groups]
        self._call(self._set_groups(groups))

    def isolate(self, node_id):
        others = [d for d in self.targets if d != node_id]
        self.partition([[node_id], others])

    def heal(self):
        self._call(self._set_groups(None))

    def pairs(self):
        """Current proxied connections as a sorted list of (src, dst)."""
        return self._call(self._pairs())

    def stop(self):
        if not self.thread.is_alive():
            return
        try:
            self._call(self._shutdown(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()

    # ---- loop side ---------------------------------------------------------

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro, timeout=10):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    async def _listen(self, dest_id):
        server = await asyncio.start_server(
            lambda r, w: self._accept(dest_id, r, w), "127.0.0.1", 0)
        self.servers[dest_id] = server
        return "127.0.0.1:%d" % server.sockets[0].getsockname()[1]

    async def _pairs(self):
        return sorted((s, d) for s, d, _, _ in self.conns)

    async def _set_groups(self, groups):
        self.groups = groups
        for conn in list(self.conns):
            src, dst, cw, uw = conn
            if not self.allowed(src, dst):
                self.stats["aborted"] += 1
                self._abort(conn)

    def _abort(self, conn):
        self.conns.discard(conn)
        for w in conn[2:]:
            if w is not None:
                w.transport.abort()

    async def _shutdown(self):
        for server in self.servers.values():
            server.close()
        for conn in list(self.conns):
            self._abort(conn)
        for server in self.servers.values():
            await server.wait_closed()
        self.servers.clear()
        tasks = [t for t in asyncio.all_tasks()
                 if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _accept(self, dst, reader, writer):
        try:
            pre = await asyncio.wait_for(reader.readexactly(PREAMBLE.size),
                                         HANDSHAKE_TIMEOUT)
            proto, src, alen = PREAMBLE.unpack(pre)
            if proto != HANDSHAKE_PROTOCOL or alen > MAX_ADDRESS:
                self.stats["malformed"] += 1
                writer.transport.abort()
                return
            address = await asyncio.wait_for(reader.readexactly(alen),
                                             HANDSHAKE_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError,
                ConnectionError):
            writer.transport.abort()
            return
        if not self.allowed(src, dst):
            self.stats["refused"] += 1
            writer.transport.abort()
            return
        try:
            ureader, uwriter = await asyncio.open_connection(
                *self.targets[dst])
        except OSError:
            writer.transport.abort()
            return
        if not self.allowed(src, dst):   # partitioned while connecting
            self.stats["refused"] += 1
            writer.transport.abort()
            uwriter.transport.abort()
            return
        conn = (src, dst, writer, uwriter)
        self.conns.add(conn)
        self.stats["accepted"] += 1
        uwriter.write(self._handshake(src, pre, address))
        await asyncio.gather(self._pump(reader, uwriter, conn),
                             self._pump(ureader, writer, conn))
        self._abort(conn)

    def _handshake(self, src, pre, address):
        """The handshake to forward: the sender's address replaced by its
        proxy address, NUL-terminated and padded to 8 bytes."""
        if src not in self.public:
            return pre + address
        a = self.public[src].encode() + b"\0"
        a += b"\0" * (-len(a) % 8)
        return PREAMBLE.pack(HANDSHAKE_PROTOCOL, src, len(a)) + a

    async def _pump(self, reader, writer, conn):
        try:
            while conn in self.conns:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            # One side closed: close the other so neither end half-hangs.
            self._abort(conn)
