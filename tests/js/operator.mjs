// Drives the operator page (GET /) of a running Citadel in headless Chromium:
// connects, watches a sleep workflow succeed, cancels another from the page, checks the
// metrics and models panels, and takes a full-page screenshot.
//
//   node operator.mjs --url http://127.0.0.1:PORT [--screenshot PATH] [--token TOKEN]
//
// TOKEN (or $CITADEL_TOKEN) is only needed against a server that requires auth: it is put in
// sessionStorage for the page and sent as a bearer header on the REST submits.
// Exit 0 on success; exit 1 with the reason on stderr. A one-line JSON summary goes to stdout.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_MS = 60_000;

function parseArgs(argv) {
  const out = {
    url: null,
    screenshot: path.resolve(here, '../../target/test-artifacts/operator.png'),
    token: process.env.CITADEL_TOKEN || null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--url') out.url = value();
    else if (a === '--screenshot') out.screenshot = path.resolve(value());
    else if (a === '--token') out.token = value();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!out.url) throw new Error('--url http://127.0.0.1:PORT is required');
  out.url = out.url.replace(/\/+$/, '');
  return out;
}

// CSS attribute selector for a workflow row; JSON string quoting is valid CSS string quoting.
const row = (id) => `[data-workflow-id=${JSON.stringify(id)}]`;

async function submit(args, body) {
  const headers = { 'content-type': 'application/json' };
  if (args.token) headers.authorization = `Bearer ${args.token}`;
  const res = await fetch(`${args.url}/api/v1/workflows`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /api/v1/workflows answered ${res.status}: ${text.slice(0, 300)}`);
  let json;
  try { json = JSON.parse(text); } catch { throw new Error(`POST /api/v1/workflows: body is not JSON: ${text.slice(0, 300)}`); }
  if (!json || typeof json.id !== 'string' || !json.id) throw new Error(`POST /api/v1/workflows: no id in ${text.slice(0, 300)}`);
  return json.id;
}

// Wait for a selector, turning Playwright's timeout into a message that says what was awaited.
async function waitFor(page, selector, timeout, what) {
  try {
    await page.waitForSelector(selector, { state: 'attached', timeout });
  } catch (e) {
    const current = await page.evaluate((sel) => {
      const m = sel.match(/^\[data-workflow-id=("[^"]*")\]/);
      if (!m) return null;
      const r = document.querySelector(`[data-workflow-id=${m[1]}]`);
      return r ? `row state is ${r.getAttribute('data-state')}` : 'row not present';
    }, selector).catch(() => null);
    throw new Error(`timed out after ${timeout} ms waiting for ${what} (${selector})${current ? ': ' + current : ''}`);
  }
}

async function run(args, browser, problems, summary) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    else if (m.type() === 'warning') summary.console_warnings.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  if (args.token) await context.addInitScript((t) => sessionStorage.setItem('citadel_token', t), args.token);

  const res = await page.goto(`${args.url}/`, { waitUntil: 'load', timeout: 15_000 });
  if (!res || !res.ok()) throw new Error(`GET / answered ${res ? res.status() : 'nothing'}`);
  try {
    await page.waitForSelector('#connection[data-state="open"]', { state: 'attached', timeout: 15_000 });
  } catch {
    const state = await page.getAttribute('#connection', 'data-state').catch(() => null);
    throw new Error(`page never connected: #connection data-state is ${JSON.stringify(state)}`);
  }
  summary.connected = true;

  // Record, from inside the page, every workflow row that held a progress bar while it was
  // unfinished: the first workflow may finish before a poll from here would catch it running.
  await page.evaluate(() => {
    const seen = (window.__progressSeen = new Set());
    const scan = () => {
      for (const r of document.querySelectorAll('[data-workflow-id]')) {
        const s = r.getAttribute('data-state');
        if ((s === 'PENDING' || s === 'STARTED' || s === 'RETRY') && r.querySelector('progress, .progress')) {
          seen.add(r.getAttribute('data-workflow-id'));
        }
      }
    };
    new MutationObserver(scan).observe(document.body, { subtree: true, childList: true, attributes: true });
    scan();
  });

  // 1. A short sleep runs to SUCCESS and the page follows it.
  const id1 = await submit(args, { kind: 'sleep', params: { ms: 600, steps: 3 } });
  summary.workflow_success = id1;
  await waitFor(page, `${row(id1)}[data-state="SUCCESS"]`, 20_000, `workflow ${id1} to show SUCCESS`);
  summary.progress_seen = await page.evaluate((id) => window.__progressSeen.has(id), id1);

  // 2. A long sleep is cancelled from the page's own button.
  const id2 = await submit(args, { kind: 'sleep', params: { ms: 20_000, steps: 2 } });
  summary.workflow_cancelled = id2;
  await waitFor(page, row(id2), 10_000, `workflow ${id2} to appear`);
  const cancel = `${row(id2)} button[data-action="cancel"]`;
  try {
    await page.click(cancel, { timeout: 10_000 });
  } catch (e) {
    throw new Error(`could not click the cancel button of ${id2}: ${e.message.split('\n')[0]}`);
  }
  await waitFor(page, `${row(id2)}[data-state="CANCELLED"]`, 10_000, `workflow ${id2} to show CANCELLED`);
  summary.toast = ((await page.textContent('#toast')) || '').trim();

  // 3. Metrics and models panels.
  if (!(await page.$('#metrics'))) throw new Error('#metrics is missing');
  const plot = await page.$eval('#rate-plot', (e) => e.tagName.toLowerCase()).catch(() => null);
  if (plot !== 'canvas' && plot !== 'svg') throw new Error(`#rate-plot should be a canvas or svg, found ${plot}`);
  // Best effort: give the plots a couple of samples so the screenshot shows a line.
  await page.waitForFunction(() => Number(document.querySelector('#metrics').dataset.points) >= 2, null, { timeout: 3_000 })
    .catch(() => {});
  summary.metrics_points = Number(await page.getAttribute('#metrics', 'data-points')) || 0;
  try {
    await page.waitForSelector('#models tr[data-model]', { state: 'attached', timeout: 5_000 });
  } catch {
    throw new Error('the models table (#models) has no tr[data-model] row');
  }
  summary.models = await page.$$eval('#models tr[data-model]', (rows) => rows.map((r) => r.getAttribute('data-model')));
  summary.health = ((await page.textContent('#health')) || '').trim();

  fs.mkdirSync(path.dirname(args.screenshot), { recursive: true });
  await page.screenshot({ path: args.screenshot, fullPage: true });
  summary.screenshot = args.screenshot;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`operator.mjs: ${e.message}`);
    return 1;
  }
  const problems = [];
  const summary = { ok: false, url: args.url, connected: false, console_warnings: [] };
  let browser = null, timer = null;
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox', '--headless=new'],
    });
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`gave up after ${OVERALL_MS / 1000} s`)), OVERALL_MS);
    });
    await Promise.race([run(args, browser, problems, summary), deadline]);
  } catch (e) {
    // Playwright appends a call log to its messages; the first line says what went wrong.
    problems.unshift(String(e.message || e).split('\n')[0]);
  } finally {
    clearTimeout(timer);
    if (browser) await browser.close().catch(() => {});
  }
  summary.ok = problems.length === 0;
  if (!summary.ok) {
    summary.problems = problems;
    console.error('operator.mjs: FAILED');
    for (const p of problems) console.error(`  - ${p}`);
  }
  console.log(JSON.stringify(summary));
  return summary.ok ? 0 : 1;
}

process.exit(await main());
