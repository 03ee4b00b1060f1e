"""Bad input that is not a well-formed request: garbage bytes on the gRPC
and Raft ports, and missing or corrupt config files. Each gets a clear error
or is dropped; no node crashes; the stored state is unchanged."""
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from harness import CITYOPSD, Cluster


def blast(address, payloads):
    host, port = address.rsplit(":", 1)
    for p in payloads:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(p)
                s.settimeout(0.5)
                try:
                    s.recv(4096)
                except OSError:
                    pass
        except OSError:
            pass


def garbage():
    rnd = random.Random(1234)
    out = [bytes(rnd.getrandbits(8) for _ in range(n))
           for n in (1, 7, 64, 4096, 70000)]
    out.append(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out.append(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 100)
    # Raft-looking: protocol version 1, then absurd lengths.
    out.append((1).to_bytes(8, "little") + (2).to_bytes(8, "little") +
               (1 << 40).to_bytes(8, "little"))
    out.append((1).to_bytes(8, "little") + b"\x00" * 8 + b"\xff" * 64)
    return out


class BadInputTest(unittest.TestCase):
    def test_garbage_on_grpc_and_raft_ports_changes_nothing(self):
        with Cluster(3) as c:
            c.start()
            c.leader()
            c.ctl("case", "report", "--type", "event", "--major", "01",
                  "--minor", "01", "--desc", "before the garbage")
            before = c.converged()
            for n in c.nodes:
                blast(n.grpc, garbage())
                blast(n.raft, garbage())
            time.sleep(1.5)
            for n in c.nodes:
                self.assertTrue(n.alive(), "n%d died:\n%s" % (n.id, n.tail()))
            self.assertEqual(c.converged(), before)
            # And the cluster still takes writes.
            c.ctl("case", "report", "--type", "event", "--major", "01",
                  "--minor", "01", "--desc", "after the garbage")
            c.converged()

    def run_daemon(self, config_text=None, path=None):
        d = tempfile.mkdtemp(prefix="cityops-cfg-")
        if path is None:
            path = os.path.join(d, "node.ini")
            with open(path, "wb") as f:
                f.write(config_text)
        p = subprocess.run([CITYOPSD, "--config", path], capture_output=True,
                           timeout=30)
        return p.returncode, p.stderr.decode(errors="replace")

    def test_missing_config_file_is_a_clear_error(self):
        rc, err = self.run_daemon(path="/nonexistent/cityops/node.ini")
        self.assertEqual(rc, 1)
        self.assertIn("cannot open", err)
        self.assertIn("/nonexistent/cityops/node.ini", err)

    def test_corrupt_config_files_are_clear_errors(self):
        cases = [
            (b"\x00\xff\xfe garbage \x01\x02", "missing [node] id"),
            (b"this is not an ini file\n\xff\xfe\n", "syntax error"),
            (b"[node]\nid = banana\n", "bad value for [node] id"),
            (b"[node]\nid = 1\nfavourite_colour = red\n", "unknown key"),
            (b"[node]\nid = 1\ndata_dir = /tmp/x\n", "missing"),
            (b"[node]\nid = 1\ndata_dir = /tmp/x\ngrpc_address = a:1\n"
             b"raft_address = b:2\n[cluster]\nmember = 1 b:2\n",
             "bad value for [cluster] member"),
        ]
        for text, want in cases:
            rc, err = self.run_daemon(text)
            self.assertEqual(rc, 1, text)
            self.assertIn(want, err, text)

    def test_unknown_argument_is_a_usage_error(self):
        p = subprocess.run([CITYOPSD, "--bogus"], capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage", p.stderr.decode())


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
