#!/usr/bin/python3
"""End-to-end tests of `cocom serve` (docs/server.md), driven with real clients.

    /usr/bin/python3 tests/serve/test_serve.py --cocom build/bin/cocom --workdir /tmp/cocom-serve-e2e [--node]

The harness writes a few small documents, builds two stores with `cocom ingest` (a: lighthouses
and harbours, b: beekeeping), writes an api-keys file (sk-test-a -> a, sk-test-b -> b,
sk-test-admin -> *; the server refuses keys shorter than 8 characters),
starts `cocom serve --port 0` as a subprocess and drives it with `requests`, `curl` and raw
sockets; with --node also with the official `openai` npm client (openai_client_test.mjs) and,
when present, the browser test (browser_test.mjs). It then stops servers with SIGTERM while an
answer and while an ingestion job are running and checks the exit status and the store.

Answers of the tiny default model are often wrong, so their content is never asserted: only
structure, statuses, store counts and determinism (a greedy streamed answer equals the same
non-streamed one).

Prints one PASS/FAIL/SKIP line per check and exits 1 when any check failed. `--only REGEX` runs
just the checks whose names match (set-up always runs), e.g. --only 'SIGTERM|429'. Only needs Debian's
python3 with python3-requests, curl, and node (for --node). Server logs are kept in
WORKDIR/logs and printed when a check fails.
"""

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

try:
    import requests
except ImportError:  # pragma: no cover
    sys.exit("test_serve.py needs python3-requests (apt-get install python3-requests); "
             "run it with /usr/bin/python3")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

KEY_A, KEY_B, KEY_ADMIN = "sk-test-a", "sk-test-b", "sk-test-admin"  # the server wants >= 8 chars
NO_KEY = None
MAX_QUEUE = 4
MAX_BATCH = 2
MAX_BODY_MB = 1

# A question that shares words with store a (the default model has no dense retriever, so
# retrieval is BM25 and a question needs a word the store has).
QUESTION_A = "How does the lighthouse keeper light the lamp?"
QUESTION_B = "When do beekeepers harvest honey from the hive?"

T = 60  # default per-request timeout (seconds)

# ----------------------------------------------------------------------------------------------
# Documents

DOCS_A = {
    "lighthouse.md": """# The lighthouse keeper

The lighthouse on the northern cape was built of granite blocks carried by boat from the
quarry across the bay. Its tower is thirty metres tall and painted with red and white bands so
that sailors can recognise it by day. At night the keeper climbs one hundred and twelve steps
to the lantern room. He trims the wick, fills the reservoir with paraffin and lights the lamp
half an hour before sunset. A clockwork mechanism, wound by hand every four hours, turns the
great glass lens so that the beam sweeps the sea once every ten seconds. That rhythm is the
signature of this lighthouse: a ship's navigator who counts the flashes and checks the chart
knows exactly which cape lies ahead.

The keeper writes in the log book every evening: the time the lamp was lit, the state of the
weather, the ships that passed and any wreckage seen on the rocks. The lens itself is a
Fresnel lens, made of rings of prisms that bend the light of a small flame into a single
bright beam visible twenty nautical miles away. Cleaning the prisms is the first task of
every morning, because salt spray and soot dim the beam. In winter storms the keeper may stay
awake all night, watching the flame and winding the clockwork, since a dark lighthouse on a
stormy night can cost a ship and her crew.
""",
    "fog-signals.md": """# Fog signals

When fog rolls in, the beam of a lighthouse is of little use, and the station relies on sound.
Early fog signals were bells struck by hand or by a falling weight. Later stations installed
a diaphone, a horn driven by compressed air that gives a deep two-tone groan, audible several
miles away. Each station sounds its own pattern, for example two blasts every thirty seconds,
and the pattern is printed on the charts beside the light's flash pattern.

Running the fog signal is hard work. The keeper must start the engine that drives the air
compressor, keep the boiler or the diesel fuelled and watch the pressure gauge for as long as
the fog lasts, sometimes for two or three days. Sound travels strangely over water: there can
be silent zones close to the station where the horn cannot be heard at all, so navigators are
warned never to judge the distance to the shore from the loudness of a fog signal. Modern
stations use electric emitters controlled by a visibility sensor that measures the fog and
switches the signal on and off automatically.
""",
    "harbour-pilots.md": """# Harbour pilots

A harbour pilot is a mariner who knows one port so well that he is allowed, and often required,
to steer large ships through its channels. The pilot boat meets an incoming ship outside the
breakwater; the pilot climbs a rope ladder hung over the ship's side, a dangerous moment in a
heavy swell, and then takes charge of the navigation while the captain remains responsible for
the vessel. The pilot knows the depth of every channel, the sandbanks that move after each
winter, the strength of the tide at each hour and where the current sets across the harbour
mouth.

Pilots work with tugboats to turn ships in the basin and push them gently against the quay.
They talk to the harbour master by radio, who decides the order in which ships enter and
leave. A pilot's training lasts years: first as an officer on ships, then as an apprentice who
accompanies experienced pilots on hundreds of trips, and finally an examination in which the
candidate must draw the harbour chart from memory, with every buoy, beacon and lighthouse.
""",
}

DOCS_B = {
    "beekeeping.md": """# Keeping bees

A beehive holds one colony: a single queen, tens of thousands of worker bees and, in summer, a
few hundred drones. The beekeeper houses the colony in wooden boxes stacked on top of each
other; each box holds removable frames on which the bees build their wax comb. The lowest box
is the brood chamber, where the queen lays eggs, and the boxes above it, the supers, are where
the workers store honey. A queen excluder, a grid whose gaps are too small for the queen,
keeps brood out of the supers.

Inspections take place every week or two in the warm months. The beekeeper wears a veil and
gloves, calms the bees with cool smoke from a smoker and lifts out the frames one by one,
looking for eggs, healthy larvae, capped brood, pollen and nectar stores. Signs of disease,
such as sunken cappings or a sour smell, must be reported in many countries. Varroa mites are
the most serious pest of honey bees, and most beekeepers count the mites falling on a sticky
board under the hive and treat the colony in late summer when the count is high.
""",
    "honey-harvest.md": """# Harvesting honey

Honey is ready to harvest when the bees have sealed most of the cells of a frame with a thin
cap of wax, which shows that the nectar has been dried to less than a fifth water. Beekeepers
usually harvest in late summer, after the main flow of nectar from clover, lime trees or
heather, and they always leave enough honey in the hive for the colony to survive the winter.

To harvest, the beekeeper places a clearer board under the supers the day before, so that the
bees leave them, then carries the full supers to a clean room. The wax caps are sliced off
each frame with a warm uncapping knife, and the frames are spun in an extractor, a drum that
throws the honey out of the comb by centrifugal force. The honey runs through a sieve into a
settling tank, rests for a few days while air bubbles rise, and is poured into jars. The empty
combs go back to the hives, where the bees clean them and fill them again. Heather honey is so
thick that it has to be pressed out of the comb instead of spun.
""",
    "queen-rearing.txt": """Rearing queens

A colony that loses its queen can raise a new one from a young worker larva: the workers
enlarge the cell and feed the larva only royal jelly, and sixteen days after the egg was laid a
virgin queen emerges. Beekeepers use this ability to rear queens on purpose. In the grafting
method, tiny larvae are moved with a fine needle into plastic queen cups fixed to a bar, and
the bar is given to a strong queenless colony, the cell builder, which draws out the queen
cells.

Ten days later the ripe queen cells are placed in small mating hives called nucs. The virgin
queen flies out on warm afternoons to mate with drones from other colonies high in the air,
returns, and starts to lay eggs a few days later. A good beekeeper marks each mated queen with
a dot of paint on her thorax, in a colour that shows the year of her birth, and records her
temper, the amount of honey her colony stores and how well it resists disease, choosing the
best colonies as the mothers of the next generation.
""",
}


def filler_document(i):
    """A distinct text of about three passages, for the long ingestion job."""
    words = ["anchor", "buoy", "channel", "harbour", "tide", "keeper", "signal", "beacon",
             "rope", "compass", "chart", "current", "lantern", "granite", "pier", "dock"]
    sentences = []
    for j in range(24):
        w = [words[(i * 7 + j * 3 + t) % len(words)] for t in range(4)]
        sentences.append(f"Log {i} entry {j}: the {w[0]} near the {w[1]} was checked against "
                         f"the {w[2]} and the {w[3]} at hour {(i + j) % 24}.")
    return " ".join(sentences)


# ----------------------------------------------------------------------------------------------
# The tiny test runner

class Skip(Exception):
    pass


class Runner:
    def __init__(self, only=None):
        self.results = []  # (name, status, detail)
        self.only = re.compile(only, re.I) if only else None

    def run(self, name, fn, *args, essential=False, **kwargs):
        """Runs one check; with --only, a check whose name does not match is left out unless
        it is essential (set-up)."""
        if self.only and not essential and not self.only.search(name):
            return None
        t0 = time.time()
        try:
            value = fn(*args, **kwargs)
        except Skip as e:
            self._record(name, "SKIP", str(e), t0)
            return None
        except AssertionError as e:
            self._record(name, "FAIL", str(e), t0)
            return None
        except Exception as e:  # an unexpected exception is a failure of that check
            detail = f"{type(e).__name__}: {e}\n" + traceback.format_exc(limit=4)
            self._record(name, "FAIL", detail, t0)
            return None
        self._record(name, "PASS", "", t0)
        return value if value is not None else True

    def _record(self, name, status, detail, t0):
        dt = time.time() - t0
        line = f"{status} {name} ({dt:.1f}s)"
        if detail:
            line += ": " + detail.strip().replace("\n", "\n    ")
        print(line, flush=True)
        self.results.append((name, status, detail))

    def failed(self):
        return [r for r in self.results if r[1] == "FAIL"]


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def short(x, n=400):
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[:n] + f"...({len(s)} chars)"


# ----------------------------------------------------------------------------------------------
# The server process

LISTEN_RE = re.compile(r"cocom serve: listening on (http://[^\s]+)")


class Server:
    count = 0

    def __init__(self, cocom, workdir, args, name=None):
        Server.count += 1
        self.name = name or f"serve-{Server.count}"
        self.cmd = [cocom, "serve"] + args
        self.logdir = os.path.join(workdir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.stdout_path = os.path.join(self.logdir, self.name + ".stdout")
        self.stderr_path = os.path.join(self.logdir, self.name + ".stderr")
        self.proc = None
        self.url = None
        self.stdout_lines = []
        self._listening = threading.Event()
        self._reader = None

    def start(self, timeout=120):
        """Starts the process and returns once the listening line was printed (or it exited)."""
        print(f"  $ {' '.join(self.cmd)}", flush=True)
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, start_new_session=True)
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._listening.wait(0.1):
                break
            if self.proc.poll() is not None:
                self._reader.join(2)
                break
        return self.url

    def _read_stdout(self):
        with open(self.stdout_path, "wb") as f:
            for raw in iter(self.proc.stdout.readline, b""):
                f.write(raw)
                f.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.stdout_lines.append(line)
                m = LISTEN_RE.search(line)
                if m and not self.url:
                    self.url = m.group(1).rstrip("/")
                    self._listening.set()

    def wait_health(self, timeout=60):
        expect(self.url, f"{self.name}: no 'cocom serve: listening on http://HOST:PORT' line on "
                         f"stdout (exit status {self.proc.poll()})")
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}")
            try:
                r = requests.get(self.url + "/health", timeout=5)
                if r.status_code == 200:
                    return r.json()
                last = f"{r.status_code} {short(r.text)}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: GET /health not 200 within {timeout}s: {last}")

    @property
    def hostport(self):
        u = urllib.parse.urlsplit(self.url)
        return u.hostname, u.port

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit status, or None when still running after timeout seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15):
        """SIGTERM; returns (exit status or None, seconds)."""
        t0 = time.time()
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        return rc, time.time() - t0

    def kill(self):
        if self.running():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait(10)
        if self._reader:
            self._reader.join(2)
        if getattr(self, "_err", None):
            self._err.close()

    def dump(self, tail=60):
        for path in (self.stdout_path, self.stderr_path):
            print(f"----- {path} (last {tail} lines) -----")
            try:
                with open(path, "r", errors="replace") as f:
                    lines = f.readlines()
                sys.stdout.write("".join(lines[-tail:]))
            except OSError as e:
                print(f"(unreadable: {e})")
        print("-----", flush=True)


# ----------------------------------------------------------------------------------------------
# HTTP helpers

class Api:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def req(self, method, path, key=KEY_A, json_body=None, data=None, headers=None, timeout=T,
            stream=False, files=None):
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        kwargs = dict(headers=h, timeout=(10, timeout), stream=stream)
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        elif data is not None:
            kwargs["data"] = data
        if files is not None:
            kwargs["files"] = files
        # A fresh connection per streamed request, so that closing it never poisons the pool.
        sender = requests if stream else self.session
        return sender.request(method, self.url + path, **kwargs)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, json_body=body, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)

    def chat(self, body, key=KEY_A, **kw):
        return self.post("/v1/chat/completions", body, key=key, **kw)


def rjson(r):
    try:
        return r.json()
    except ValueError:
        raise AssertionError(f"{r.request.method} {r.request.path_url}: body is not JSON "
                             f"(status {r.status_code}): {short(r.text)}")


def expect_status(r, status):
    expect(r.status_code == status,
           f"{r.request.method} {r.request.path_url}: expected {status}, got {r.status_code}: "
           f"{short(r.text)}")


def check_error_body(status, headers, body_text, want_status, want_type, want_param=None,
                     what=""):
    """Checks an OpenAI error object; want_param: None = not checked, else the name (a nested
    name like messages[0].role or messages.0.role also matches 'messages')."""
    expect(status == want_status, f"{what}: expected {want_status}, got {status}: "
                                  f"{short(body_text)}")
    ctype = headers.get("Content-Type", headers.get("content-type", ""))
    expect("application/json" in ctype, f"{what}: error Content-Type is {ctype!r}")
    try:
        body = json.loads(body_text)
    except ValueError:
        raise AssertionError(f"{what}: error body is not JSON: {short(body_text)}")
    expect(isinstance(body, dict) and isinstance(body.get("error"), dict),
           f"{what}: no error object: {short(body_text)}")
    err = body["error"]
    for field in ("message", "type", "param", "code"):
        expect(field in err, f"{what}: error object lacks {field!r}: {short(body_text)}")
    expect(isinstance(err["message"], str) and err["message"],
           f"{what}: error.message must be a non-empty string: {short(body_text)}")
    expect(err["type"] == want_type, f"{what}: error.type {err['type']!r} != {want_type!r}")
    expect(err["param"] is None or isinstance(err["param"], str),
           f"{what}: error.param must be a string or null: {err['param']!r}")
    expect(err["code"] is None or isinstance(err["code"], str),
           f"{what}: error.code must be a string or null: {err['code']!r}")
    if want_param is not None:
        p = err["param"] or ""
        ok = p == want_param or p.startswith(want_param + "[") or p.startswith(want_param + ".")
        expect(ok, f"{what}: error.param {err['param']!r} does not name {want_param!r} "
                   f"(message: {err['message']!r})")
    return err


def expect_error(r, status, etype, param=None):
    what = f"{r.request.method} {r.request.path_url}"
    return check_error_body(r.status_code, r.headers, r.text, status, etype, param, what)


# --- Server-Sent Events

def sse_iter_bytes(chunks):
    """Yields the data of each SSE event from an iterator of byte chunks."""
    buf = b""
    data_lines = []
    for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line == b"":
                if data_lines:
                    yield "\n".join(data_lines)
                    data_lines = []
                continue
            text = line.decode("utf-8")
            if text.startswith(":"):
                continue
            field, _, value = text.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data_lines.append(value)
    if data_lines:  # an event not closed by a blank line
        yield "\n".join(data_lines)


def read_stream(r):
    """All the events of a streamed response: list of (raw data, parsed json or None)."""
    events = []
    for data in sse_iter_bytes(r.iter_content(chunk_size=64)):
        if data == "[DONE]":
            events.append((data, None))
        else:
            try:
                events.append((data, json.loads(data)))
            except ValueError:
                raise AssertionError(f"SSE data is neither [DONE] nor JSON: {short(data)}")
    return events


def check_chat_stream(events, model, first_chunk_sources=True):
    """Checks the chunk sequence of docs/server.md; returns (content, first, last)."""
    expect(events, "empty stream")
    expect(events[-1][0] == "[DONE]", f"the stream does not end with data: [DONE] "
                                      f"(last: {short(events[-1][0])})")
    expect(sum(1 for d, _ in events if d == "[DONE]") == 1, "more than one [DONE]")
    chunks = [j for d, j in events[:-1]]
    expect(len(chunks) >= 2, f"expected at least a first and a last chunk, got {len(chunks)}")
    for c in chunks:
        expect("error" not in c, f"error event in the stream: {short(json.dumps(c))}")
        expect(c.get("object") == "chat.completion.chunk", f"chunk object: {c.get('object')!r}")
        expect(c.get("id") == chunks[0].get("id"), "chunks with different ids")
        expect(isinstance(c.get("id"), str) and c["id"], "chunk without id")
        expect(c.get("model") == model, f"chunk model {c.get('model')!r} != {model!r}")
        expect(isinstance(c.get("choices"), list) and len(c["choices"]) == 1,
               f"chunk choices: {short(json.dumps(c))}")
    first, last = chunks[0], chunks[-1]
    d0 = first["choices"][0].get("delta", {})
    expect(d0.get("role") == "assistant", f"first delta has no role assistant: {d0}")
    expect(d0.get("content", "") == "", f"first delta content should be empty: {d0}")
    if first_chunk_sources:
        expect(isinstance(first.get("sources"), list), "first chunk has no sources array")
        check_sources(first["sources"])
    content = ""
    for c in chunks[1:-1]:
        ch = c["choices"][0]
        expect(ch.get("finish_reason") in (None,), f"content chunk with finish_reason: {ch}")
        delta = ch.get("delta", {})
        expect(isinstance(delta.get("content"), str), f"content chunk without content: {ch}")
        content += delta["content"]
    lc = last["choices"][0]
    expect(lc.get("delta") == {}, f"last delta should be {{}}: {lc.get('delta')!r}")
    expect(lc.get("finish_reason") in ("stop", "length"), f"last finish_reason: {lc}")
    check_usage(last.get("usage"))
    expect(isinstance(last.get("compressed"), bool), "last chunk has no compressed bool")
    expect(isinstance(last.get("timings"), dict), "last chunk has no timings object")
    return content, first, last


def check_usage(u):
    expect(isinstance(u, dict), f"usage: {u!r}")
    for f in ("prompt_tokens", "completion_tokens", "total_tokens"):
        expect(isinstance(u.get(f), int) and u[f] >= 0, f"usage.{f}: {u!r}")
    expect(u["prompt_tokens"] > 0, f"usage.prompt_tokens must be > 0: {u}")
    expect(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"],
           f"usage.total_tokens != prompt + completion: {u}")


SOURCE_FIELDS = {"number": int, "passage_id": int, "document_id": str, "title": str,
                 "source": str, "index": int, "excerpt": str, "score": (int, float)}


def check_sources(sources, k=None):
    expect(isinstance(sources, list), f"sources: {sources!r}")
    expect(len(sources) >= 1, "sources is empty (the question shares words with the store)")
    if k is not None:
        expect(len(sources) <= k, f"{len(sources)} sources for k={k}")
    for i, s in enumerate(sources):
        for f, ty in SOURCE_FIELDS.items():
            expect(f in s and isinstance(s[f], ty) and not isinstance(s[f], bool),
                   f"sources[{i}].{f} missing or ill-typed: {short(json.dumps(s))}")
        expect(s["number"] == i + 1, f"sources[{i}].number = {s['number']}")


def check_completion(body, model):
    expect(isinstance(body.get("id"), str) and body["id"].startswith("chatcmpl-"),
           f"id: {body.get('id')!r}")
    expect(body.get("object") == "chat.completion", f"object: {body.get('object')!r}")
    expect(isinstance(body.get("created"), int), f"created: {body.get('created')!r}")
    expect(body.get("model") == model, f"model: {body.get('model')!r}")
    ch = body.get("choices")
    expect(isinstance(ch, list) and len(ch) == 1, f"choices: {short(json.dumps(ch))}")
    expect(ch[0].get("index") == 0, "choices[0].index != 0")
    msg = ch[0].get("message", {})
    expect(msg.get("role") == "assistant", f"message.role: {msg.get('role')!r}")
    expect(isinstance(msg.get("content"), str), f"message.content: {msg.get('content')!r}")
    expect(ch[0].get("finish_reason") in ("stop", "length"),
           f"finish_reason: {ch[0].get('finish_reason')!r}")
    check_usage(body.get("usage"))
    check_sources(body.get("sources"))
    expect(isinstance(body.get("compressed"), bool), "compressed is not a bool")
    t = body.get("timings")
    expect(isinstance(t, dict), "timings is not an object")
    for f in ("retrieve_ms", "prefill_ms", "decode_ms", "total_ms"):
        expect(isinstance(t.get(f), (int, float)), f"timings.{f}: {t.get(f)!r}")
    return msg["content"], ch[0]["finish_reason"]


# --- Raw sockets (the body-limit and disconnect checks need control over the connection)

def raw_request(host, port, method, path, headers, body=b"", timeout=30, early_probe=0.5):
    """Sends a request and reads the response; returns (status, headers dict, body bytes).
    The body is sent after a short probe for an early answer (a server may reject a body
    that is too large from its Content-Length alone and close the connection)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        head += f"Content-Length: {len(body)}\r\n"
        for k, v in headers.items():
            head += f"{k}: {v}\r\n"
        s.sendall((head + "\r\n").encode())
        answered_early = bool(select.select([s], [], [], early_probe)[0]) if body else False
        if not answered_early:
            view = memoryview(body)
            try:
                for off in range(0, len(body), 65536):
                    s.sendall(view[off:off + 65536])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed: read what it said
        data = b""
        try:
            while True:
                part = s.recv(65536)
                if not part:
                    break
                data += part
                status, hdrs, rest = parse_head(data)
                if status is not None:
                    n = hdrs.get("content-length")
                    if n is not None and len(rest) >= int(n):
                        break
        except ConnectionResetError:
            if not data:
                raise
        status, hdrs, rest = parse_head(data)
        expect(status is not None, f"no HTTP response: {short(data)}")
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            rest = dechunk(rest)
        return status, hdrs, rest
    finally:
        s.close()


def parse_head(data):
    if b"\r\n\r\n" not in data:
        return None, {}, b""
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def dechunk(b):
    out = b""
    while b:
        size_line, _, b = b.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += b[:size]
        b = b[size + 2:]
    return out


def open_stream_and_drop(host, port, key, body, reset=False, timeout=30):
    """Starts a streamed chat, reads until the first SSE event, then closes the socket (with
    an RST when reset). Returns the bytes read."""
    payload = json.dumps(body).encode()
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                   f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\n\r\n"
                   ).encode() + payload)
        data = b""
        deadline = time.time() + timeout
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0 and re.search(rb"data: [^\n]*\r?\n\r?\n", data[head_end + 4:]):
                break
            expect(time.time() < deadline, "no first SSE event in time")
            part = s.recv(4096)
            expect(part, f"connection closed before the first event: {short(data)}")
            data += part
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return data
    finally:
        s.close()


# --- other helpers

def tcp_counters():
    """A few Linux TcpExt counters (listen queue overflows, SYN cookies), for diagnostics."""
    want = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesFailed")
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
            return {k: d[k] for k in want if k in d}
    return {}


def run_cmd(cmd, timeout=300, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, **kw)


def cocom_info(cocom, db):
    p = run_cmd([cocom, "info", "--db", db, "--json"], timeout=120)
    expect(p.returncode == 0, f"cocom info --db {db} --json failed ({p.returncode}): "
                              f"{short(p.stderr.decode(errors='replace'))}")
    return json.loads(p.stdout)


def chat_body(model="a", question=QUESTION_A, max_tokens=12, **extra):
    b = {"model": model, "messages": [{"role": "user", "content": question}],
         "max_tokens": max_tokens}
    b.update(extra)
    return b


def poll_job(api, job_id, key=KEY_A, timeout=120, until=("succeeded", "failed", "cancelled")):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        r = api.get(f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}", key=key)
        expect_status(r, 200)
        last = rjson(r)
        if last.get("status") in until:
            return last
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not in {until} after {timeout}s: {short(json.dumps(last))}")


def model_counts(api, name, key=KEY_ADMIN):
    r = api.get("/v1/models", key=key)
    expect_status(r, 200)
    for m in rjson(r)["data"]:
        if m["id"] == name:
            return m["documents"], m["passages"]
    raise AssertionError(f"{name} not in /v1/models")


def search_ids(api, model, query, key=KEY_A, k=20, mode="bm25", **extra):
    body = {"model": model, "query": query, "k": k, "mode": mode}
    body.update(extra)
    r = api.post("/v1/search", body, key=key)
    expect_status(r, 200)
    return [h["document_id"] for h in rjson(r)["data"]]


# ----------------------------------------------------------------------------------------------
# The suite

class Suite:
    def __init__(self, args):
        self.args = args
        self.cocom = os.path.abspath(args.cocom)
        self.work = os.path.abspath(args.workdir)
        self.r = Runner(args.only)
        self.servers = []
        self.server = None
        self.api = None
        self.doc_ids_a = set()

    # --- setup

    def write_docs(self):
        for sub in ("docs_a", "docs_b", "a", "b", "upload", "logs"):
            shutil.rmtree(os.path.join(self.work, sub), ignore_errors=True)
        self.files = {}
        for store, docs in (("a", DOCS_A), ("b", DOCS_B)):
            d = os.path.join(self.work, "docs_" + store)
            os.makedirs(d)
            self.files[store] = []
            for name, text in docs.items():
                p = os.path.join(d, name)
                with open(p, "w") as f:
                    f.write(text)
                self.files[store].append(p)
        self.keys_path = os.path.join(self.work, "keys.json")
        with open(self.keys_path, "w") as f:
            json.dump({"keys": {KEY_A: ["a"], KEY_B: ["b"], KEY_ADMIN: ["*"]}}, f)
        os.makedirs(os.path.join(self.work, "upload"))

    def ingest_store(self, store):
        db = os.path.join(self.work, store)
        p = run_cmd([self.cocom, "ingest", "--db", db] + self.files[store], timeout=600)
        expect(p.returncode == 0, f"cocom ingest failed ({p.returncode}): "
                                  f"{p.stderr.decode(errors='replace')}")
        info = cocom_info(self.cocom, db)
        expect(info["documents"] == len(self.files[store]),
               f"{info['documents']} documents after ingesting {len(self.files[store])}")
        expect(info["passages"] >= len(self.files[store]), f"passages: {info['passages']}")
        return info

    def serve_args(self, keys=True, extra=()):
        a = ["--db", "a=" + os.path.join(self.work, "a"), "--db", "b=" + os.path.join(self.work, "b"),
             "--port", "0", "--max-queue", str(MAX_QUEUE), "--max-batch", str(MAX_BATCH),
             "--max-body-mb", str(MAX_BODY_MB)]
        if keys:
            a += ["--api-keys", self.keys_path]
        return a + list(extra)

    def start_server(self, keys=True, extra=(), name=None):
        s = Server(self.cocom, self.work, self.serve_args(keys, extra), name=name)
        self.servers.append(s)
        s.start()
        s.wait_health()
        return s

    def use(self, server):
        self.server = server
        self.api = Api(server.url)

    # --- main

    def main(self):
        r = self.r
        try:
            self.run_all()
        finally:
            for s in self.servers:
                s.kill()
        failed = r.failed()
        if failed:
            for s in self.servers:
                s.dump()
        n_pass = sum(1 for x in r.results if x[1] == "PASS")
        n_skip = sum(1 for x in r.results if x[1] == "SKIP")
        print(f"\n{n_pass} passed, {len(failed)} failed, {n_skip} skipped")
        for name, _, _ in failed:
            print(f"  FAILED: {name}")
        return 1 if failed else 0

    def run_all(self):
        r = self.r
        os.makedirs(self.work, exist_ok=True)
        expect(os.access(self.cocom, os.X_OK), f"{self.cocom} is not executable")
        self.write_docs()
        print(f"workdir {self.work}", flush=True)
        if not r.run("ingest store a (cocom ingest)", self.ingest_store, "a", essential=True) or \
           not r.run("ingest store b (cocom ingest)", self.ingest_store, "b", essential=True):
            return
        self.info_a0 = cocom_info(self.cocom, os.path.join(self.work, "a"))

        s1 = r.run("start server (--api-keys, --port 0, --max-queue 4)", self.start_server,
                   essential=True)
        if not s1:
            return
        self.use(s1)
        r.run("startup lines: one per collection", self.t_startup_lines)
        r.run("GET /health", self.t_health)
        r.run("GET / without a key", self.t_root)
        self.auth_checks()
        r.run("/v1/models per tenant", self.t_models)
        self.chat_error_checks()
        self.search_error_checks()
        self.ingest_error_checks()
        self.route_error_checks()
        r.run("413 body over --max-body-mb (chat, raw socket)", self.t_413_chat)
        r.run("413 body over --max-body-mb (ingest) leaves the store unchanged", self.t_413_ingest)
        r.run("curl: 413 body over --max-body-mb", self.t_curl_413)

        r.run("chat non-stream: structure", self.t_chat_plain)
        r.run("chat content parts and a system message", self.t_chat_parts)
        r.run("chat max_completion_tokens, stop, seed and sampling", self.t_chat_options)
        r.run("chat stream: SSE chunks; greedy stream == non-stream", self.t_chat_stream)
        r.run("chat tenant b (key-b)", self.t_chat_b)
        r.run("chat compress false: compressed false, more prompt tokens", self.t_compress_false)
        r.run("chat k and search_mode", self.t_chat_k)
        r.run("concurrent greedy requests (batched) == single answer", self.t_batched)
        r.run("curl: streamed chat ends with data: [DONE]", self.t_curl_stream)
        r.run("curl: 401 error body", self.t_curl_401)

        r.run("search bm25 with k", self.t_search)
        r.run("search filter document_id", self.t_search_filter_doc)
        r.run("search filter source_prefix, 'collection' for 'model'", self.t_search_filter_prefix)
        r.run("tenants: a never sees b's documents", self.t_isolation)

        r.run("ingest JSON -> job succeeded -> searchable -> DELETE -> gone -> 404",
              self.t_ingest_json)
        r.run("ingest and DELETE an id that needs URL-encoding", self.t_ingest_encoded_id)
        r.run("ingest multipart .md upload -> job succeeded", self.t_ingest_multipart)
        r.run("curl: multipart upload -> 202 job", self.t_curl_multipart)
        r.run("failed ingest requests leave the store unchanged", self.t_failed_unchanged)
        r.run("job of another tenant is not readable", self.t_job_other_tenant)

        r.run("client disconnects mid-stream: server healthy, queue drains", self.t_disconnect)
        r.run("429 when the answer queue is full (Retry-After)", self.t_429)
        r.run("429 burst: every request got an HTTP answer (no reset)", self.t_burst_answered)
        r.run("/metrics after traffic", self.t_metrics)
        if self.args.node:
            r.run("node: openai_client_test.mjs", self.t_node, "openai_client_test.mjs")
            r.run("node: browser_test.mjs", self.t_node, "browser_test.mjs")
        r.run("server still healthy after the suite", self.t_health)
        r.run("SIGTERM during answers: streams end, exit 0 within 15 s", self.t_sigterm_answer)

        r.run("no --api-keys and a non-loopback --host: refused", self.t_open_nonloopback)
        r.run("SIGTERM during an ingestion job: exit 0, consistent store, restart works",
              self.t_sigterm_ingest)

    def skip(self, why):
        raise Skip(why)

    # --- basics

    def t_startup_lines(self):
        out = "\n".join(self.server.stdout_lines)
        for name in ("a", "b"):
            expect(re.search(rf"collection {name}: .*\(\d+ documents, \d+ passages", out),
                   f"no 'collection {name}: DIR (N documents, M passages, ...)' line in:\n{out}")

    def t_health(self):
        r = self.api.get("/health", key=NO_KEY)
        expect_status(r, 200)
        h = rjson(r)
        expect(h.get("status") == "ok", f"status: {h}")
        expect(h.get("collections") == 2, f"collections: {h}")
        q = h.get("queue", {})
        for f in ("waiting", "active", "max"):
            expect(isinstance(q.get(f), int), f"queue.{f}: {h}")
        expect(q["max"] == MAX_QUEUE, f"queue.max {q['max']} != --max-queue {MAX_QUEUE}")

    def t_root(self):
        r = self.api.get("/", key=NO_KEY)
        expect(r.status_code == 200, f"GET / -> {r.status_code}")
        expect("text/html" in r.headers.get("Content-Type", ""),
               f"GET / Content-Type {r.headers.get('Content-Type')!r}")

    # --- auth

    def auth_checks(self):
        r = self.r
        api = self.api
        cases = [
            ("401 chat without a key", lambda: api.chat(chat_body(), key=NO_KEY)),
            ("401 chat with a wrong key", lambda: api.chat(chat_body(), key="key-nope")),
            ("401 models without a key", lambda: api.get("/v1/models", key=NO_KEY)),
            ("401 models with a wrong key", lambda: api.get("/v1/models", key="key-nope")),
            ("401 search with a wrong key",
             lambda: api.post("/v1/search", {"model": "a", "query": "lamp"}, key="sk-x")),
            ("401 ingest without a key",
             lambda: api.post("/v1/collections/a/documents",
                              {"documents": [{"id": "x", "text": "y"}]}, key=NO_KEY)),
            ("401 Basic instead of Bearer",
             lambda: api.req("GET", "/v1/models", key=NO_KEY,
                             headers={"Authorization": "Basic a2V5LWE6"})),
        ]
        for name, call in cases:
            r.run(name, lambda c=call: expect_error(c(), 401, "authentication_error"))
        r.run("/metrics without a key", lambda: expect_status(api.get("/metrics", key=NO_KEY), 200))
        r.run("/health without a key", lambda: expect_status(api.get("/health", key=NO_KEY), 200))

    def t_models(self):
        for key, want in ((KEY_A, {"a"}), (KEY_B, {"b"}), (KEY_ADMIN, {"a", "b"})):
            r = self.api.get("/v1/models", key=key)
            expect_status(r, 200)
            body = rjson(r)
            expect(body.get("object") == "list", f"object: {body.get('object')!r}")
            ids = {m["id"] for m in body["data"]}
            expect(ids == want, f"{key}: /v1/models lists {sorted(ids)}, expected {sorted(want)}")
            for m in body["data"]:
                expect(m.get("object") == "model", f"model object: {m}")
                expect(m.get("owned_by") == "cocom", f"owned_by: {m}")
                expect(isinstance(m.get("created"), int), f"created: {m}")
                expect(m.get("documents") == 3, f"{m['id']}: documents {m.get('documents')} != 3")
                expect(isinstance(m.get("passages"), int) and m["passages"] >= 3, f"passages: {m}")
                expect(m.get("compression_rate") == 4, f"compression_rate: {m}")
                expect(isinstance(m.get("model_dir"), str), f"model_dir: {m}")
        r = self.api.get("/v1/models", key=KEY_ADMIN)
        a = [m for m in rjson(r)["data"] if m["id"] == "a"][0]
        expect(a["passages"] == self.info_a0["passages"],
               f"/v1/models passages {a['passages']} != cocom info {self.info_a0['passages']}")

    # --- 400 / 403 / 404 / 405 matrices

    def chat_error_checks(self):
        r, api = self.r, self.api
        msgs = [{"role": "user", "content": QUESTION_A}]
        bad = [
            ("body is not JSON", b"{not json", None),
            ("body is a JSON array", b"[1, 2]", None),
            ("missing model", {"messages": msgs}, "model"),
            ("model not a string", {"model": 5, "messages": msgs}, "model"),
            ("missing messages", {"model": "a"}, "messages"),
            ("messages empty", {"model": "a", "messages": []}, "messages"),
            ("messages a string", {"model": "a", "messages": "hello"}, "messages"),
            ("message role unknown", {"model": "a", "messages": [{"role": "robot", "content": "x"}]},
             "messages"),
            ("message content a number", {"model": "a", "messages": [{"role": "user", "content": 5}]},
             "messages"),
            ("no user message", {"model": "a", "messages": [{"role": "system", "content": "be brief"}]},
             "messages"),
            ("max_tokens 0", chat_body(max_tokens=0), "max_tokens"),
            ("max_tokens 4097", chat_body(max_tokens=4097), "max_tokens"),
            ("max_tokens a string", chat_body(max_tokens="8"), "max_tokens"),
            ("max_completion_tokens 0",
             {"model": "a", "messages": msgs, "max_completion_tokens": 0}, "max_completion_tokens"),
            ("temperature 5", chat_body(temperature=5), "temperature"),
            ("temperature -1", chat_body(temperature=-1), "temperature"),
            ("top_p 0", chat_body(top_p=0), "top_p"),
            ("top_p 1.5", chat_body(top_p=1.5), "top_p"),
            ("seed a string", chat_body(seed="x"), "seed"),
            ("stream a string", chat_body(stream="yes"), "stream"),
            ("stop 5 strings", chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
            ("stop a number", chat_body(stop=5), "stop"),
            ("n 2", chat_body(n=2), "n"),
            ("k 0", chat_body(k=0), "k"),
            ("k 51", chat_body(k=51), "k"),
            ("search_mode unknown", chat_body(search_mode="fuzzy"), "search_mode"),
            ("compress a string", chat_body(compress="no"), "compress"),
        ]
        for name, body, param in bad:
            def call(body=body, param=param):
                if isinstance(body, bytes):
                    resp = api.req("POST", "/v1/chat/completions", data=body,
                                   headers={"Content-Type": "application/json"})
                else:
                    resp = api.chat(body)
                expect_error(resp, 400, "invalid_request_error", param)
            r.run(f"chat 400 {name}" + (f" (param {param})" if param else ""), call)
        r.run("chat 400 in a stream request is a plain JSON error",
              lambda: expect_error(api.chat(chat_body(stream=True, temperature=5)), 400,
                                   "invalid_request_error", "temperature"))
        r.run("chat 403 key-a on collection b",
              lambda: expect_error(api.chat(chat_body(model="b")), 403, "permission_error"))
        r.run("chat 403 key-b on collection a",
              lambda: expect_error(api.chat(chat_body(model="a"), key=KEY_B), 403,
                                   "permission_error"))
        r.run("chat 404 unknown collection (admin key)",
              lambda: expect_error(api.chat(chat_body(model="zzz"), key=KEY_ADMIN), 404,
                                   "not_found_error"))
        r.run("chat 404 unknown collection (key-a)",
              lambda: expect_error(api.chat(chat_body(model="zzz")), 404, "not_found_error"))

    def search_error_checks(self):
        r, api = self.r, self.api
        bad = [
            ("body is not JSON", b"{", None),
            ("missing query", {"model": "a"}, "query"),
            ("query a number", {"model": "a", "query": 5}, "query"),
            ("missing model", {"query": "lamp"}, "model"),
            ("k 0", {"model": "a", "query": "lamp", "k": 0}, "k"),
            ("k 101", {"model": "a", "query": "lamp", "k": 101}, "k"),
            ("mode unknown", {"model": "a", "query": "lamp", "mode": "fuzzy"}, "mode"),
            ("filter not an object", {"model": "a", "query": "lamp", "filter": "x"}, "filter"),
        ]
        for name, body, param in bad:
            def call(body=body, param=param):
                if isinstance(body, bytes):
                    resp = api.req("POST", "/v1/search", data=body,
                                   headers={"Content-Type": "application/json"})
                else:
                    resp = api.post("/v1/search", body)
                expect_error(resp, 400, "invalid_request_error", param)
            r.run(f"search 400 {name}" + (f" (param {param})" if param else ""), call)
        r.run("search 403 key-a on collection b",
              lambda: expect_error(api.post("/v1/search", {"model": "b", "query": "honey"}), 403,
                                   "permission_error"))
        r.run("search 404 unknown collection",
              lambda: expect_error(api.post("/v1/search", {"model": "zzz", "query": "x"},
                                            key=KEY_ADMIN), 404, "not_found_error"))

    def ingest_error_checks(self):
        r, api = self.r, self.api
        path = "/v1/collections/a/documents"
        bad = [
            ("body is not JSON", b"{\"documents\": [", None),
            ("missing documents", {}, "documents"),
            ("documents a string", {"documents": "x"}, "documents"),
            ("document without text", {"documents": [{"id": "x1"}]}, "documents"),
            ("document without id", {"documents": [{"text": "some text"}]}, "documents"),
            ("document text a number", {"documents": [{"id": "x1", "text": 7}]}, "documents"),
        ]
        for name, body, param in bad:
            def call(body=body, param=param):
                if isinstance(body, bytes):
                    resp = api.req("POST", path, data=body,
                                   headers={"Content-Type": "application/json"})
                else:
                    resp = api.post(path, body)
                expect_error(resp, 400, "invalid_request_error", param)
            r.run(f"ingest 400 {name}" + (f" (param {param})" if param else ""), call)
        doc = {"documents": [{"id": "intruder", "text": "lighthouse honey"}]}
        r.run("ingest 403 key-a into collection b",
              lambda: expect_error(api.post("/v1/collections/b/documents", doc), 403,
                                   "permission_error"))
        r.run("ingest 403 key-b into collection a",
              lambda: expect_error(api.post(path, doc, key=KEY_B), 403, "permission_error"))
        r.run("ingest 404 unknown collection",
              lambda: expect_error(api.post("/v1/collections/zzz/documents", doc, key=KEY_ADMIN),
                                   404, "not_found_error"))
        b_doc = urllib.parse.quote(self.files["b"][0], safe="")
        r.run("delete 403 key-a in collection b",
              lambda: expect_error(api.delete(f"/v1/collections/b/documents/{b_doc}"), 403,
                                   "permission_error"))
        r.run("delete 404 unknown document",
              lambda: expect_error(api.delete("/v1/collections/a/documents/no-such-doc"), 404,
                                   "not_found_error"))
        r.run("delete 404 unknown collection",
              lambda: expect_error(api.delete("/v1/collections/zzz/documents/x", key=KEY_ADMIN),
                                   404, "not_found_error"))
        r.run("job 404 unknown job",
              lambda: expect_error(api.get("/v1/jobs/job-424242"), 404, "not_found_error"))

        def b_unchanged():
            info_docs = len(self.files["b"])
            docs, _ = model_counts(api, "b")
            expect(docs == info_docs, f"collection b has {docs} documents after refused requests")
        r.run("refused requests did not change collection b", b_unchanged)

    def route_error_checks(self):
        r, api = self.r, self.api
        r.run("404 unknown /v1 route",
              lambda: expect_error(api.get("/v1/nothing-here"), 404, "not_found_error"))
        r.run("404 unknown route outside /v1",
              lambda: expect_error(api.get("/nothing-here", key=NO_KEY), 404, "not_found_error"))
        cases = [("GET", "/v1/chat/completions"), ("POST", "/v1/models"), ("GET", "/v1/search"),
                 ("PUT", "/v1/collections/a/documents"), ("DELETE", "/v1/models"),
                 ("POST", "/health")]
        for method, path in cases:
            r.run(f"405 {method} {path}",
                  lambda m=method, p=path: expect_error(
                      api.req(m, p, data=b"{}" if m in ("POST", "PUT") else None,
                              headers={"Content-Type": "application/json"}),
                      405, "invalid_request_error"))

    def t_413_chat(self):
        host, port = self.server.hostport
        big = json.dumps(chat_body(question="lighthouse " * (2 * 1024 * 1024 // 11))).encode()
        expect(len(big) > 2 * 1024 * 1024, "the body is not over 2 MB")
        status, hdrs, body = raw_request(host, port, "POST", "/v1/chat/completions",
                                         {"Authorization": f"Bearer {KEY_A}",
                                          "Content-Type": "application/json"}, big)
        check_error_body(status, hdrs, body.decode(errors="replace"), 413, "invalid_request_error",
                         None, "POST /v1/chat/completions (2 MB)")
        expect_status(self.api.get("/health", key=NO_KEY), 200)

    def t_413_ingest(self):
        before = model_counts(self.api, "a")
        host, port = self.server.hostport
        big = json.dumps({"documents": [{"id": "huge", "text": "harbour pilot " * 170000}]}).encode()
        status, hdrs, body = raw_request(host, port, "POST", "/v1/collections/a/documents",
                                         {"Authorization": f"Bearer {KEY_A}",
                                          "Content-Type": "application/json"}, big)
        check_error_body(status, hdrs, body.decode(errors="replace"), 413, "invalid_request_error",
                         None, "POST /v1/collections/a/documents (2 MB)")
        after = model_counts(self.api, "a")
        expect(after == before, f"collection a counts changed: {before} -> {after}")

    def t_curl_413(self):
        path = os.path.join(self.work, "upload", "big-body.json")
        with open(path, "w") as f:
            json.dump(chat_body(question="tide " * 450000), f)
        p = run_cmd(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60",
                     "-H", f"Authorization: Bearer {KEY_A}", "-H", "Content-Type: application/json",
                     "--data-binary", "@" + path, self.server.url + "/v1/chat/completions"],
                    timeout=90)
        out = p.stdout.decode(errors="replace")
        body, _, code = out.rpartition("\n")
        expect(code.strip() == "413", f"curl got HTTP {code!r} (curl rc {p.returncode}, "
                                      f"stderr {short(p.stderr.decode(errors='replace'))})")
        err = json.loads(body)["error"]
        expect(err["type"] == "invalid_request_error", f"error: {err}")

    # --- chat

    def t_chat_plain(self):
        r = self.api.chat(chat_body(max_tokens=12))
        expect_status(r, 200)
        expect("application/json" in r.headers.get("Content-Type", ""), "Content-Type not JSON")
        body = rjson(r)
        content, finish = check_completion(body, "a")
        expect(body["compressed"] is True, "compressed should default to true")
        expect(body["usage"]["completion_tokens"] <= 12, f"usage: {body['usage']}")
        if finish == "length":
            expect(body["usage"]["completion_tokens"] == 12,
                   f"finish_reason length with {body['usage']['completion_tokens']} tokens")
        check_sources(body["sources"], k=5)
        if not content:
            print("    (note: the greedy answer is empty)")

    def t_chat_parts(self):
        body = {"model": "a", "max_tokens": 8,
                "messages": [{"role": "system", "content": "Answer briefly."},
                             {"role": "user", "content": [{"type": "text", "text": QUESTION_A}]}]}
        r = self.api.chat(body)
        expect_status(r, 200)
        check_completion(rjson(r), "a")
        body["messages"][1]["content"] = QUESTION_A
        r2 = self.api.chat(body)
        expect_status(r2, 200)
        expect(rjson(r)["choices"][0]["message"]["content"] ==
               rjson(r2)["choices"][0]["message"]["content"],
               "the same question as text parts and as a string gave different greedy answers")
        # the last user message is the question; an assistant turn before it is accepted
        body["messages"] = [{"role": "user", "content": "hello"},
                            {"role": "assistant", "content": "hi"},
                            {"role": "user", "content": QUESTION_A}]
        r3 = self.api.chat(body)
        expect_status(r3, 200)
        check_completion(rjson(r3), "a")

    def t_chat_options(self):
        r = self.api.post("/v1/chat/completions",
                          {"model": "a", "messages": [{"role": "user", "content": QUESTION_A}],
                           "max_completion_tokens": 3})
        expect_status(r, 200)
        b = rjson(r)
        check_completion(b, "a")
        expect(b["usage"]["completion_tokens"] <= 3, f"max_completion_tokens 3: {b['usage']}")
        r = self.api.chat(chat_body(max_tokens=10, stop=["\n", "."], user="ignored-field"))
        expect_status(r, 200)
        check_completion(rjson(r), "a")
        sampled = []
        for _ in range(2):
            r = self.api.chat(chat_body(max_tokens=10, temperature=0.9, top_p=0.9, seed=1234))
            expect_status(r, 200)
            sampled.append(check_completion(rjson(r), "a")[0])
        expect(sampled[0] == sampled[1], "the same seed gave different sampled answers")

    def stream_chat(self, body, key=KEY_A, timeout=T):
        r = self.api.chat(body, key=key, stream=True, timeout=timeout)
        try:
            expect_status(r, 200)
            ctype = r.headers.get("Content-Type", "")
            expect(ctype.startswith("text/event-stream"), f"stream Content-Type {ctype!r}")
            return read_stream(r)
        finally:
            r.close()

    def t_chat_stream(self):
        for max_tokens in (16, 4):
            body = chat_body(max_tokens=max_tokens)
            plain = rjson(self.api.chat(body))
            events = self.stream_chat(dict(body, stream=True))
            content, first, last = check_chat_stream(events, "a")
            want = plain["choices"][0]["message"]["content"]
            expect(content == want, f"max_tokens {max_tokens}: streamed {content!r} != "
                                    f"non-streamed {want!r}")
            expect(last["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"],
                   "finish_reason differs between stream and non-stream")
            expect(last["usage"] == plain["usage"],
                   f"usage differs: stream {last['usage']} vs {plain['usage']}")
            expect([s["passage_id"] for s in first["sources"]] ==
                   [s["passage_id"] for s in plain["sources"]], "sources differ")
            expect(last["compressed"] is True, "compressed should be true")

    def t_chat_b(self):
        r = self.api.chat(chat_body(model="b", question=QUESTION_B), key=KEY_B)
        expect_status(r, 200)
        body = rjson(r)
        check_completion(body, "b")
        for s in body["sources"]:
            expect("docs_b" in s["document_id"], f"a source of b from elsewhere: {s['document_id']}")
        events = self.stream_chat(chat_body(model="b", question=QUESTION_B, stream=True), key=KEY_B)
        check_chat_stream(events, "b")

    def t_compress_false(self):
        on = rjson(self.api.chat(chat_body(max_tokens=8)))
        off_r = self.api.chat(chat_body(max_tokens=8, compress=False))
        expect_status(off_r, 200)
        off = rjson(off_r)
        check_completion(off, "a")
        expect(off["compressed"] is False, f"compressed: {off['compressed']!r}")
        expect(off["usage"]["prompt_tokens"] > on["usage"]["prompt_tokens"],
               f"uncompressed prompt_tokens {off['usage']['prompt_tokens']} not above compressed "
               f"{on['usage']['prompt_tokens']}")
        events = self.stream_chat(chat_body(max_tokens=8, compress=False, stream=True))
        content, _, last = check_chat_stream(events, "a")
        expect(last["compressed"] is False, "streamed compressed should be false")
        expect(content == off["choices"][0]["message"]["content"],
               "uncompressed greedy stream != non-stream")

    def t_chat_k(self):
        one = rjson(self.api.chat(chat_body(max_tokens=4, k=1)))
        check_completion(one, "a")
        expect(len(one["sources"]) == 1, f"k=1 gave {len(one['sources'])} sources")
        two = rjson(self.api.chat(chat_body(max_tokens=4, k=2, search_mode="bm25")))
        check_completion(two, "a")
        expect(1 <= len(two["sources"]) <= 2, f"k=2 gave {len(two['sources'])} sources")
        expect(two["usage"]["prompt_tokens"] > one["usage"]["prompt_tokens"] or
               len(two["sources"]) == 1, "2 passages should make a longer prompt than 1")

    def t_batched(self):
        body = chat_body(max_tokens=16)
        single = rjson(self.api.chat(body))["choices"][0]["message"]["content"]
        results = [None] * 4

        def worker(i):
            try:
                results[i] = self.api.req("POST", "/v1/chat/completions", json_body=body)
            except Exception as e:  # reported below
                results[i] = e
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T + 10)
        for i, res in enumerate(results):
            expect(isinstance(res, requests.Response), f"request {i}: {res!r}")
            if res.status_code == 429:  # a full queue is allowed; the rest must agree
                continue
            expect_status(res, 200)
            got = rjson(res)["choices"][0]["message"]["content"]
            expect(got == single, f"request {i}: batched greedy answer {got!r} != single {single!r}")

    def t_curl_stream(self):
        body = json.dumps(chat_body(max_tokens=8, stream=True))
        p = run_cmd(["curl", "-sS", "-N", "--max-time", "60", "-D", "-",
                     "-H", f"Authorization: Bearer {KEY_A}", "-H", "Content-Type: application/json",
                     "-d", body, self.server.url + "/v1/chat/completions"], timeout=90)
        expect(p.returncode == 0, f"curl rc {p.returncode}: {p.stderr.decode(errors='replace')}")
        out = p.stdout.decode()
        head, _, rest = out.partition("\r\n\r\n")
        expect(head.split()[1] == "200", f"status line: {head.splitlines()[0]!r}")
        expect("text/event-stream" in head.lower(), f"headers: {head}")
        datas = [l[len("data: "):] for l in rest.splitlines() if l.startswith("data: ")]
        expect(datas and datas[-1] == "[DONE]", f"last data line: {datas[-1:]!r}")
        events = [(d, None if d == "[DONE]" else json.loads(d)) for d in datas]
        check_chat_stream(events, "a")

    def t_curl_401(self):
        p = run_cmd(["curl", "-sS", "-w", "\n%{http_code}", "--max-time", "30",
                     "-H", "Authorization: Bearer wrong-key", self.server.url + "/v1/models"],
                    timeout=60)
        body, _, code = p.stdout.decode().rpartition("\n")
        expect(code == "401", f"curl got {code!r}")
        err = json.loads(body)["error"]
        expect(err["type"] == "authentication_error" and err["message"], f"error: {err}")

    # --- search

    def t_search(self):
        r = self.api.post("/v1/search", {"model": "a", "query": "lighthouse lamp keeper", "k": 3,
                                         "mode": "bm25"})
        expect_status(r, 200)
        body = rjson(r)
        expect(body.get("object") == "list" and body.get("model") == "a", f"{short(r.text)}")
        data = body["data"]
        expect(1 <= len(data) <= 3, f"{len(data)} hits for k=3")
        for i, h in enumerate(data):
            for f, ty in (("rank", int), ("passage_id", int), ("document_id", str), ("title", str),
                          ("source", str), ("index", int), ("text", str), ("score", (int, float))):
                expect(isinstance(h.get(f), ty), f"data[{i}].{f}: {short(json.dumps(h))}")
            expect(h["rank"] == i + 1, f"data[{i}].rank = {h['rank']}")
        scores = [h["score"] for h in data]
        expect(scores == sorted(scores, reverse=True), f"scores not descending: {scores}")
        r = self.api.post("/v1/search", {"model": "a", "query": "lighthouse harbour fog", "k": 100})
        expect_status(r, 200)
        data = rjson(r)["data"]
        expect(len(data) >= 3, f"default mode, k=100: {len(data)} hits")
        self.doc_ids_a = {h["document_id"] for h in data}
        expect(len(self.doc_ids_a) == 3, f"expected the 3 documents of a, got {self.doc_ids_a}")
        r = self.api.post("/v1/search", {"model": "a", "query": "lighthouse"})
        expect_status(r, 200)
        expect(len(rjson(r)["data"]) >= 1, "no hit without k")

    def fog_id(self):
        if not self.doc_ids_a:
            self.t_search()
        ids = [d for d in self.doc_ids_a if "fog-signals" in d]
        expect(ids, f"no fog-signals document among {self.doc_ids_a}")
        return ids[0]

    def t_search_filter_doc(self):
        fog = self.fog_id()
        r = self.api.post("/v1/search", {"model": "a", "query": "lighthouse keeper harbour", "k": 10,
                                         "mode": "bm25", "filter": {"document_id": fog}})
        expect_status(r, 200)
        data = rjson(r)["data"]
        expect(data, "the filter found nothing")
        expect(all(h["document_id"] == fog for h in data),
               f"hits outside the filter: {[h['document_id'] for h in data]}")

    def t_search_filter_prefix(self):
        prefix = os.path.join(self.work, "docs_a", "harbour")
        r = self.api.post("/v1/search", {"collection": "a", "query": "lighthouse keeper harbour",
                                         "k": 10, "filter": {"source_prefix": prefix}})
        expect_status(r, 200)
        data = rjson(r)["data"]
        expect(data, f"source_prefix {prefix} found nothing")
        expect(all(h["source"].startswith(prefix) for h in data),
               f"hits outside the prefix: {[h['source'] for h in data]}")

    def t_isolation(self):
        for key, model, query, other in ((KEY_A, "a", "beehive honey queen bees wax", "docs_b"),
                                         (KEY_B, "b", "lighthouse harbour pilot fog", "docs_a")):
            ids = search_ids(self.api, model, query, key=key)
            expect(not any(other in d for d in ids), f"{model} found {other}: {ids}")
        ids = search_ids(self.api, "a", "lighthouse", key=KEY_ADMIN)
        expect(ids and all("docs_a" in d for d in ids), f"admin on a: {ids}")

    # --- ingestion

    def ingest(self, docs, key=KEY_A, collection="a"):
        r = self.api.post(f"/v1/collections/{collection}/documents", {"documents": docs}, key=key)
        expect_status(r, 202)
        job = rjson(r)
        expect(job.get("object") == "ingestion.job", f"job: {job}")
        expect(job.get("collection") == collection, f"job: {job}")
        expect(job.get("status") in ("queued", "running", "succeeded"), f"job: {job}")
        expect(isinstance(job.get("id"), str) and job["id"], f"job id: {job}")
        return job

    def check_job_done(self, job, n_docs):
        expect(job["status"] == "succeeded", f"job: {short(json.dumps(job), 800)}")
        for f in ("documents_total", "documents_done", "passages", "added", "unchanged",
                  "replaced", "seconds"):
            expect(isinstance(job.get(f), (int, float)), f"job.{f}: {short(json.dumps(job))}")
        expect(isinstance(job.get("skipped"), list), f"job.skipped: {job.get('skipped')!r}")
        expect(isinstance(job.get("warnings"), list), f"job.warnings: {job.get('warnings')!r}")
        expect(job.get("error") is None, f"job.error: {job.get('error')!r}")
        expect(job["documents_total"] == n_docs and job["documents_done"] == n_docs,
               f"documents_total/done: {job['documents_total']}/{job['documents_done']}")
        expect(job["added"] == n_docs, f"added {job['added']} != {n_docs}")
        expect(job["passages"] >= n_docs, f"passages {job['passages']}")

    def t_ingest_json(self):
        before = model_counts(self.api, "a")
        word = "quokkafrobnicator"
        docs = [{"id": "note-zebra-1", "title": "Zebra crossing lights",
                 "text": f"The {word} beacon stands on the pier of the old harbour. "
                         "It blinks green twice and is maintained by the harbour master.",
                 "source": "api://notes/zebra-1"},
                {"id": "note-zebra-2", "title": "Second note",
                 "text": "The tide tables for the harbour are printed every spring by the pilots."}]
        job = self.ingest(docs)
        done = poll_job(self.api, job["id"])
        self.check_job_done(done, 2)
        after = model_counts(self.api, "a")
        expect(after[0] == before[0] + 2, f"documents {before[0]} -> {after[0]} after adding 2")
        expect(after[1] >= before[1] + 2, f"passages {before[1]} -> {after[1]}")
        r = self.api.post("/v1/search", {"model": "a", "query": word, "k": 5, "mode": "bm25"})
        expect_status(r, 200)
        hits = rjson(r)["data"]
        expect(hits and hits[0]["document_id"] == "note-zebra-1",
               f"search for {word}: {[h['document_id'] for h in hits]}")
        expect(hits[0]["source"] == "api://notes/zebra-1", f"source: {hits[0]['source']!r}")
        expect(hits[0]["title"] == "Zebra crossing lights", f"title: {hits[0]['title']!r}")
        # the same documents again: unchanged
        again = poll_job(self.api, self.ingest(docs)["id"])
        expect(again["status"] == "succeeded" and again["unchanged"] == 2 and again["added"] == 0,
               f"re-ingesting the same documents: {short(json.dumps(again))}")
        r = self.api.delete("/v1/collections/a/documents/note-zebra-1")
        expect_status(r, 200)
        d = rjson(r)
        expect(d.get("id") == "note-zebra-1" and d.get("object") == "document" and
               d.get("deleted") is True and d.get("removed") == 1, f"delete answer: {d}")
        ids = search_ids(self.api, "a", word)
        expect("note-zebra-1" not in ids, f"deleted document still found: {ids}")
        expect_error(self.api.delete("/v1/collections/a/documents/note-zebra-1"), 404,
                     "not_found_error")
        expect_status(self.api.delete("/v1/collections/a/documents/note-zebra-2"), 200)
        final = model_counts(self.api, "a")
        expect(final == before, f"counts after add+delete {final} != before {before}")

    def t_ingest_encoded_id(self):
        doc_id = "notes/pier lights?v=1#2"
        job = self.ingest([{"id": doc_id, "text": "The pier lights of the harbour are yellow."}])
        self.check_job_done(poll_job(self.api, job["id"]), 1)
        ids = search_ids(self.api, "a", "pier lights yellow")
        expect(doc_id in ids, f"{doc_id!r} not found: {ids}")
        enc = urllib.parse.quote(doc_id, safe="")
        r = self.api.delete(f"/v1/collections/a/documents/{enc}")
        expect_status(r, 200)
        expect(rjson(r).get("id") == doc_id, f"delete answer: {r.text}")
        expect(doc_id not in search_ids(self.api, "a", "pier lights yellow"), "still found")

    def t_ingest_multipart(self):
        name = "upload-breakwater.md"
        text = ("# Breakwater\n\nThe breakwater protects the harbour from the swell. Its "
                "zanzibarquartz stones weigh twenty tonnes each.\n")
        r = self.api.req("POST", "/v1/collections/a/documents",
                         files={"file": (name, text.encode(), "text/markdown")})
        expect_status(r, 202)
        job = rjson(r)
        expect(job.get("object") == "ingestion.job", f"job: {job}")
        self.check_job_done(poll_job(self.api, job["id"]), 1)
        r = self.api.post("/v1/search", {"model": "a", "query": "zanzibarquartz", "k": 3,
                                         "mode": "bm25"})
        hits = rjson(r)["data"]
        expect(hits and hits[0]["document_id"] == name,
               f"uploaded document id should be its file name: {[h['document_id'] for h in hits]}")
        expect_status(self.api.delete(f"/v1/collections/a/documents/{name}"), 200)

    def t_curl_multipart(self):
        p1 = os.path.join(self.work, "upload", "curl-note.md")
        p2 = os.path.join(self.work, "upload", "curl-note.txt")
        with open(p1, "w") as f:
            f.write("# Curl note\n\nThe jetty lantern is lit by the harbour master at dusk.\n")
        with open(p2, "w") as f:
            f.write("The mooring ropes of the jetty are replaced every autumn.\n")
        p = run_cmd(["curl", "-sS", "-w", "\n%{http_code}", "--max-time", "60",
                     "-H", f"Authorization: Bearer {KEY_A}", "-F", f"file=@{p1}",
                     "-F", f"other=@{p2}", self.server.url + "/v1/collections/a/documents"],
                    timeout=90)
        body, _, code = p.stdout.decode().rpartition("\n")
        expect(code == "202", f"curl got {code!r}: {short(body)} {p.stderr.decode()}")
        job = json.loads(body)
        done = poll_job(self.api, job["id"])
        self.check_job_done(done, 2)
        for n in ("curl-note.md", "curl-note.txt"):
            expect_status(self.api.delete(f"/v1/collections/a/documents/{n}"), 200)

    def t_failed_unchanged(self):
        before_a, before_b = model_counts(self.api, "a"), model_counts(self.api, "b")
        bad = [b"{\"documents\": [{\"id\": \"x\", \"text\": ", b"not json at all",
               json.dumps({"documents": [{"id": "ok-1", "text": "fine"}, {"id": "bad"}]}).encode(),
               json.dumps({"documents": [{"id": "ok-2", "text": "fine"}, {"text": "no id"}]}).encode()]
        for body in bad:
            r = self.api.req("POST", "/v1/collections/a/documents", data=body,
                             headers={"Content-Type": "application/json"})
            expect_error(r, 400, "invalid_request_error")
        r = self.api.post("/v1/collections/b/documents",
                          {"documents": [{"id": "x", "text": "honey"}]})
        expect_error(r, 403, "permission_error")
        time.sleep(0.5)
        after_a, after_b = model_counts(self.api, "a"), model_counts(self.api, "b")
        expect(after_a == before_a, f"a changed: {before_a} -> {after_a}")
        expect(after_b == before_b, f"b changed: {before_b} -> {after_b}")
        ids = search_ids(self.api, "a", "fine")
        expect("ok-1" not in ids and "ok-2" not in ids,
               f"a valid document of a refused request was stored: {ids}")

    def t_job_other_tenant(self):
        job = self.ingest([{"id": "tenant-job", "text": "The harbour crane lifts the lamp."}])
        r = self.api.get(f"/v1/jobs/{job['id']}", key=KEY_B)
        expect(r.status_code in (403, 404), f"key-b reading a job of a: {r.status_code}")
        expect_error(r, r.status_code, "permission_error" if r.status_code == 403
                     else "not_found_error")
        self.check_job_done(poll_job(self.api, job["id"]), 1)
        expect_status(self.api.delete("/v1/collections/a/documents/tenant-job"), 200)

    # --- robustness

    def wait_idle(self, timeout=20):
        deadline = time.time() + timeout
        h = None
        while time.time() < deadline:
            h = rjson(self.api.get("/health", key=NO_KEY))
            if h["queue"]["active"] == 0 and h["queue"]["waiting"] == 0:
                return h
            time.sleep(0.2)
        raise AssertionError(f"the answer queue did not drain within {timeout}s: {h}")

    def t_disconnect(self):
        host, port = self.server.hostport
        long_body = chat_body(max_tokens=2048, temperature=2.0, seed=7, k=20, stream=True)
        for i, reset in enumerate((False, True, False)):
            data = open_stream_and_drop(host, port, KEY_A, dict(long_body, seed=7 + i), reset=reset)
            expect(b" 200 " in data.split(b"\r\n", 1)[0], f"status line: {short(data)}")
            expect(b"data: " in data, f"no data event: {short(data)}")
        self.wait_idle()
        r = self.api.chat(chat_body(max_tokens=8))
        expect_status(r, 200)
        check_completion(rjson(r), "a")
        check_chat_stream(self.stream_chat(chat_body(max_tokens=8, stream=True)), "a")
        expect(self.server.running(), "the server exited")

    def t_429(self):
        body = chat_body(max_tokens=1024, temperature=2.0, k=20)
        self.burst_errors = []
        self.burst_tcp = tcp_counters()
        seen_429 = []
        statuses = []
        for round_n, n in enumerate((3 * (MAX_QUEUE + MAX_BATCH), 6 * (MAX_QUEUE + MAX_BATCH),
                                     10 * (MAX_QUEUE + MAX_BATCH))):
            barrier = threading.Barrier(n)
            out = [None] * n

            def worker(i):
                try:
                    barrier.wait(10)
                    out[i] = requests.post(self.server.url + "/v1/chat/completions",
                                           data=json.dumps(dict(body, seed=i)).encode(),
                                           headers={"Authorization": f"Bearer {KEY_A}",
                                                    "Content-Type": "application/json"},
                                           timeout=(10, 120))
                except Exception as e:
                    out[i] = e
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(150)
            errors = [o for o in out if not isinstance(o, requests.Response)]
            self.burst_errors += errors
            out = [o for o in out if isinstance(o, requests.Response)]
            statuses = [o.status_code for o in out]
            expect(set(statuses) <= {200, 429}, f"statuses: {statuses}")
            for o in out:
                if o.status_code == 429:
                    seen_429.append(o)
                else:
                    check_completion(rjson(o), "a")
            expect(200 in statuses, f"no request succeeded: {statuses}")
            if seen_429:
                break
            print(f"    (round {round_n + 1}: {n} concurrent requests, no 429; trying more)")
        expect(seen_429, f"no 429 with {len(statuses)} concurrent requests and --max-queue "
                         f"{MAX_QUEUE}: {statuses}")
        for o in seen_429:
            expect_error(o, 429, "rate_limit_error")
            ra = o.headers.get("Retry-After")
            expect(ra is not None and ra.strip().isdigit(), f"Retry-After: {ra!r}")
        self.wait_idle(60)
        expect_status(self.api.chat(chat_body(max_tokens=4)), 200)

    def t_burst_answered(self):
        """Every request of the 429 burst got an HTTP answer (no connection reset)."""
        if getattr(self, "burst_errors", None) is None:
            raise Skip("the 429 check did not run")
        if self.burst_errors:
            before, after = self.burst_tcp, tcp_counters()
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            hint = ", ".join(f"{k} +{v}" for k, v in delta.items() if v)
            raise AssertionError(
                f"{len(self.burst_errors)} request(s) of the burst got no HTTP answer: "
                f"{self.burst_errors[:2]}" + (f"; kernel TCP counters during the burst: {hint} "
                "(ListenOverflows/Syncookies: the listen backlog is too small for the burst)"
                if hint else ""))

    def t_metrics(self):
        r = self.api.get("/metrics", key=NO_KEY)
        expect_status(r, 200)
        ctype = r.headers.get("Content-Type", "")
        expect(ctype.startswith("text/plain"), f"Content-Type {ctype!r}")
        text = r.text
        for name in ("cocom_requests_total", "cocom_decode_batch_size", "cocom_request_duration_seconds",
                     "cocom_queue_waiting", "cocom_queue_active", "cocom_generated_tokens_total",
                     "cocom_jobs"):
            expect(name in text, f"/metrics lacks {name}")
        sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+]?([0-9.eE+-]+|Inf|NaN)'
                            r'( -?\d+)?$')
        for line in text.splitlines():
            if line and not line.startswith("#"):
                expect(sample.match(line), f"not a Prometheus sample line: {line!r}")
        req = [l for l in text.splitlines() if l.startswith("cocom_requests_total{")]
        expect(any('status="200"' in l and "route=" in l for l in req),
               f"no cocom_requests_total{{route,status=\"200\"}}: {req[:5]}")
        expect(re.search(r"^cocom_decode_batch_size_(bucket|count)", text, re.M),
               "cocom_decode_batch_size is not a histogram")
        count = re.search(r"^cocom_decode_batch_size_count(\{[^}]*\})? (\S+)", text, re.M)
        expect(count and float(count.group(2)) > 0, "cocom_decode_batch_size_count is 0")

    def t_node(self, script):
        path = os.path.join(HERE, script)
        if not os.path.isdir(os.path.join(HERE, "node_modules")):
            raise AssertionError("tests/serve/node_modules is missing: run `npm ci` in tests/serve")
        env = dict(os.environ, COCOM_URL=self.server.url, COCOM_API_KEY=KEY_A,
                   COCOM_COLLECTION="a", COCOM_OTHER_COLLECTION="b", COCOM_QUESTION=QUESTION_A)
        try:
            p = subprocess.run(["node", path], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"node {script} timed out:\n{(e.output or b'').decode()}")
        out = p.stdout.decode(errors="replace")
        for line in out.rstrip().splitlines():
            print("    | " + line)
        expect(p.returncode == 0, f"node {script} exited {p.returncode}")

    # --- shutdown

    def t_sigterm_answer(self):
        """SIGTERM while answers stream: short sampled answers in a loop on two connections, and
        one answer with a long question (a prefill of seconds on a small CPU), certainly in
        flight when the signal comes."""
        srv = self.server
        stop = threading.Event()
        outcomes = []  # per request: (label, started streaming, outcome)
        first_chunk = {"loop": threading.Event(), "long": threading.Event()}
        lock = threading.Lock()

        def stream_once(label, body):
            """One streamed request; returns False when the server refused it for good."""
            got_first = False
            try:
                resp = requests.post(srv.url + "/v1/chat/completions", data=json.dumps(body),
                                     headers={"Authorization": f"Bearer {KEY_A}",
                                              "Content-Type": "application/json"},
                                     stream=True, timeout=(5, 40))
            except requests.RequestException as e:
                with lock:
                    outcomes.append((label, False, "refused: " + type(e).__name__))
                return False
            try:
                if resp.status_code != 200:
                    with lock:
                        outcomes.append((label, False, f"status {resp.status_code}"))
                    time.sleep(0.05)
                    return resp.status_code in (429, 503)
                datas = []
                try:
                    for data in sse_iter_bytes(resp.iter_content(chunk_size=64)):
                        datas.append(data)
                        if not got_first:
                            got_first = True
                            first_chunk[label].set()
                except requests.RequestException as e:
                    datas.append("<closed: " + type(e).__name__ + ">")
                if datas and datas[-1] == "[DONE]":
                    chunks = [json.loads(d) for d in datas[:-1]]
                    last = chunks[-1] if chunks else {}
                    if "error" in last:
                        outcome = "error event + [DONE]"
                    elif last.get("choices", [{}])[0].get("finish_reason") in ("stop", "length"):
                        outcome = "complete"
                    else:
                        outcome = "BAD: [DONE] without a final chunk or an error event"
                else:
                    outcome = "closed without [DONE]"
                with lock:
                    outcomes.append((label, got_first, outcome))
                return True
            finally:
                resp.close()

        def looper(seed):
            while not stop.is_set():
                body = chat_body(max_tokens=2048, temperature=2.0, seed=seed, k=20, stream=True)
                seed += 100
                if not stream_once("loop", body):
                    return

        long_body = chat_body(question="lighthouse keeper lamp " * 170, max_tokens=64, k=50,
                              stream=True)
        threads = [threading.Thread(target=looper, args=(s,), daemon=True) for s in range(2)]
        threads.append(threading.Thread(target=stream_once, args=("long", long_body), daemon=True))
        for t in threads:
            t.start()
        expect(first_chunk["long"].wait(30), "the long answer did not start streaming")
        expect(first_chunk["loop"].wait(30), "no short answer started streaming")
        time.sleep(1.0)
        t0 = time.time()
        srv.signal(signal.SIGTERM)
        time.sleep(0.5)
        try:  # no new connection is taken, or /health says stopping with 503
            h = requests.get(srv.url + "/health", timeout=3)
            expect(h.status_code == 503, f"/health 0.5 s after SIGTERM: {h.status_code} "
                                         f"{short(h.text)}")
            expect(rjson(h).get("status") == "stopping", f"/health: {short(h.text)}")
        except requests.RequestException:
            pass
        rc = srv.wait(15)
        elapsed = time.time() - t0
        stop.set()
        deadline = time.time() + 45
        for t in threads:
            t.join(max(0.1, deadline - time.time()))
        expect(not any(t.is_alive() for t in threads), "a client stream did not end")
        expect(rc is not None, "the server did not exit within 15 s of SIGTERM")
        expect(rc == 0, f"exit status {rc} after SIGTERM")
        bad = [o for o in outcomes if o[2].startswith("BAD")]
        expect(not bad, f"malformed stream ends: {bad}")
        long_end = [o for o in outcomes if o[0] == "long"]
        expect(long_end and long_end[0][2] in ("complete", "error event + [DONE]"),
               f"the answer in flight at SIGTERM ended with {long_end}: expected its final chunk "
               "or an error event, then data: [DONE]")
        started = [o for o in outcomes if o[1]]
        print(f"    (exited after {elapsed:.1f}s; {len(outcomes)} requests: the long one "
              f"{long_end[0][2]}; the others: "
              + ", ".join(f"{sum(1 for o in started if o[2] == k and o[0] == 'loop')} {k}"
                          for k in sorted({o[2] for o in started if o[0] == 'loop'}))
              + f", {sum(1 for o in outcomes if not o[1])} refused or not started)")

    def stop_all(self):
        for s in self.servers:
            if s.running():
                s.stop(timeout=20)
            s.kill()

    def t_open_nonloopback(self):
        self.stop_all()
        s = Server(self.cocom, self.work, ["--db", "a=" + os.path.join(self.work, "a"),
                                           "--host", "0.0.0.0", "--port", "0"], name="open-0.0.0.0")
        self.servers.append(s)
        s.start(timeout=60)
        rc = s.wait(60)
        if rc is None:
            s.kill()
            raise AssertionError(f"the server runs without --api-keys on 0.0.0.0 (url {s.url})")
        expect(rc != 0, "exit status 0")
        expect(s.url is None, "it printed a listening line")

    def t_sigterm_ingest(self):
        self.stop_all()
        db_a = os.path.join(self.work, "a")
        info0 = cocom_info(self.cocom, db_a)
        srv = self.start_server(name="serve-ingest")
        self.use(srv)
        n = 150
        docs = [{"id": f"log-{i:04d}", "title": f"Harbour log {i}", "text": filler_document(i)}
                for i in range(n)]
        job = self.ingest(docs)
        deadline = time.time() + 60
        state = None
        while time.time() < deadline:
            state = rjson(self.api.get(f"/v1/jobs/{job['id']}"))
            if state["status"] != "queued" and (state.get("documents_done") or 0) >= 1:
                break
            time.sleep(0.05)
        done_at_signal = state.get("documents_done") or 0
        print(f"    (SIGTERM with the job {state['status']}, {done_at_signal}/{n} documents done)")
        rc, secs = srv.stop(timeout=30)
        expect(rc is not None, "the server did not exit within 30 s of SIGTERM during a job")
        expect(rc == 0, f"exit status {rc}")
        expect(secs <= 15, f"took {secs:.1f}s to exit")
        info = cocom_info(self.cocom, db_a)
        docs_now = info["documents"]
        print(f"    (exited {rc} after {secs:.1f}s; the store holds {docs_now - info0['documents']} "
              f"of the job's {n} documents, {info['passages']} passages in all)")
        expect(info0["documents"] <= docs_now <= info0["documents"] + n,
               f"documents {info0['documents']} -> {docs_now}")
        if state["status"] == "running" and done_at_signal < n - 20:
            expect(docs_now < info0["documents"] + n,
                   f"all {n} documents were written although the job was stopped at "
                   f"{done_at_signal}/{n}")
        expect(info["passages"] == info["embeddings"] == info["bm25_documents"],
               f"inconsistent store: passages {info['passages']}, embeddings "
               f"{info['embeddings']}, bm25_documents {info['bm25_documents']}")
        if info.get("has_dense_retriever"):
            expect(info["index_vectors"] == info["passages"], f"index_vectors: {info}")
        again = cocom_info(self.cocom, db_a)
        expect(again["documents"] == docs_now and again["passages"] == info["passages"],
               "a second open reports other counts")

        # restart (without --api-keys: the open loopback mode) and compare with cocom info
        srv2 = self.start_server(keys=False, name="serve-restart")
        self.use(srv2)
        r = self.api.get("/v1/models", key=NO_KEY)
        expect_status(r, 200)
        models = {m["id"]: m for m in rjson(r)["data"]}
        expect(set(models) == {"a", "b"}, f"open server lists {sorted(models)}")
        expect(models["a"]["documents"] == docs_now and models["a"]["passages"] == info["passages"],
               f"after restart: {models['a']} vs cocom info documents {docs_now} passages "
               f"{info['passages']}")
        r = self.api.chat(chat_body(max_tokens=6), key=NO_KEY)
        expect_status(r, 200)
        check_completion(rjson(r), "a")
        # a new job after the interrupted one finishes the remaining documents
        job2 = self.ingest(docs[:10], key=NO_KEY)
        done = poll_job(self.api, job2["id"], key=NO_KEY)
        expect(done["status"] == "succeeded", f"job after restart: {short(json.dumps(done))}")
        rc, secs = srv2.stop()
        expect(rc == 0, f"restarted server: exit status {rc} after SIGTERM ({secs:.1f}s)")
        print(f"    (the restarted server exited {rc} after {secs:.1f}s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cocom", default=os.path.join(REPO, "build", "bin", "cocom"))
    ap.add_argument("--workdir", required=True, help="scratch directory (stores, logs)")
    ap.add_argument("--node", action="store_true",
                    help="also run the node tests (openai client; browser test when present)")
    ap.add_argument("--only", metavar="REGEX",
                    help="run only the checks whose name matches (set-up always runs)")
    args = ap.parse_args()
    suite = Suite(args)

    def on_signal(signum, frame):
        for s in suite.servers:
            s.kill()
        sys.exit(130)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.time()
    try:
        rc = suite.main()
    except AssertionError as e:
        print(f"FAIL setup: {e}")
        rc = 1
    print(f"total {time.time() - t0:.0f}s")
    sys.exit(rc)


if __name__ == "__main__":
    main()
