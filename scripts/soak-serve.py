#!/usr/bin/python3
"""Soak test of `cocom serve` (not CI): N clients ask questions for a while, streaming and
not, while documents are ingested and removed beside them. Passes when every request either
succeeded or was a deliberate 429, the server's memory stayed flat (RSS of the last quarter
within --rss-growth of the second quarter), and the store is consistent afterwards (the server
stops cleanly on SIGTERM, `cocom info` opens the store, its document count is what the jobs
left).

    /usr/bin/python3 scripts/soak-serve.py [--minutes 10] [--clients 8] [--cocom build/bin/cocom]
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cocom", default=os.path.join(ROOT, "build/bin/cocom"))
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-queue", type=int, default=6, help="below --clients, so 429s happen")
    ap.add_argument("--rss-growth", type=float, default=0.10)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    work = a.workdir or tempfile.mkdtemp(prefix="cocom-soak-")
    store = os.path.join(work, "store")
    shutil.rmtree(store, ignore_errors=True)
    docs = os.path.join(ROOT, "examples", "docs")
    subprocess.run([a.cocom, "ingest", "--db", store, docs], check=True, stdout=subprocess.DEVNULL)
    log = open(os.path.join(work, "serve.log"), "w")
    srv = subprocess.Popen([a.cocom, "serve", "--db", f"soak={store}", "--port", "0",
                            "--max-queue", str(a.max_queue)], stdout=subprocess.PIPE,
                           stderr=log, text=True)
    url = None
    for line in srv.stdout:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            url = m.group(1)
            break
    if not url:
        print("soak: the server did not start; see", log.name)
        return 1
    threading.Thread(target=lambda: [None for _ in srv.stdout], daemon=True).start()

    stop_at = time.time() + a.minutes * 60
    counts = {"ok": 0, "429": 0, "error": 0}
    errors = []
    lock = threading.Lock()
    questions = [
        "What does the GPL guarantee?", "What is RocksDB?", "What is COCOM?",
        "How are passages compressed?", "What is a context embedding?",
    ]

    def record(kind, detail=None):
        with lock:
            counts[kind] += 1
            if detail and len(errors) < 20:
                errors.append(detail)

    def client(i):
        rng = random.Random(i)
        s = requests.Session()
        while time.time() < stop_at:
            body = {"model": "soak", "max_tokens": rng.choice([8, 16, 32]),
                    "messages": [{"role": "user", "content": rng.choice(questions)}],
                    "stream": rng.random() < 0.5, "compress": rng.random() < 0.8}
            try:
                r = s.post(url + "/v1/chat/completions", json=body, timeout=300,
                           stream=body["stream"])
                if r.status_code == 429:
                    record("429")
                    time.sleep(float(r.headers.get("Retry-After", "1")) * rng.random())
                    continue
                if r.status_code != 200:
                    record("error", f"{r.status_code} {r.text[:200]}")
                    continue
                if body["stream"]:
                    done = any(line == b"data: [DONE]" for line in r.iter_lines())
                    record("ok" if done else "error", None if done else "stream without [DONE]")
                else:
                    r.json()["choices"][0]["message"]["content"]
                    record("ok")
            except Exception as e:  # noqa: BLE001 - every failure is counted
                record("error", repr(e))

    def ingester():
        n = 0
        s = requests.Session()
        while time.time() < stop_at:
            doc = {"id": f"soak-{n % 5}", "title": f"Soak {n}",
                   "text": f"Soak document {n}. " + "RocksDB keeps the context embeddings. " * 20}
            try:
                r = s.post(url + "/v1/collections/soak/documents", json={"documents": [doc]}, timeout=60)
                if r.status_code == 202:
                    job = r.json()["id"]
                    while True:
                        j = s.get(f"{url}/v1/jobs/{job}", timeout=30).json()
                        if j["status"] not in ("queued", "running"):
                            break
                        time.sleep(0.2)
                    record("ok" if j["status"] == "succeeded" else "error",
                           None if j["status"] == "succeeded" else json.dumps(j)[:200])
                elif r.status_code == 429:
                    record("429")
                else:
                    record("error", f"ingest {r.status_code} {r.text[:200]}")
            except Exception as e:  # noqa: BLE001
                record("error", repr(e))
            n += 1
            time.sleep(2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    threads.append(threading.Thread(target=ingester))
    for t in threads:
        t.start()
    samples = []
    while time.time() < stop_at:
        samples.append(rss_kib(srv.pid))
        time.sleep(5)
    for t in threads:
        t.join()
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait(timeout=60)

    info = json.loads(subprocess.run([a.cocom, "info", "--db", store, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    q = max(1, len(samples) // 4)
    second, last = samples[q:2 * q], samples[-q:]
    growth = (sum(last) / len(last)) / max(1, sum(second) / len(second)) - 1 if second else 0
    print(f"soak: {a.minutes} min, {a.clients} clients: {counts['ok']} ok, {counts['429']} deliberate 429, "
          f"{counts['error']} errors; RSS {samples[0] // 1024} -> {samples[-1] // 1024} MiB "
          f"(last quarter vs second: {growth:+.1%}); exit {rc}; store: {info.get('documents')} documents, "
          f"{info.get('passages')} passages")
    for e in errors:
        print("  error:", e)
    ok = counts["error"] == 0 and rc == 0 and growth <= a.rss_growth and counts["ok"] > 0
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
