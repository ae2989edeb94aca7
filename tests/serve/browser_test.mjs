// Headless-browser test of the `cocom serve` web page (serve/web/index.html, served at `/`).
//
//   cd tests/serve && npm install
//   COCOM_URL=http://127.0.0.1:8080 COCOM_COLLECTION=docs [COCOM_API_KEY=sk-...] \
//   [COCOM_QUESTION="..."] [COCOM_SCREENSHOT=/tmp/page.png] node browser_test.mjs
//
// It asks one question compressed and one uncompressed through the page, as a person would,
// and checks the streamed answer, the numbered sources, the timings and that no error shows.
// Exit 0 on success, 1 with a message (and the page's #error and console errors) on failure.
import { chromium } from 'playwright-core';

const BASE = (process.env.COCOM_URL || '').replace(/\/+$/, '');
const COLLECTION = process.env.COCOM_COLLECTION || '';
const API_KEY = process.env.COCOM_API_KEY || '';
const QUESTION = process.env.COCOM_QUESTION || 'What is the homepage of the package?';
const SCREENSHOT = process.env.COCOM_SCREENSHOT || '';
const ANSWER_TIMEOUT_MS = 120_000;

if (!BASE || !COLLECTION) {
  console.error('browser_test: set COCOM_URL (e.g. http://127.0.0.1:8080) and COCOM_COLLECTION');
  process.exit(1);
}

class TestFailure extends Error {}
function check(ok, message) {
  if (!ok) throw new TestFailure(message);
}

const consoleErrors = [];
let browser;
let page;
let failed = false;

const text = (selector) => page.locator(selector).innerText();
const state = () => page.evaluate(() => document.body.dataset.state);

// Asks QUESTION through the page (clicking Ask, or pressing Enter) and checks the result.
async function ask(compressed, how) {
  await page.setChecked('#compressed', compressed);
  await page.fill('#max-tokens', '64');
  await page.fill('#question', QUESTION);
  // Record every state the page goes through from here on, to see that this ask streamed.
  await page.evaluate(() => {
    window.__states = [];
    new MutationObserver(() => window.__states.push(document.body.dataset.state))
      .observe(document.body, { attributes: true, attributeFilter: ['data-state'] });
  });
  if (how === 'enter') await page.press('#question', 'Enter');
  else await page.click('#ask');
  const label = compressed ? 'compressed' : 'uncompressed';
  await page.waitForFunction(() => ['streaming', 'done', 'error'].includes(document.body.dataset.state),
    null, { timeout: ANSWER_TIMEOUT_MS });
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state),
    null, { timeout: ANSWER_TIMEOUT_MS });
  const final = await state();
  const seen = await page.evaluate(() => window.__states);
  check(seen.includes('streaming'), `${label}: the page never entered "streaming" (states: ${seen})`);
  check(final === 'done', `${label}: the page ended in state "${final}", not "done"`);

  const error = (await text('#error')).trim();
  check(error === '', `${label}: #error shows: ${error}`);
  const answer = (await text('#answer')).trim();
  check(answer !== '', `${label}: #answer is empty`);

  const sources = await page.locator('#sources li.source').allInnerTexts();
  check(sources.length >= 1, `${label}: no li.source in #sources`);
  sources.forEach((s, i) => check(s.trim() !== '', `${label}: source ${i + 1} has no text`));

  const timings = (await text('#timings')).trim();
  check(timings !== '', `${label}: #timings is empty`);
  check(/prefill/i.test(timings) && /decode/i.test(timings) && /tokens\/s/.test(timings),
    `${label}: #timings lacks prefill/decode/tokens/s: ${timings}`);
  const uncompressed = /uncompressed/i.test(timings);
  check(uncompressed === !compressed,
    `${label}: #timings should say ${compressed ? 'compressed' : 'uncompressed'}: ${timings}`);
  console.log(`ok ${label}: ${answer.length} chars, ${sources.length} sources; ` +
    `answer: ${JSON.stringify(answer.slice(0, 80))}; timings: ${timings.replace(/\s+/g, ' ')}`);
}

try {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1000, height: 1000 } });
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));

  const res = await page.goto(BASE + '/', { waitUntil: 'load', timeout: 30_000 });
  check(res && res.ok(), `GET / answered ${res ? res.status() : 'nothing'}`);
  check(await page.locator('#collection').count() === 1, 'the page has no #collection');

  // With a key, typing it reloads the collections (the first load, without it, may answer 401).
  if (API_KEY) await page.fill('#api-key', API_KEY);
  try {
    await page.waitForFunction((name) => document.body.dataset.models === 'ready' &&
      [...document.querySelectorAll('#collection option')].some((o) => o.value === name),
    COLLECTION, { timeout: 30_000 });
  } catch (e) {
    const options = await page.locator('#collection option').evaluateAll((os) => os.map((o) => o.value));
    throw new TestFailure(`collection "${COLLECTION}" never appeared in #collection ` +
      `(options: ${JSON.stringify(options)})`);
  }
  await page.selectOption('#collection', COLLECTION);

  await ask(true, 'click');
  await ask(false, 'enter');
  console.log('browser_test: PASS');
} catch (e) {
  failed = true;
  console.error(`browser_test: FAIL: ${e instanceof TestFailure ? e.message : (e && e.stack) || e}`);
  if (page) {
    const error = await page.locator('#error').innerText().catch(() => '');
    const st = await state().catch(() => '?');
    console.error(`  page state: ${st}`);
    console.error(`  #error: ${error.trim() || '(empty)'}`);
  }
  for (const c of consoleErrors) console.error(`  console: ${c}`);
} finally {
  if (page && SCREENSHOT) {
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
      .then(() => console.log(`screenshot: ${SCREENSHOT}`))
      .catch((e) => console.error(`screenshot failed: ${e.message}`));
  }
  if (browser) await browser.close().catch(() => {});
}
process.exit(failed ? 1 : 0);
