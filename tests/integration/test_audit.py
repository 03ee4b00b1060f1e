"""The audit trail on a real cluster: every replica holds the same chain;
signed tree heads, inclusion and consistency proofs check out against an
independent RFC 6962 implementation (rfc6962.py); and a byte changed on disk
(an audit record, a case, a checkpoint signature) with the node stopped is
pinpointed by `cityctl audit verify`."""
import base64
import os
import subprocess
import sys
import unittest

from harness import CITYCTL, Cluster, CtlError, wait_for
import rfc6962

SHA = "c" * 64
ATTACH = SHA + ":https://evidence.example/a.jpg"


def b64(s):
    return base64.b64decode(s) if s else b""


def lmdb_patch(env_dir, db, key_hex, mutate):
    """Rewrite one value of an LMDB database with lmdb-utils (node stopped):
    mutate(bytes) -> bytes."""
    out = subprocess.run(["mdb_dump", "-s", db, env_dir], check=True,
                         capture_output=True, text=True).stdout
    lines = out.splitlines()
    body = lines.index("HEADER=END") + 1
    header = [h for h in lines[:body] if not h.startswith("db_pagesize")]
    pairs = lines[body:lines.index("DATA=END")]
    for i in range(0, len(pairs), 2):
        if pairs[i].strip() == key_hex:
            value = bytes.fromhex(pairs[i + 1].strip())
            new = mutate(value)
            dump = "\n".join(header + [pairs[i], " " + new.hex(),
                                       "DATA=END"]) + "\n"
            subprocess.run(["mdb_load", "-s", db, env_dir], input=dump,
                           text=True, check=True)
            return value
    raise AssertionError("key %s not in %s" % (key_hex, db))


def flip_last_byte(v):
    return v[:-1] + bytes([v[-1] ^ 0x01])


class AuditTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(3)
        key = os.path.join(cls.c.dir, "audit.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519",
                        "-out", key], check=True, capture_output=True)
        os.chmod(key, 0o600)
        cls.pub = os.path.join(cls.c.dir, "audit.pub")
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out",
                        cls.pub], check=True, capture_output=True)
        for n in cls.c.nodes:
            n.write_config(cls.c.nodes, "[audit]\nkey_file = %s\n"
                           "checkpoint_every = 10\n" % key)
        cls.c.start()
        cls.c.leader()
        ctl = cls.c.ctl
        cls.case_ids = []
        for i in range(4):
            cid = str(ctl("case", "report", "--type", "component", "--major",
                          "01", "--minor", "02", "--desc", "cover %d" % i)
                      ["case"]["case_id"])
            cls.case_ids.append(cid)
            ctl("case", "accept", cid)
            ctl("case", "register", cid)
            try:
                ctl("case", "close", cid)      # refused: still recorded
            except CtlError:
                pass
        wait_for("a signed checkpoint", lambda: any(
            cp.get("signature") for cp in cls.checkpoints(cls.c.nodes[0])),
            30, 0.3)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    @classmethod
    def checkpoints(cls, node):
        return cls.c.ctl("audit", "heads",
                         endpoints=node.grpc).get("checkpoints", [])

    def verify(self, node, *extra):
        p = subprocess.run([CITYCTL, "--endpoints", node.grpc, "audit",
                            "verify"] + list(extra), capture_output=True,
                           text=True, timeout=120)
        return p.returncode, p.stdout + p.stderr

    def test_every_replica_holds_the_same_chain_and_verifies(self):
        self.c.converged()
        heads = set()
        for n in self.c.nodes:
            rc, out = self.verify(n, "--public-key", self.pub)
            self.assertEqual(rc, 0, out)
            self.assertIn("signature ok", out)
            self.assertIn("audit verify: OK", out)
            recs = self.c.ctl("audit", "list", endpoints=n.grpc)["records"]
            heads.add((len(recs), recs[-1]["hash"]))
        self.assertEqual(len(heads), 1, heads)

    def test_refused_commands_are_recorded(self):
        recs = self.c.ctl("audit", "list", "--target",
                          "case/" + self.case_ids[0])["records"]
        ops = [(r["operation"], int(r.get("result", 0))) for r in recs]
        self.assertIn(("close", 9), ops)   # FAILED_PRECONDITION, recorded
        self.assertEqual(ops[0], ("report", 0))

    def test_proofs_verify_with_an_independent_implementation(self):
        leader = self.c.leader()
        first = self.c.ctl("audit", "checkpoint",
                           endpoints=leader.grpc)["checkpoint"]
        self.c.ctl("case", "report", "--type", "event", "--major", "01",
                   "--minor", "01", "--desc", "between heads")
        second = self.c.ctl("audit", "checkpoint",
                            endpoints=leader.grpc)["checkpoint"]
        m, n = int(first["tree_size"]), int(second["tree_size"])
        self.assertLess(m, n)
        recs = self.c.ctl("--consistency", "linearizable", "audit", "list",
                          endpoints=leader.grpc)["records"]
        leaves = [rfc6962.leaf_hash(b64(r["hash"])) for r in recs]
        self.assertEqual(rfc6962.mth(leaves[:m]), b64(first["root_hash"]))
        self.assertEqual(rfc6962.mth(leaves[:n]), b64(second["root_hash"]))
        for seq in sorted({0, 1, m // 2, m - 1, n - 1}):
            p = self.c.ctl("--consistency", "linearizable", "audit", "proof",
                           str(seq), "--tree-size", str(n),
                           endpoints=leader.grpc)
            path = [b64(h) for h in p.get("path", [])]
            self.assertTrue(rfc6962.verify_inclusion(
                seq, n, leaves[seq], path, b64(second["root_hash"])), seq)
            # A wrong leaf does not verify.
            self.assertFalse(rfc6962.verify_inclusion(
                seq, n, leaves[(seq + 1) % n], path,
                b64(second["root_hash"])))
        for a, b in [(m, n), (1, n), (m - 1, n), (2, m)]:
            if not 0 < a <= b:
                continue
            proof = self.c.ctl("--consistency", "linearizable", "audit",
                               "consistency", str(a), str(b),
                               endpoints=leader.grpc)
            path = [b64(h) for h in proof.get("path", [])]
            self.assertTrue(rfc6962.verify_consistency(
                a, b, rfc6962.mth(leaves[:a]), rfc6962.mth(leaves[:b]), path),
                (a, b))

    def tamper_and_verify(self, db, key_hex, want):
        node = self.c.nodes[2]
        self.c.converged()
        node.stop()
        env = os.path.join(node.dir, "store")
        old = lmdb_patch(env, db, key_hex, flip_last_byte)
        try:
            node.start()
            rc, out = self.verify(node)
            self.assertEqual(rc, 1, out)
            self.assertIn(want, out)
            # The untouched replicas still verify.
            rc, out0 = self.verify(self.c.nodes[0])
            self.assertEqual(rc, 0, out0)
        finally:
            node.stop()
            lmdb_patch(env, db, key_hex, lambda v: old)
            node.start()
        rc, out = self.verify(node)
        self.assertEqual(rc, 0, out)
        return out

    def test_an_edited_audit_record_is_pinpointed(self):
        seq = 5
        out = self.tamper_and_verify("audit", "%016x" % seq,
                                     "CHAIN BROKEN at record %d" % seq)
        del out

    def test_an_edited_case_is_pinpointed(self):
        cid = int(self.case_ids[1])
        self.tamper_and_verify("cases", "%016x" % cid,
                               "MISMATCH case/%d" % cid)

    def test_archive_verifies_offline_and_a_changed_byte_is_found(self):
        node = self.c.nodes[0]
        path = os.path.join(self.c.dir, "trail-%d.archive" % os.getpid())
        self.c.ctl("audit", "archive", "--out", path, endpoints=node.grpc)
        p = subprocess.run([CITYCTL, "audit", "verify", "--archive", path,
                            "--public-key", self.pub], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("signature ok", p.stdout)
        # An archive is never overwritten.
        with self.assertRaises(CtlError):
            self.c.ctl("audit", "archive", "--out", path, endpoints=node.grpc)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        # Change one byte inside the description-free part of record 3: find
        # the 4th record's frame ('R' + u32 length) after the magic.
        off = len(b"COAUDIT1\n")
        for _ in range(3):
            off += 5 + int.from_bytes(data[off + 1:off + 5], "big")
        data[off + 6] ^= 0x01        # the record's seq or index varint
        bad = path + ".bad"
        with open(bad, "wb") as f:
            f.write(bytes(data))
        p = subprocess.run([CITYCTL, "audit", "verify", "--archive", bad],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("CHAIN BROKEN at record 3", p.stdout)

    def test_zz_key_rotation_is_recorded_and_old_heads_still_verify(self):
        # Runs last: it changes the cluster's key.
        key2 = os.path.join(self.c.dir, "audit2.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519",
                        "-out", key2], check=True, capture_output=True)
        os.chmod(key2, 0o600)
        for n in self.c.nodes:
            n.stop()
            n.write_config(self.c.nodes, "[audit]\nkey_file = %s\n"
                           "checkpoint_every = 10\n" % key2)
            n.start()
        leader = self.c.leader()
        self.c.ctl("audit", "checkpoint", endpoints=leader.grpc)
        wait_for("the rotation recorded", lambda: any(
            e["kind"] == "key-rotation"
            for e in self.c.status(leader).get("events", [])), 30, 0.3)
        wait_for("a head signed with the new key", lambda: len({
            cp.get("public_key") for cp in self.checkpoints(leader)
            if cp.get("signature")}) == 2, 30, 0.3)
        rc, out = self.verify(leader)
        self.assertEqual(rc, 0, out)
        # Pinning the old key now flags the heads signed with the new one.
        rc, out = self.verify(leader, "--public-key", self.pub)
        self.assertEqual(rc, 1, out)
        self.assertIn("SIGNATURE INVALID", out)


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
