#!/usr/bin/env python3
"""Derives the default model's training and evaluation data from text on a stock Debian machine.

The source is apt's package index (`apt-cache dumpavail`, or a file of the same format given with
--packages): one record per package with its version, section, maintainer, homepage, dependencies
and one-line description. Each package becomes one short passage ("package card"), and a handful
of questions whose answer is a field of that card. Nothing is downloaded and no third-party text
beyond what apt already holds is used.

Output directory:
  passages-train.jsonl   {"id", "title", "text"}              pre-training (auto-encoding, text
                                                               continuation)
  passages-heldout.jsonl the same for held-out packages       reconstruction evaluation
  qa-train.jsonl         {"question", "answers", "contexts",   fine-tuning: the gold card among
                          "gold"}                              k-1 cards of similar names
  qa-heldout.jsonl       the same for held-out packages       QA evaluation (contexts given, or
                                                               retrieved from a store)
  docs/                  held-out cards as Markdown files     a store for QA with retrieval and
                                                               for the README's demo
Packages are split by a hash of their name, so the split does not depend on the order of the
index. Everything is deterministic for a given index and --seed.
"""
import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys


def read_records(text):
    rec, key = {}, None
    for line in text.splitlines():
        if not line.strip():
            if rec:
                yield rec
            rec, key = {}, None
            continue
        if line[0] in " \t":
            if key:
                rec[key] += "\n" + line.strip()
            continue
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        rec[key] = value.strip()
    if rec:
        yield rec


def person(field):
    # "Debian Games Team <list@example.org>" -> "Debian Games Team"
    name = re.sub(r"<[^>]*>", "", field).strip().strip('"')
    return name


def dep_names(field, limit):
    names = []
    for alt in field.split(","):
        name = alt.split("|")[0].strip().split(" ")[0].split(":")[0]
        if name and name not in names:
            names.append(name)
    return names[:limit]


def card(rec):
    pkg = rec["Package"]
    desc = rec.get("Description", "").split("\n")[0].strip().rstrip(".")
    parts = [f"{pkg} is a Debian package: {desc}."]
    parts.append(f"Version {rec.get('Version', 'unknown')} is in the {rec.get('Section', 'misc')} "
                 f"section with {rec.get('Priority', 'optional')} priority.")
    parts.append(f"It is maintained by {person(rec.get('Maintainer', 'nobody'))}.")
    if rec.get("Source"):
        parts.append(f"Its source package is {rec['Source'].split(' ')[0]}.")
    if rec.get("Homepage"):
        parts.append(f"Homepage: {rec['Homepage']}.")
    deps = dep_names(rec.get("Depends", ""), 5)
    if deps:
        parts.append("It depends on " + ", ".join(deps) + ".")
    return " ".join(parts)


def questions(rec):
    pkg = rec["Package"]
    desc = rec.get("Description", "").split("\n")[0].strip().rstrip(".")
    qa = [
        (f"Who maintains {pkg}?", person(rec.get("Maintainer", ""))),
        (f"Which section is {pkg} in?", rec.get("Section", "")),
        (f"What version of {pkg} is available?", rec.get("Version", "")),
        (f"What is {pkg}?", desc),
    ]
    if rec.get("Homepage"):
        qa.append((f"What is the homepage of {pkg}?", rec["Homepage"]))
    if rec.get("Source"):
        qa.append((f"What is the source package of {pkg}?", rec["Source"].split(" ")[0]))
    return [(q, a) for q, a in qa if a]


def held_out(name, share):
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return h % 10000 < share * 10000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--packages", help="a Packages-format file (default: apt-cache dumpavail)")
    ap.add_argument("--heldout-share", type=float, default=0.02,
                    help="share of packages held out (default 0.02)")
    ap.add_argument("--k", type=int, default=5, help="passages per training question (default 5)")
    ap.add_argument("--questions-per-package", type=int, default=2,
                    help="training questions drawn per package (default 2)")
    ap.add_argument("--max-heldout-docs", type=int, default=400,
                    help="held-out cards written to docs/ (default 400)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    if args.packages:
        try:
            with open(args.packages, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            sys.exit(f"make-default-data.py: --packages {args.packages}: {e.strerror}")
    else:
        try:
            text = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True,
                                  text=True, errors="replace").stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"make-default-data.py: apt-cache dumpavail failed ({e}); "
                     "pass a Packages file with --packages")

    recs = {}
    for rec in read_records(text):
        name = rec.get("Package")
        if name and name not in recs and rec.get("Description"):
            recs[name] = rec
    if len(recs) < 100:
        sys.exit(f"make-default-data.py: only {len(recs)} package records with a description "
                 f"found in {args.packages or 'apt-cache dumpavail'} (at least 100 are needed); "
                 "run `apt-get update` or pass --packages")
    names = sorted(recs)
    rng = random.Random(args.seed)
    os.makedirs(os.path.join(args.out, "docs"), exist_ok=True)

    split = {n: held_out(n, args.heldout_share) for n in names}
    split_sizes = {True: sum(split.values()), False: len(names) - sum(split.values())}
    if args.k < 1 or args.k > len(names):
        sys.exit(f"make-default-data.py: --k {args.k}: must be between 1 and {len(names)}")
    cards = {n: card(recs[n]) for n in names}
    index = {n: i for i, n in enumerate(names)}

    def negatives(name, count):
        # Cards of neighbouring names (libfoo1, libfoo-dev, ...) from the same split: the hard
        # negatives a retriever would return for a question naming the package.
        # A split too small to give `count` others borrows from the other split.
        same = split_sizes[split[name]] > count
        pool = [n for n in names[max(0, index[name] - 6):index[name] + 7]
                if n != name and (split[n] == split[name] or not same)]
        rng.shuffle(pool)
        while len(pool) < count:
            n = names[rng.randrange(len(names))]
            if n != name and (split[n] == split[name] or not same) and n not in pool:
                pool.append(n)
        return pool[:count]

    counts = {}
    files = {}
    for part in ("train", "heldout"):
        files["p" + part] = open(os.path.join(args.out, f"passages-{part}.jsonl"), "w")
        files["q" + part] = open(os.path.join(args.out, f"qa-{part}.jsonl"), "w")
    docs_written = 0
    in_docs = set()
    for n in names:
        part = "heldout" if split[n] else "train"
        files["p" + part].write(json.dumps({"id": n, "title": n, "text": cards[n]}) + "\n")
        qa = questions(recs[n])
        if part == "train":
            qa = rng.sample(qa, min(args.questions_per_package, len(qa)))
        else:
            qa = [qa[rng.randrange(len(qa))]]
            if docs_written < args.max_heldout_docs:
                with open(os.path.join(args.out, "docs", n + ".md"), "w") as f:
                    f.write(f"# {n}\n\n{cards[n]}\n")
                docs_written += 1
                in_docs.add(n)
        for q, a in qa:
            ctx = [n] + negatives(n, args.k - 1)
            rng.shuffle(ctx)
            files["q" + part].write(json.dumps({
                "question": q, "answers": [a], "contexts": [cards[c] for c in ctx],
                "gold": [n], "in_docs": n in in_docs}) + "\n")
            counts["q" + part] = counts.get("q" + part, 0) + 1
        counts["p" + part] = counts.get("p" + part, 0) + 1
    for f in files.values():
        f.close()
    print(f"make-default-data.py: {len(names)} packages -> {counts.get('ptrain', 0)} training "
          f"and {counts.get('pheldout', 0)} held-out passages, {counts.get('qtrain', 0)} training "
          f"and {counts.get('qheldout', 0)} held-out questions, {docs_written} cards in "
          f"{os.path.join(args.out, 'docs')}", file=sys.stderr)


if __name__ == "__main__":
    main()
