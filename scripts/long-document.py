#!/usr/bin/env python3
"""Ingests one long text document with `cocom ingest` and reports the peak memory (RSS),
the time and the progress lines, for several document sizes and for two ways of writing it:
in parts (--passages-per-batch, the default 256) and whole (one batch: a part as large as the
document, which is how every document was written before parts existed). Memory that grows
with the document when written in parts would be a regression; the whole variant shows what
the parts save. Optionally kills the ingestion in the middle (--kill) and checks that no part
of the document is visible afterwards. Not part of CI (minutes per size).

  scripts/long-document.py                      # 2 and 8 MB, parts vs whole
  scripts/long-document.py --mb 5 50 --no-whole # the issue's 50 MB document
  scripts/long-document.py --mb 4 --kill        # SIGKILL after a few parts, then check
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_text(path, megabytes, seed=7):
    rng = random.Random(seed)
    words = ["archive", "river", "ledger", "harbor", "signal", "granite", "lantern", "meadow",
             "orbit", "parcel", "quarry", "saddle", "timber", "velvet", "window", "yarrow"]
    target = int(megabytes * 1e6)
    written = 0
    with open(path, "w") as f:
        n = 0
        while written < target:
            s = "Entry %d of the long record: the %s near the %s holds %d %s. " % (
                n, rng.choice(words), rng.choice(words), rng.randrange(1000), rng.choice(words))
            f.write(s)
            written += len(s)
            n += 1
            if n % 40 == 0:
                f.write("\n\n")
                written += 2


def run_ingest(cocom, db, doc, per_batch, kill_after_lines=0):
    """Runs cocom ingest; returns (seconds, peak RSS in MB, progress lines, summary or None)."""
    args = [cocom, "--threads", str(os.cpu_count() or 2), "ingest", "--progress-lines",
            "--json", "--db", db, "--passages-per-batch", str(per_batch), doc]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = 0
    for line in p.stderr:
        if line.startswith("ingest: "):
            lines += 1
            if kill_after_lines and lines >= kill_after_lines:
                p.send_signal(signal.SIGKILL)
                break
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.monotonic() - t0
    rss_mb = usage.ru_maxrss / 1024.0  # kilobytes on Linux
    summary = None
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        summary = json.loads(out)
    return seconds, rss_mb, lines, summary


def info(cocom, db):
    out = subprocess.run([cocom, "info", "--json", "--db", db], check=True, text=True,
                         capture_output=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[2, 8], help="document sizes in MB")
    ap.add_argument("--passages-per-batch", type=int, default=256)
    ap.add_argument("--no-whole", action="store_true", help="skip the one-batch variant")
    ap.add_argument("--kill", action="store_true", help="SIGKILL after 3 parts and check")
    ap.add_argument("--cocom", default=os.path.join(ROOT, "build", "bin", "cocom"))
    a = ap.parse_args()
    print("machine: %s, %d cores, load %.2f" % (os.uname().nodename, os.cpu_count() or 0,
                                                os.getloadavg()[0]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="cocom-long-") as tmp:
        for mb in a.mb:
            doc = os.path.join(tmp, "long-%g.txt" % mb)
            make_text(doc, mb)
            variants = [("parts", a.passages_per_batch)]
            if not a.no_whole:
                variants.append(("whole", 10**6))
            for name, per in variants:
                db = os.path.join(tmp, "db-%g-%s" % (mb, name))
                if a.kill and name == "parts":
                    _, _, lines, _ = run_ingest(a.cocom, db, doc, per, kill_after_lines=3)
                    i = info(a.cocom, db)
                    ok = i["documents"] == 0 and i["passages"] == 0
                    print("%g MB: killed after %d progress lines -> %d documents, %d passages "
                          "(%s)" % (mb, lines, i["documents"], i["passages"],
                                    "nothing visible: ok" if ok else "PARTIAL DOCUMENT"))
                    if not ok:
                        return 1
                secs, rss, lines, s = run_ingest(a.cocom, db, doc, per)
                if s is None:
                    print("%g MB %s: ingestion failed" % (mb, name))
                    return 1
                rows.append((mb, name, s["passages"], secs, rss, lines))
                print("%6g MB %-5s %7d passages %8.1f s %7.1f passages/s  peak RSS %7.1f MB  "
                      "%d progress lines" % (mb, name, s["passages"], secs,
                                             s["passages"] / secs, rss, lines), flush=True)
    parts = [r for r in rows if r[1] == "parts"]
    if len(parts) >= 2:
        (m0, _, p0, _, r0, _), (m1, _, p1, _, r1, _) = parts[0], parts[-1]
        print("parts: %gx the document -> %.2fx the peak RSS" % (m1 / m0, r1 / r0))
    for mb in a.mb:
        pr = [r for r in rows if r[0] == mb]
        if len(pr) == 2:
            print("%g MB: whole / parts peak RSS = %.2f" % (mb, pr[1][4] / pr[0][4]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
