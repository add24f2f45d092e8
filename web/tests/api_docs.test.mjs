// The interactive API docs in headless Chromium (Debian's package), driven by
// playwright-core, against a real `mailferry serve`: the vendored Swagger UI at /api/docs/
// opens without a token, renders every operation of /api/openapi.json under the server's
// CSP with no console error, and a "Try it out" of GET /api/v1/jobs after "Authorize" with
// a token reaches the API and answers 200.
// Run by crates/mailferry/tests/browser/main.rs, which sets BASE_URL, TOKEN (an admin
// token), CHROMIUM, FAILURE_DIR and USER_DATA_ROOT.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run these tests through cargo test -p mailferry --test browser`);
  return v;
};
const BASE = env('BASE_URL');
const TOKEN = env('TOKEN');
const FAILURES = env('FAILURE_DIR');
const USER_DATA_ROOT = env('USER_DATA_ROOT');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const T = { timeout: 120_000 };

/**
 * A fresh browser whose page records every problem: console errors (CSP refusals are
 * console errors), uncaught errors, failed requests and HTTP errors. `run` gets the page;
 * the test fails on any problem, with a screenshot.
 */
async function withPage(name, run) {
  const context = await chromium.launchPersistentContext(mkdtempSync(join(USER_DATA_ROOT, 'chromium-')), {
    executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()} (${msg.location().url})`);
  });
  page.on('requestfailed', (req) => problems.push(`request failed: ${req.method()} ${req.url()}: ${req.failure()?.errorText}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
  });
  try {
    await run(page);
    assert.deepEqual(problems, [], 'the browser saw no error');
  } catch (e) {
    mkdirSync(FAILURES, { recursive: true });
    const file = join(FAILURES, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    if (problems.length) e.message += `\nbrowser problems:\n  ${problems.join('\n  ')}`;
    e.message += `\nscreenshot: ${file}`;
    throw e;
  } finally {
    await context.close();
  }
}

/** Every operation of the published document, as Swagger UI lists them ("GET /path"). */
async function operations() {
  const res = await fetch(`${BASE}/api/openapi.json`); // no token: the document is public
  assert.equal(res.status, 200, 'GET /api/openapi.json without a token');
  const doc = await res.json();
  const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
  return Object.entries(doc.paths).flatMap(([path, item]) => methods.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path}`));
}

test('the dashboard\'s <noscript> link opens the docs, which list every operation', T, () => withPage('api-docs-render', async (page) => {
  // The link as a browser without JavaScript would follow it, read from the page's HTML.
  const html = await (await fetch(`${BASE}/`)).text();
  const href = /<noscript>.*?<a href="([^"]+)"/s.exec(html)?.[1];
  assert.ok(href, 'the dashboard has a <noscript> link');
  await page.goto(new URL(href, BASE).href);

  const expected = await operations();
  assert.ok(expected.includes('GET /api/v1/jobs'), 'the document lists GET /api/v1/jobs');
  const listed = page.locator('.opblock .opblock-summary');
  await listed.first().waitFor();
  await page.waitForFunction((n) => document.querySelectorAll('.opblock').length >= n, expected.length);
  const shown = await listed.evaluateAll((els) => els.map((el) => {
    const method = el.querySelector('.opblock-summary-method')?.textContent.trim();
    const path = el.querySelector('.opblock-summary-path')?.getAttribute('data-path');
    return `${method} ${path}`;
  }));
  assert.deepEqual([...shown].sort(), [...expected].sort(), 'Swagger UI lists exactly the document\'s operations');
  assert.equal(await page.locator('.info .title').first().textContent().then((t) => t.startsWith('mailferry')), true);
}));

test('"Authorize" with a token, then "Try it out" GET /api/v1/jobs answers 200', T, () => withPage('api-docs-try-it-out', async (page) => {
  await page.goto(`${BASE}/api/docs`); // without the slash: redirected to /api/docs/
  assert.equal(new URL(page.url()).pathname, '/api/docs/');

  await page.locator('.scheme-container button.authorize').click();
  const dialog = page.locator('.modal-ux');
  await dialog.locator('input').first().fill(TOKEN);
  await dialog.locator('button.modal-btn.authorize').click();
  // Authorized: the dialog offers to log out instead.
  await dialog.locator('button.modal-btn', { hasText: 'Logout' }).waitFor();
  await dialog.locator('button.btn-done').click();
  await dialog.waitFor({ state: 'detached' });

  const op = page.locator('.opblock-get').filter({ has: page.locator('.opblock-summary-path[data-path="/api/v1/jobs"]') });
  await op.locator('.opblock-summary').click();
  await op.locator('button.try-out__btn').click();
  const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/jobs' && r.request().method() === 'GET');
  await op.locator('button.execute').click();
  const res = await answered;
  assert.equal(res.status(), 200, 'the API answered the docs\' request');
  assert.equal((await res.request().allHeaders()).authorization, `Bearer ${TOKEN}`, 'Swagger UI sent the token as a bearer header');
  assert.ok(Array.isArray((await res.json()).items), 'a page of jobs');
  // And the page shows it, as a documented answer.
  const shown = op.locator('.live-responses-table tr.response .response-col_status');
  await shown.waitFor();
  assert.equal((await shown.textContent()).trim(), '200');
}));
