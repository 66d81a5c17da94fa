#!/usr/bin/env node
// The chat page (examples/chat/index.html) in headless Chromium, against a chat server.
//
//   node scripts/browser/chat-test.mjs http://127.0.0.1:PORT      # server + page checks
//   node scripts/browser/chat-test.mjs --page examples/chat/index.html   # page only
//
// Options: --chromium PATH (default $CHROMIUM or /usr/bin/chromium), --timeout SECONDS
// (whole run, default 60), --only server|page.
//
// Server checks (need the server at BASE): tabs A and B in room alpha and C in beta
// reach `open`; online counts from the join notices; a message from A reaches A and B,
// not C; one from C reaches only C; a burst arrives whole and in order (split on '\n'
// when the server coalesces); markup arrives as text; a 4096-byte message goes
// through; closing B sends a leave notice; a connection the server side drops is
// re-established (Playwright sits between page and server and cuts it).
//
// Page checks (the WebSocket is mocked by Playwright; with --page no server at all):
// the ws:// URL, notices vs. user text, coalesced frames, escaping, the 4096-byte limit
// counted in UTF-8 bytes, reconnect with growing backoff, switching rooms.
//
// Prints PASS/FAIL per check and a RESULT line; exits 0 when all pass, 1 when any
// fails or the run times out, 2 on bad usage or when the browser cannot start.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const MAX_BYTES = 4096;
const STATE_TIMEOUT = 10_000; // a tab reaching `open`
const DELIVERY_TIMEOUT = 5_000; // a message reaching a tab that should get it
const ABSENCE_WAIT = 2_000; // how long a tab that should not get a message is watched

// ---------------------------------------------------------------- arguments

function usage(msg) {
  if (msg) console.error(`chat-test: ${msg}`);
  console.error('usage: chat-test.mjs BASE_URL | --page FILE  [--chromium PATH] [--timeout S] [--only server|page]');
  process.exit(2);
}

const opts = {
  base: null,
  pageFile: null,
  chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  timeout: 60,
  only: null,
};
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    if (a === '--page') opts.pageFile = value();
    else if (a === '--chromium') opts.chromium = value();
    else if (a === '--timeout') opts.timeout = Number(value());
    else if (a === '--only') opts.only = value();
    else if (a === '-h' || a === '--help') usage();
    else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (!opts.base) opts.base = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!opts.base === !opts.pageFile) usage('give either BASE_URL or --page FILE');
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number');
  if (opts.only && !['server', 'page'].includes(opts.only)) usage('--only takes server or page');
  if (opts.pageFile && opts.only === 'server') usage('--page runs page checks only');
  if (opts.base) {
    let u;
    try { u = new URL(opts.base); } catch { usage(`not a URL: ${opts.base}`); }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') usage('BASE_URL must be http: or https:');
    opts.base = u.origin;
  }
}

// playwright-core lives in target/node/node_modules (scripts/test-all installs it there).
// ES modules ignore NODE_PATH, so look it up explicitly.
function loadPlaywright() {
  const require = createRequire(import.meta.url);
  const dirs = [
    process.env.RINGCAST_NODE_PATH,
    ...(process.env.NODE_PATH || '').split(path.delimiter),
    path.join(REPO, 'target', 'node', 'node_modules'),
  ].filter(Boolean);
  for (const dir of [...dirs, HERE]) {
    try {
      return require(require.resolve('playwright-core', { paths: [dir] }));
    } catch { /* next */ }
  }
  console.error('chat-test: cannot find playwright-core; run `bash scripts/test-all tools`'
    + ' or set NODE_PATH to a node_modules that has it');
  process.exit(2);
}

// ---------------------------------------------------------------- reporting

let passed = 0;
let failed = 0;
let browser = null;
let over = false; // set on the overall timeout: nothing more is reported

function pass(name) {
  if (over) return;
  passed++;
  console.log(`PASS ${name}`);
}

function fail(name, err) {
  if (over) return;
  failed++;
  const why = (err && err.message ? err.message : String(err)).split('\n')[0];
  console.log(`FAIL ${name}: ${why}`);
}

async function check(name, fn) {
  try {
    await fn();
    pass(name);
    return true;
  } catch (e) {
    fail(name, e);
    return false;
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

let closing = null;
function closeBrowser() {
  if (!browser) return Promise.resolve();
  closing ??= Promise.race([
    browser.close().catch(() => {}),
    new Promise((r) => setTimeout(r, 10_000)),
  ]);
  return closing;
}

async function finish(code) {
  await closeBrowser();
  // Exiting kills a browser that did not close (Playwright tracks its child).
  process.exit(code);
}

const overall = setTimeout(() => {
  fail('overall', new Error(`timed out after ${opts.timeout} s`));
  console.log(`RESULT: FAIL (timeout; ${passed} passed, ${failed} failed)`);
  over = true;
  finish(1);
}, opts.timeout * 1000);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (!over) console.log(`RESULT: FAIL (${sig})`);
    over = true;
    finish(1);
  });
}

// ---------------------------------------------------------------- page helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const token = (label) => `${label}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const pageErrors = [];

async function openTab(context, url, name) {
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket/.test(m.text())) pageErrors.push(`${name} console: ${m.text()}`);
  });
  page.tabName = name;
  if (url) await page.goto(url, { waitUntil: 'domcontentloaded', timeout: STATE_TIMEOUT });
  return page;
}

async function stateOf(page) {
  return page.$eval('#state', (e) => e.textContent);
}

async function waitState(page, expected, timeout = STATE_TIMEOUT) {
  const src = expected instanceof RegExp ? { re: expected.source } : { eq: expected };
  try {
    await page.waitForFunction(({ re, eq }) => {
      const t = document.getElementById('state')?.textContent ?? '';
      return re ? new RegExp(re).test(t) : t === eq;
    }, src, { timeout, polling: 20 });
  } catch {
    throw new Error(`${page.tabName}: #state is "${await stateOf(page)}", expected ${expected} within ${timeout} ms`);
  }
}

// Texts of the user messages in #log (each entry is a `.msg`; notices carry `.notice`).
async function userTexts(page) {
  return page.$$eval('#log > .msg.user .text', (els) => els.map((e) => e.textContent));
}

async function waitText(page, text, timeout = DELIVERY_TIMEOUT) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#log > .msg .text')].some((e) => e.textContent === t),
      text, { timeout, polling: 20 });
  } catch {
    throw new Error(`${page.tabName}: "${text.slice(0, 60)}" not in #log within ${timeout} ms`);
  }
}

// Watches the tabs for `wait` ms and fails as soon as one shows the text.
async function assertAbsent(pages, text, wait = ABSENCE_WAIT) {
  await Promise.all(pages.map(async (page) => {
    const shown = await page.waitForFunction(
      (t) => [...document.querySelectorAll('#log > .msg .text')].some((e) => e.textContent === t),
      text, { timeout: wait, polling: 20 }).then(() => true, () => false);
    assert(!shown, `${page.tabName} shows "${text.slice(0, 60)}" but is in another room`);
  }));
}

async function send(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

async function countOf(page) {
  return page.$eval('#count', (e) => e.textContent.trim());
}

async function waitCount(page, n, timeout = DELIVERY_TIMEOUT) {
  try {
    await page.waitForFunction((v) => document.getElementById('count')?.textContent.trim() === v,
      String(n), { timeout, polling: 20 });
  } catch {
    throw new Error(`${page.tabName}: online count is "${await countOf(page)}", expected ${n}`);
  }
}

async function noticeCounts(page, type) {
  return page.$$eval(`#log > .msg.notice[data-type="${type}"]`, (els) => els.map((e) => Number(e.dataset.count)));
}

// ---------------------------------------------------------------- server checks

async function serverChecks(context) {
  const base = opts.base;

  await check('GET / serves the chat page', async () => {
    const res = await fetch(`${base}/`, { signal: AbortSignal.timeout(5000) });
    assert(res.status === 200, `status ${res.status}`);
    const type = res.headers.get('content-type') || '';
    assert(type.startsWith('text/html'), `content-type "${type}"`);
    const body = await res.text();
    assert(body.includes('id="state"') && body.includes('id="log"'), 'body is not the chat page');
  });

  // Opened one after another, so the join notices have a known order.
  const A = await openTab(context, `${base}/?room=alpha`, 'A(alpha)');
  const okA = await check('tab A (alpha) reaches open', () => waitState(A, 'open'));
  const B = await openTab(context, `${base}/?room=alpha`, 'B(alpha)');
  const okB = await check('tab B (alpha) reaches open', () => waitState(B, 'open'));
  const C = await openTab(context, `${base}/?room=beta`, 'C(beta)');
  const okC = await check('tab C (beta) reaches open', () => waitState(C, 'open'));
  if (!(okA && okB && okC)) {
    fail('server checks', new Error('skipped: not every tab connected'));
    return;
  }

  await check('online count: 2 in alpha (A and B), 1 in beta (C)', async () => {
    await Promise.all([waitCount(A, 2), waitCount(B, 2), waitCount(C, 1)]);
    const joins = await noticeCounts(A, 'join');
    assert(joins.includes(2), `A's join notices show counts [${joins}], expected one with 2`);
  });

  const fromA = token('from-A');
  await check('message from A reaches A and B', async () => {
    await send(A, fromA);
    await Promise.all([waitText(A, fromA), waitText(B, fromA)]);
  });
  await check('message from A does not reach C (other room)', () => assertAbsent([C], fromA));

  const fromC = token('from-C');
  await check('message from C reaches C only', async () => {
    await send(C, fromC);
    await waitText(C, fromC);
    await assertAbsent([A, B], fromC);
  });

  await check('a burst of 3 from B reaches A whole and in order', async () => {
    const burst = [token('burst1'), token('burst2'), token('burst3')];
    // One task: the three sends leave back to back, so a coalescing server joins them.
    await B.evaluate((texts) => {
      const input = document.getElementById('input');
      const form = input.form;
      for (const t of texts) { input.value = t; form.requestSubmit(); }
    }, burst);
    await waitText(A, burst[2]);
    const got = (await userTexts(A)).filter((t) => burst.includes(t));
    assert(JSON.stringify(got) === JSON.stringify(burst), `A shows [${got}]`);
  });

  await check('markup in a message is shown as text', async () => {
    const evil = `<img src=x onerror="window.__xss=1"><b>${token('bold')}</b>`;
    await send(A, evil);
    await waitText(B, evil);
    const tags = await B.$$eval('#log img, #log b, #log script', (els) => els.length);
    assert(tags === 0, `B's #log has ${tags} elements from message markup`);
    assert(await B.evaluate(() => window.__xss === undefined), 'script from a message ran');
  });

  await check(`a ${MAX_BYTES}-byte message goes through`, async () => {
    const head = token('big');
    const big = head + '.'.repeat(MAX_BYTES - head.length);
    await send(A, big);
    await waitText(B, big);
  });

  await check('closing B sends a leave notice: A shows 1 online', async () => {
    await B.close();
    await waitCount(A, 1);
    const leaves = await noticeCounts(A, 'leave');
    assert(leaves.includes(1), `A's leave notices show counts [${leaves}]`);
  });

  // Playwright relays D's WebSocket to the server and can cut it, which the page sees
  // as the server closing the connection.
  await check('reconnect after the server side drops the connection', async () => {
    const conns = [];
    const D = await openTab(context, null, 'D(gamma)');
    await D.routeWebSocket(/\/ws(\?|$)/, (ws) => {
      const server = ws.connectToServer();
      conns.push({ ws, server });
    });
    await D.goto(`${base}/?room=gamma`, { waitUntil: 'domcontentloaded' });
    await waitState(D, 'open');
    await waitCount(D, 1);
    conns[0].ws.close({ code: 1012, reason: 'restart' });
    conns[0].server.close({ code: 1001, reason: 'test cut' });
    await waitState(D, /^closed — reconnecting in \d+s$/, 3000);
    await waitState(D, 'open', 5000);
    assert(conns.length === 2, `${conns.length} connections, expected 2`);
    const again = token('after-reconnect');
    await send(D, again);
    await waitText(D, again);
    await D.close();
  });
}

// ---------------------------------------------------------------- page checks

// Per page, the mocked connections in order; each records what the page sent.
async function mockedTab(context, base, room, name) {
  const page = await openTab(context, null, name);
  const conns = [];
  page.conns = conns;
  page.nextConn = (timeout = 5000) => new Promise((resolve, reject) => {
    const have = conns.length;
    const started = Date.now();
    const poll = () => {
      if (conns.length > have) resolve(conns[have]);
      else if (Date.now() - started > timeout) reject(new Error(`${name}: no new connection within ${timeout} ms`));
      else setTimeout(poll, 10);
    };
    poll();
  });
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    const conn = { ws, sent: [], at: Date.now(), url: ws.url() };
    ws.onMessage((m) => conn.sent.push(m));
    conns.push(conn);
  });
  await page.goto(`${base}/?room=${encodeURIComponent(room)}`, { waitUntil: 'domcontentloaded' });
  return page;
}

async function pageChecks(context, base) {
  const room = 'mock room ü';
  const M = await mockedTab(context, base, room, 'M(mock)');
  if (!await check('page: reaches open (mocked socket)', () => waitState(M, 'open'))) return;
  const conn = M.conns[0];
  const host = new URL(base).host;
  const wsProto = base.startsWith('https:') ? 'wss:' : 'ws:';

  await check('page: ws URL from location, room from ?room=', async () => {
    const want = `${wsProto}//${host}/ws?room=${encodeURIComponent(room)}`;
    assert(conn.url === want, `URL ${conn.url}, expected ${want}`);
    const shown = await M.$eval('#room', (e) => e.value);
    assert(shown === room, `#room shows "${shown}"`);
  });

  await check('page: join/leave notices set the online count, other JSON is text', async () => {
    conn.ws.send(JSON.stringify({ type: 'join', room, count: 5 }));
    await waitCount(M, 5);
    conn.ws.send(JSON.stringify({ type: 'leave', room, count: 4 }));
    await waitCount(M, 4);
    const other = JSON.stringify({ type: 'join', room: 'elsewhere', count: 99 });
    const odd = '{"type":"shout","count":1}';
    const broken = '{"type":"join",';
    conn.ws.send(other);
    conn.ws.send(odd);
    conn.ws.send(broken);
    await waitText(M, broken);
    const texts = await userTexts(M);
    for (const t of [other, odd, broken]) assert(texts.includes(t), `"${t}" not shown as text`);
    assert(await countOf(M) === '4', `count changed to ${await countOf(M)} by a non-notice`);
    const joins = await noticeCounts(M, 'join');
    assert(joins.join() === '5', `join notices [${joins}]`);
  });

  await check('page: a frame with several lines is several messages', async () => {
    const [a, b, c] = [token('l1'), token('l2'), token('l3')];
    conn.ws.send(`${a}\n${b}\n${c}`);
    await waitText(M, c);
    const texts = await userTexts(M);
    const i = texts.indexOf(a);
    assert(i >= 0 && texts[i + 1] === b && texts[i + 2] === c, `got [${texts.slice(i)}]`);
    const stamps = await M.$$eval('#log > .msg .time', (els) => els.every((e) => /\d/.test(e.textContent)));
    assert(stamps, 'an entry without a timestamp');
  });

  await check('page: markup from the server is text', async () => {
    const evil = `<img src=x onerror="window.__xss=2"><script>window.__xss=3</script>${token('x')}`;
    conn.ws.send(evil);
    await waitText(M, evil);
    const tags = await M.$$eval('#log img, #log script', (els) => els.length);
    assert(tags === 0 && await M.evaluate(() => window.__xss === undefined), 'markup was interpreted');
  });

  await check('page: Enter sends the text unchanged and clears the input', async () => {
    const t = `  ${token('typed')} ünïcödé  `;
    await send(M, t);
    const deadline = Date.now() + 2000;
    while (!conn.sent.includes(t) && Date.now() < deadline) await sleep(10);
    assert(conn.sent.includes(t), `page sent [${conn.sent.map((s) => JSON.stringify(s))}]`);
    assert(await M.$eval('#input', (e) => e.value) === '', 'input not cleared');
    const t2 = token('clicked');
    await M.fill('#input', t2);
    await M.click('#send');
    while (!conn.sent.includes(t2) && Date.now() < deadline + 2000) await sleep(10);
    assert(conn.sent.includes(t2), '#send click did not send');
  });

  await check(`page: refuses input over ${MAX_BYTES} UTF-8 bytes and says so`, async () => {
    const before = conn.sent.length;
    for (const tooLong of ['a'.repeat(MAX_BYTES + 1), '€'.repeat(1366) /* 4098 bytes */]) {
      await send(M, tooLong);
      await M.waitForFunction(() => /too long/i.test(document.getElementById('error').textContent),
        null, { timeout: 2000 });
      assert(await M.$eval('#input', (e) => e.value) === tooLong, 'refused input was cleared');
    }
    const exact = '€'.repeat(1365) + 'a'; // 4096 bytes
    await send(M, exact);
    const deadline = Date.now() + 2000;
    while (conn.sent.length === before && Date.now() < deadline) await sleep(10);
    assert(conn.sent.length === before + 1 && conn.sent[before] === exact,
      `sent ${conn.sent.length - before} messages, expected just the ${MAX_BYTES}-byte one`);
    assert(await M.$eval('#error', (e) => e.textContent) === '', 'error not cleared after a good send');
  });

  await check('page: reconnects with a growing, jittered backoff', async () => {
    // 1st retry waits 0.5–1 s; the connection then drops at once (not stable), so the
    // 2nd waits 1–2 s.
    let current = M.conns[M.conns.length - 1];
    const delays = [];
    for (let i = 0; i < 2; i++) {
      const next = M.nextConn(5000);
      const closedAt = Date.now();
      current.ws.close({ code: 1012, reason: 'restart' });
      await waitState(M, /^closed — reconnecting in \d+s$/, 2000);
      current = await next;
      delays.push(current.at - closedAt);
      await waitState(M, 'open', 3000);
    }
    assert(delays[0] >= 400 && delays[0] <= 1600, `1st retry after ${delays[0]} ms, expected 500–1000`);
    assert(delays[1] >= 900 && delays[1] <= 2600, `2nd retry after ${delays[1]} ms, expected 1000–2000`);
    const sentNow = current.sent.length;
    const t = token('after-retry');
    await send(M, t);
    const deadline = Date.now() + 2000;
    while (current.sent.length === sentNow && Date.now() < deadline) await sleep(10);
    assert(current.sent.includes(t), 'nothing sent on the new connection');
    console.log(`     (retry delays ${delays.join(' ms, ')} ms)`);
  });

  await check('page: while closed, sending is refused with a message', async () => {
    const current = M.conns[M.conns.length - 1];
    const next = M.nextConn(5000);
    current.ws.close({ code: 1001 });
    await waitState(M, /^closed/, 2000);
    await send(M, 'not now');
    await M.waitForFunction(() => /not connected/i.test(document.getElementById('error').textContent),
      null, { timeout: 2000 });
    assert(!current.sent.includes('not now'), 'sent on a closed socket');
    await next;
    await waitState(M, 'open', 3000);
  });

  await check('page: switching rooms reconnects to the new room', async () => {
    const next = M.nextConn(5000);
    await M.fill('#room', 'other');
    await M.press('#room', 'Enter');
    const conn2 = await next;
    const want = `${wsProto}//${host}/ws?room=other`;
    assert(conn2.url === want, `URL ${conn2.url}, expected ${want}`);
    await waitState(M, 'open');
    const q = await M.evaluate(() => new URL(location.href).searchParams.get('room'));
    assert(q === 'other', `location ?room= is "${q}"`);
    assert((await userTexts(M)).length === 0, 'old room messages kept in the log');
  });

  await M.close();
}

// ---------------------------------------------------------------- main

async function main() {
  const { chromium } = loadPlaywright();
  try {
    browser = await chromium.launch({
      executablePath: opts.chromium,
      headless: true,
      // Root in a container: no sandbox. Small /dev/shm: use /tmp.
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
      timeout: 30_000,
    });
  } catch (e) {
    console.log(`FAIL launch ${opts.chromium}: ${e.message.split('\n')[0]}`);
    console.log('RESULT: FAIL (no browser)');
    clearTimeout(overall);
    process.exit(2);
  }
  console.log(`chromium ${browser.version()} (${opts.chromium})`);
  // An https base is the chat server's own TLS with the test's self-signed certificate:
  // trusted here, in the test only.
  const context = await browser.newContext({
    ignoreHTTPSErrors: Boolean(opts.base && opts.base.startsWith('https:')),
  });

  let pageBase = opts.base;
  if (opts.pageFile) {
    // No server: the page is served by Playwright from the file, its socket is mocked.
    pageBase = 'http://chat.test';
    const html = readFileSync(opts.pageFile, 'utf8');
    await context.route(`${pageBase}/**`, (route) => {
      const u = new URL(route.request().url());
      if (u.pathname === '/') route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: html });
      else route.fulfill({ status: 404, body: 'not found' });
    });
  }

  if (opts.base && opts.only !== 'page') await serverChecks(context);
  if (opts.only !== 'server') await pageChecks(context, pageBase);

  await check('no script errors in any tab', async () => {
    assert(pageErrors.length === 0, pageErrors.join('; '));
  });
}

main().then(
  () => {
    clearTimeout(overall);
    if (over) return undefined;
    const total = passed + failed;
    console.log(failed === 0
      ? `RESULT: PASS (${total} checks)`
      : `RESULT: FAIL (${failed} of ${total} checks failed)`);
    return finish(failed === 0 ? 0 : 1);
  },
  (e) => {
    clearTimeout(overall);
    if (over) return undefined;
    fail('run', e);
    console.log(`RESULT: FAIL (${e.message.split('\n')[0]})`);
    return finish(1);
  },
);
