// `cocom serve` driven by the official OpenAI Node client (docs/server.md).
//
//   cd tests/serve && npm ci
//   COCOM_URL=http://127.0.0.1:8080 COCOM_API_KEY=key-a COCOM_COLLECTION=a \
//   COCOM_OTHER_COLLECTION=b node tests/serve/openai_client_test.mjs
//
// COCOM_OTHER_COLLECTION: a collection that exists but this key may not use.
// COCOM_QUESTION (optional): a question sharing words with COCOM_COLLECTION (retrieval may be
// BM25 only). Run by tests/serve/test_serve.py --node. The answers' content is never checked
// (the default model is tiny); structure, statuses, error classes and determinism are.
// Prints one PASS/FAIL line per check; exits 1 when one failed.

import OpenAI from 'openai';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') {
    console.error(`openai_client_test: set ${name}`);
    process.exit(2);
  }
  return v;
};

const URL_ = env('COCOM_URL').replace(/\/+$/, '');
const KEY = env('COCOM_API_KEY');
const COLLECTION = env('COCOM_COLLECTION');
const OTHER = env('COCOM_OTHER_COLLECTION');
const QUESTION = env('COCOM_QUESTION', 'How does the lighthouse keeper light the lamp?');

const client = new OpenAI({ baseURL: `${URL_}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60_000 });

let failures = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  } catch (e) {
    failures++;
    const detail = e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
    console.log(`FAIL ${name}: ${detail}`);
  }
}

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

const short = (x) => {
  const s = typeof x === 'string' ? x : JSON.stringify(x);
  return s.length > 300 ? `${s.slice(0, 300)}...` : s;
};

function checkSources(sources) {
  expect(Array.isArray(sources), `sources is not an array: ${short(sources)}`);
  expect(sources.length > 0, 'sources is empty');
  sources.forEach((s, i) => {
    expect(typeof s.document_id === 'string' && s.document_id, `sources[${i}].document_id: ${short(s)}`);
    expect(typeof s.title === 'string', `sources[${i}].title: ${short(s)}`);
    expect(typeof s.excerpt === 'string', `sources[${i}].excerpt: ${short(s)}`);
    expect(typeof s.score === 'number', `sources[${i}].score: ${short(s)}`);
  });
}

const ask = (extra = {}) => ({
  model: COLLECTION,
  messages: [{ role: 'user', content: QUESTION }],
  max_tokens: 16,
  ...extra,
});

// An error of the given class and status from the call.
async function expectError(call, cls, status) {
  let err = null;
  try {
    await call();
  } catch (e) {
    err = e;
  }
  expect(err !== null, `expected ${cls.name}, the call succeeded`);
  expect(err instanceof cls, `expected ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
  expect(err.status === status, `expected status ${status}, got ${err.status}`);
  expect(err.error && typeof err.error.message === 'string' && err.error.message,
    `error body lacks message: ${short(err.error)}`);
  expect(typeof err.type === 'string' && err.type, `error has no type: ${short(err.error)}`);
  return err;
}

let greedy = null; // the non-streamed greedy completion

await check('chat.completions.create (non-streaming)', async () => {
  const c = await client.chat.completions.create(ask());
  expect(c.object === 'chat.completion', `object: ${c.object}`);
  expect(c.model === COLLECTION, `model: ${c.model}`);
  expect(typeof c.id === 'string' && c.id.startsWith('chatcmpl-'), `id: ${c.id}`);
  expect(c.choices.length === 1, `choices: ${c.choices.length}`);
  const ch = c.choices[0];
  expect(ch.message.role === 'assistant', `role: ${ch.message.role}`);
  expect(typeof ch.message.content === 'string' && ch.message.content.length > 0,
    `content should be a non-empty string: ${short(ch.message.content)}`);
  expect(['stop', 'length'].includes(ch.finish_reason), `finish_reason: ${ch.finish_reason}`);
  expect(c.usage.prompt_tokens > 0, `usage: ${short(c.usage)}`);
  expect(c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens,
    `usage totals: ${short(c.usage)}`);
  checkSources(c.sources);
  greedy = c;
});

await check('chat.completions.create (stream: true) == the greedy answer', async () => {
  if (!greedy) greedy = await client.chat.completions.create(ask());
  const stream = await client.chat.completions.create(ask({ stream: true }));
  let content = '';
  let sources = null;
  let finish = null;
  let usage = null;
  let chunks = 0;
  const ids = new Set();
  for await (const chunk of stream) {
    chunks++;
    ids.add(chunk.id);
    expect(chunk.object === 'chat.completion.chunk', `chunk object: ${chunk.object}`);
    if (chunk.sources) sources = chunk.sources;
    if (chunk.usage) usage = chunk.usage;
    const ch = chunk.choices?.[0];
    if (ch?.delta?.content) content += ch.delta.content;
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  expect(chunks >= 2, `only ${chunks} chunks`);
  expect(ids.size === 1, `chunk ids differ: ${[...ids]}`);
  checkSources(sources);
  expect(['stop', 'length'].includes(finish), `finish_reason: ${finish}`);
  expect(usage && usage.prompt_tokens > 0, `usage: ${short(usage)}`);
  const want = greedy.choices[0].message.content;
  expect(content === want, `streamed ${JSON.stringify(content)} != non-streamed ${JSON.stringify(want)}`);
  expect(finish === greedy.choices[0].finish_reason, 'finish_reason differs from the non-streamed one');
});

await check('stream aborted by the client, then a new request works', async () => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    ask({ stream: true, max_tokens: 1024, temperature: 2, seed: 5 }), { signal: controller.signal });
  let n = 0;
  try {
    for await (const _chunk of stream) {
      if (++n === 1) controller.abort();
    }
  } catch (e) {
    expect(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError',
      `unexpected error after abort: ${e.constructor.name}: ${e.message}`);
  }
  expect(n >= 1, 'no chunk before the abort');
  const c = await client.chat.completions.create(ask({ max_tokens: 4 }));
  expect(c.choices.length === 1, 'no answer after the aborted stream');
});

await check('models.list(): this collection, not the other', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    expect(m.object === 'model', `object: ${m.object}`);
    ids.push(m.id);
  }
  expect(ids.includes(COLLECTION), `${COLLECTION} not in ${JSON.stringify(ids)}`);
  expect(!ids.includes(OTHER), `${OTHER} should not be listed for this key: ${JSON.stringify(ids)}`);
});

await check('models.list(): documents and passages counts', async () => {
  const page = await client.models.list();
  const m = page.data.find((x) => x.id === COLLECTION);
  expect(m && Number.isInteger(m.documents) && Number.isInteger(m.passages),
    `model entry: ${short(m)}`);
});

await check('unknown model -> NotFoundError (404)', async () => {
  await expectError(() => client.chat.completions.create(ask({ model: 'no-such-collection-xyz' })),
    OpenAI.NotFoundError, 404);
});

await check('wrong key -> AuthenticationError (401)', async () => {
  const bad = new OpenAI({ baseURL: `${URL_}/v1`, apiKey: 'sk-wrong-key', maxRetries: 0, timeout: 30_000 });
  await expectError(() => bad.chat.completions.create(ask()), OpenAI.AuthenticationError, 401);
  await expectError(() => bad.models.list(), OpenAI.AuthenticationError, 401);
});

await check("other tenant's collection -> PermissionDeniedError (403)", async () => {
  await expectError(() => client.chat.completions.create(ask({ model: OTHER })),
    OpenAI.PermissionDeniedError, 403);
});

await check('temperature 5 -> BadRequestError (400) naming the param', async () => {
  const e = await expectError(() => client.chat.completions.create(ask({ temperature: 5 })),
    OpenAI.BadRequestError, 400);
  expect(e.param === 'temperature', `param: ${e.param}`);
  expect(e.type === 'invalid_request_error', `type: ${e.type}`);
});

await check('empty messages -> BadRequestError (400), also with stream: true', async () => {
  const e = await expectError(() => client.chat.completions.create(ask({ messages: [] })),
    OpenAI.BadRequestError, 400);
  expect(e.param === 'messages', `param: ${e.param}`);
  await expectError(() => client.chat.completions.create(ask({ stream: true, max_tokens: 0 })),
    OpenAI.BadRequestError, 400);
});

await check('n: 2 -> BadRequestError (400)', async () => {
  await expectError(() => client.chat.completions.create(ask({ n: 2 })), OpenAI.BadRequestError, 400);
});

await check('extension fields k, search_mode and compress pass through the client', async () => {
  const c = await client.chat.completions.create(ask({ max_tokens: 4, k: 2, search_mode: 'bm25', compress: false }));
  expect(c.compressed === false, `compressed: ${c.compressed}`);
  expect(c.sources.length >= 1 && c.sources.length <= 2, `sources for k=2: ${c.sources.length}`);
});

console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
