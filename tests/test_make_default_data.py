#!/usr/bin/env python3
"""Tests of scripts/make-default-data.py on hand-made package indexes (run by ctest)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts",
                      "make-default-data.py")


def record(i, **extra):
    fields = {
        "Package": f"pkg{i:03d}",
        "Version": f"1.{i}-1",
        "Maintainer": f"Person {i} <p{i}@example.org>",
        "Section": ["libs", "devel", "utils"][i % 3],
        "Priority": "optional",
        "Description": f"tool number {i} for testing",
    }
    fields.update(extra)
    return "\n".join(f"{k}: {v}" for k, v in fields.items() if v is not None) + "\n"


def run(packages_text, *args, binary=False):
    d = tempfile.mkdtemp()
    src = os.path.join(d, "Packages")
    with open(src, "wb") as f:
        f.write(packages_text if binary else packages_text.encode())
    out = os.path.join(d, "out")
    p = subprocess.run([sys.executable, SCRIPT, "--packages", src, "--out", out, *args],
                       capture_output=True, text=True)
    return p, out


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


class MakeDefaultData(unittest.TestCase):
    def test_cards_questions_and_split(self):
        text = "\n".join(record(i) for i in range(300))
        p, out = run(text, "--heldout-share", "0.1")
        self.assertEqual(p.returncode, 0, p.stderr)
        train = read_jsonl(os.path.join(out, "passages-train.jsonl"))
        held = read_jsonl(os.path.join(out, "passages-heldout.jsonl"))
        self.assertEqual(len(train) + len(held), 300)
        self.assertTrue(10 <= len(held) <= 60, len(held))  # about 10% by hash
        self.assertFalse({x["id"] for x in train} & {x["id"] for x in held})
        card = next(x for x in train + held if x["id"] == "pkg007")["text"]
        self.assertEqual(card, "pkg007 is a Debian package: tool number 7 for testing. Version "
                         "1.7-1 is in the devel section with optional priority. It is "
                         "maintained by Person 7.")
        cards = {x["id"]: x["text"] for x in train + held}
        for part in ("train", "heldout"):
            qa = read_jsonl(os.path.join(out, f"qa-{part}.jsonl"))
            self.assertTrue(qa)
            for q in qa:
                gold = q["gold"][0]
                self.assertEqual(len(q["contexts"]), 5)
                self.assertEqual(q["contexts"].count(cards[gold]), 1)
                self.assertIn(gold, q["question"])
                # The answer is written in the gold card; the contexts are distinct cards.
                self.assertIn(q["answers"][0], cards[gold])
                ids = {i for i, t in cards.items() if t in q["contexts"]}
                self.assertEqual(len(ids), 5)
        docs = os.listdir(os.path.join(out, "docs"))
        self.assertEqual(sorted(d[:-3] for d in docs), sorted(x["id"] for x in held))
        # Deterministic.
        p2, out2 = run(text, "--heldout-share", "0.1")
        for name in ("passages-train.jsonl", "qa-train.jsonl", "qa-heldout.jsonl"):
            with open(os.path.join(out, name)) as a, open(os.path.join(out2, name)) as b:
                self.assertEqual(a.read(), b.read(), name)

    def test_odd_records(self):
        parts = [record(i) for i in range(120)]
        parts.append(record(500, Description=None))             # no description: skipped
        parts.append(record(0, Version="9.9-9"))                # a second pkg000: first kept
        parts.append("just some text without a colon\n" + record(501))
        parts.append(record(502, Description="short line\n long description continues\n ."))
        parts.append(record(503, Depends="libc6 (>= 2.34), libfoo1 | libbar1, python3:any"))
        p, out = run("\n".join(parts) + "\n\n\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        cards = {x["id"]: x["text"] for name in ("passages-train.jsonl", "passages-heldout.jsonl")
                 for x in read_jsonl(os.path.join(out, name))}
        self.assertNotIn("pkg500", cards)
        self.assertIn("Version 1.0-1", cards["pkg000"])
        self.assertIn("pkg501", cards)
        self.assertIn("short line.", cards["pkg502"])
        self.assertNotIn("continues", cards["pkg502"])
        self.assertIn("It depends on libc6, libfoo1, python3.", cards["pkg503"])

    def test_invalid_utf8_is_replaced(self):
        text = "\n".join(record(i) for i in range(110)).encode()
        text += b"\nPackage: bad\nDescription: caf\xe9 \xff tool\nSection: misc\n"
        p, out = run(text, binary=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        cards = {x["id"]: x["text"] for name in ("passages-train.jsonl", "passages-heldout.jsonl")
                 for x in read_jsonl(os.path.join(out, name))}
        self.assertIn("caf\ufffd \ufffd tool", cards["bad"])

    def test_too_few_or_no_records(self):
        for text in ("", "garbage\n\n\x00\x01\n", "\n".join(record(i) for i in range(50))):
            p, _ = run(text)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("at least 100 are needed", p.stderr)
            self.assertNotIn("Traceback", p.stderr)

    def test_missing_file(self):
        d = tempfile.mkdtemp()
        p = subprocess.run([sys.executable, SCRIPT, "--packages", os.path.join(d, "nope"),
                            "--out", os.path.join(d, "out")], capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nope", p.stderr)
        self.assertNotIn("Traceback", p.stderr)


if __name__ == "__main__":
    unittest.main()
