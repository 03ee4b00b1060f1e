"""Interop: an external Node.js gRPC client, built only from the .proto
files, against a real 3-node cluster. Installs @grpc/grpc-js and
@grpc/proto-loader with npm into the build directory."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import BUILD, Cluster  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")


def npm_install():
    prefix = os.path.join(BUILD, "interop-npm")
    mods = os.path.join(prefix, "node_modules")
    if not os.path.isdir(os.path.join(mods, "@grpc", "grpc-js")):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", prefix, "--no-audit",
                        "--no-fund", "--silent", "@grpc/grpc-js@1",
                        "@grpc/proto-loader@0.7"], check=True, timeout=500)
    return mods


class InteropTest(unittest.TestCase):
    def test_node_client_reports_and_reads_a_case(self):
        mods = npm_install()
        with Cluster(3) as c:
            c.start()
            leader = c.leader()
            follower = [n for n in c.nodes if n is not leader][0]
            env = dict(os.environ, NODE_PATH=mods)
            p = subprocess.run(["node", os.path.join(HERE, "client.js"),
                                PROTO, follower.grpc], env=env,
                               capture_output=True, timeout=120)
            print(p.stdout.decode())
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            self.assertIn("all checks passed", p.stdout.decode())
            for n in c.nodes:
                self.assertTrue(n.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
