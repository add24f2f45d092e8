// The dashboard in headless Chromium (Debian's package, never a downloaded browser),
// driven by playwright-core, against a real `mailferry serve` and the lab Dovecot.
// Run by crates/mailferry/tests/browser/main.rs, which sets:
//   BASE_URL, TOKEN                 the server and an admin token
//   LAB_HOST, POP3S_PORT, IMAPS_PORT, SRC_PW, DST_PW, LAB_CA_FILE   the lab mailboxes
//   SCREENSHOT_DIR, FAILURE_DIR, USER_DATA_ROOT, CHROMIUM
// Every test fails on a console error, an uncaught page error, a failed request or an
// HTTP error response that it did not announce with `expectStatus`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicKey, verify } from 'node:crypto';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run these tests through cargo test -p mailferry --test browser`);
  return v;
};
const BASE = env('BASE_URL');
const TOKEN = env('TOKEN');
const LAB = { host: env('LAB_HOST'), pop3s: Number(env('POP3S_PORT')), imaps: Number(env('IMAPS_PORT')), srcPw: env('SRC_PW'), dstPw: env('DST_PW') };
const SHOTS = env('SCREENSHOT_DIR');
const FAILURES = env('FAILURE_DIR');
const USER_DATA_ROOT = env('USER_DATA_ROOT');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The API, straight from node (for setup and for checking what the page claims). */
async function api(path, init = {}) {
  const res = await fetch(`${BASE}/api/v1${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json', ...(init.headers || {}) },
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

function jobBody(src, dst, labels = {}) {
  return {
    source: { protocol: 'pop3', host: LAB.host, port: LAB.pop3s, security: 'tls', username: src, password: LAB.srcPw },
    target: { protocol: 'imap', host: LAB.host, port: LAB.imaps, security: 'tls', username: dst, password: LAB.dstPw, folder: 'INBOX' },
    labels,
  };
}

/**
 * A fresh browser (own user-data-dir) with a page that records every problem; `run`
 * gets {page, expectStatus}. Screenshots the page when `run` throws.
 */
async function withPage(name, run, { viewport = { width: 1280, height: 900 }, colorScheme = 'light' } = {}) {
  const userDataDir = mkdtempSync(join(USER_DATA_ROOT, 'chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: ARGS, viewport, colorScheme, acceptDownloads: true,
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  const expected = []; // [{status, path}] the test announced
  const isExpected = (status, url) => expected.some((e) => e.status === status && new URL(url).pathname === e.path);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // Chromium logs every HTTP error response; those are judged by the response handler.
    const m = /status of (\d+)/.exec(msg.text());
    if (m && isExpected(Number(m[1]), msg.location().url)) return;
    problems.push(`console error: ${msg.text()} (${msg.location().url})`);
  });
  page.on('requestfailed', (req) => {
    const why = req.failure() ? req.failure().errorText : 'failed';
    // The page aborts its own event streams and in-flight reads when it leaves a view.
    if (why === 'net::ERR_ABORTED' && new URL(req.url()).pathname.startsWith('/api/v1/')) return;
    problems.push(`request failed: ${req.method()} ${req.url()}: ${why}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400 && !isExpected(res.status(), res.url())) {
      problems.push(`unexpected HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
    }
  });
  const expectStatus = (status, path) => expected.push({ status, path });
  try {
    await run({ page, expectStatus });
    assert.deepEqual(problems, [], 'the browser saw no error');
  } catch (e) {
    mkdirSync(FAILURES, { recursive: true });
    const file = join(FAILURES, `${name.replace(/\W+/g, '-')}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    if (problems.length) e.message += `\nbrowser problems:\n  ${problems.join('\n  ')}`;
    e.message += `\nscreenshot: ${file}`;
    throw e;
  } finally {
    await context.close();
  }
}

async function signIn(page) {
  await page.goto(`${BASE}/`);
  await page.getByLabel('API token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
}

const T = { timeout: 180_000 };

/** The fields an Ed25519 receipt signature covers, in their canonical order. */
const RECEIPT_HEADER = ['format', 'job', 'run', 'source', 'target', 'outcome', 'started_at', 'finished_at', 'signed_at', 'counts', 'merkle_root', 'archive_chain_head'];

/** Whether `receipt.signature` verifies over its header's canonical bytes (compact JSON). */
function receiptSignatureVerifies(receipt, publicKeyBase64) {
  const header = JSON.stringify(Object.fromEntries(RECEIPT_HEADER.map((k) => [k, receipt[k]])));
  // A raw 32-byte Ed25519 key as SPKI DER (RFC 8410): fixed prefix, then the key.
  const der = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(publicKeyBase64, 'base64')]);
  const key = createPublicKey({ key: der, format: 'der', type: 'spki' });
  return verify(null, Buffer.from(header), key, Buffer.from(receipt.signature, 'base64'));
}

test('sign in with a token, reject a bad one, sign out', T, () => withPage('sign-in', async ({ page, expectStatus }) => {
  expectStatus(401, '/api/v1/jobs');
  await page.goto(`${BASE}/`);
  const tokenInput = page.getByLabel('API token');
  await tokenInput.fill('mf_not-a-real-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'the bearer token is not valid' }).waitFor();

  await tokenInput.fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('mailferry.token')), TOKEN, 'kept in session storage');
  assert.ok(!(await page.content()).includes(TOKEN), 'the token is not shown on the page');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('mailferry.token')), null, 'forgotten on sign-out');
}));

test('create a job from the form and watch its progress bar reach 100% live', T, () => withPage('create-job', async ({ page, expectStatus }) => {
  await signIn(page);
  await page.getByRole('link', { name: 'New job' }).click();
  await page.getByRole('heading', { name: 'New job' }).waitFor();

  // First a mistake: the API's field errors appear next to their fields.
  expectStatus(422, '/api/v1/jobs');
  const source = page.getByRole('group', { name: 'Source (POP3)' });
  const target = page.getByRole('group', { name: 'Target', exact: true });
  await source.getByLabel('Host').fill(LAB.host);
  await source.getByLabel('Port').fill('70000');
  await source.getByLabel('Username').fill('src');
  await page.getByRole('button', { name: 'Create job' }).click();
  const portError = page.locator('#' + (await source.getByLabel('Port').getAttribute('id')) + '-err');
  await assertText(portError, 'source.port must be between 1 and 65535');
  const pwId = await source.getByLabel('Password').getAttribute('id');
  await assertText(page.locator(`#${pwId}-err`), 'source.password is required');
  assert.equal(await source.getByLabel('Password').getAttribute('aria-invalid'), 'true');
  await page.getByRole('alert').filter({ hasText: 'the job is invalid' }).waitFor();

  // Then the real thing: implicit TLS to the lab, trusted through the server's CA file.
  await source.getByLabel('Port').fill(String(LAB.pop3s));
  await source.getByLabel('Security').selectOption('tls');
  await source.getByLabel('Password').fill(LAB.srcPw);
  await target.getByLabel('Host').fill(LAB.host);
  await target.getByLabel('Port').fill(String(LAB.imaps));
  await target.getByLabel('Username').fill('dst');
  await target.getByLabel('Password').fill(LAB.dstPw);
  await page.getByLabel('Labels').fill('wave=1\nteam=ui');
  await page.getByRole('button', { name: 'Create job' }).click();
  await page.waitForURL(/#\/jobs\/\d+$/);
  const id = Number(new URL(page.url()).hash.split('/').pop());
  await page.getByRole('heading', { name: `Job #${id}` }).waitFor();
  assert.equal(await page.locator('.field-error:not([hidden])').count(), 0);

  // Watch it live: no reload (the marker survives), and the bar passes through values
  // below 100% before it gets there.
  await page.evaluate(() => {
    window.__noReload = true;
    window.__seen = new Set();
    const watch = () => {
      const p = document.querySelector('.card .progress');
      if (p) window.__seen.add(p.dataset.pct);
    };
    new MutationObserver(watch).observe(document.getElementById('main'), { subtree: true, childList: true, attributes: true });
    watch();
  });
  const bar = page.locator(`.card .progress[data-job="${id}"]`);
  await bar.and(page.locator('[data-pct="100"]')).waitFor({ timeout: 120_000 });
  await page.locator('.title-row .badge', { hasText: 'succeeded' }).waitFor({ timeout: 30_000 });
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  const seen = await page.evaluate(() => [...window.__seen]);
  assert.ok(seen.some((p) => Number(p) < 100), `progress was seen below 100% first: ${seen}`);
  assert.match(await bar.locator('.progress-label').textContent(), /200 \/ 200 copied/);

  const job = (await api(`/jobs/${id}`)).body;
  assert.equal(job.state, 'succeeded');
  assert.equal(job.counts.copied, 200);

  // The ledger, page by page (50 rows a page), and the report download.
  await page.locator('table.ledger tbody tr').first().waitFor();
  assert.equal(await page.locator('table.ledger tbody tr').count(), 50);
  await page.getByRole('navigation', { name: 'Ledger pages' }).getByRole('button', { name: 'Next page →' }).click();
  await page.getByText('Page 2').waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
  const csv = readFileSync(await download.path(), 'utf8');
  assert.equal(csv.trim().split('\n').length, 201, 'header + one row per message');
  assert.equal(download.suggestedFilename(), `job-${id}-report.csv`);

  // The signed receipt, downloaded with the token, and checked here with node's own
  // Ed25519 against the key the API publishes (not the one inside the receipt).
  const [receiptDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Receipt (signed JSON)' }).click()]);
  assert.equal(receiptDownload.suggestedFilename(), `job-${id}-receipt.json`);
  const receipt = JSON.parse(readFileSync(await receiptDownload.path(), 'utf8'));
  assert.equal(receipt.format, 'mailferry-receipt/1');
  assert.equal(receipt.job, id);
  assert.equal(receipt.outcome, 'succeeded');
  assert.equal(receipt.entries.length, 200);
  assert.equal(receipt.counts.entries, 200);
  const published = await api('/receipts/public-key');
  assert.equal(published.status, 200);
  assert.equal(published.body.algorithm, 'ed25519');
  assert.equal(receipt.public_key, published.body.public_key);
  assert.ok(receiptSignatureVerifies(receipt, published.body.public_key), 'the signature verifies with the published key');
  assert.ok(!receiptSignatureVerifies({ ...receipt, outcome: 'partial' }, published.body.public_key), 'and not over a changed header');

  // In the jobs table, filtered by label, with its bar at 100%.
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await page.getByLabel('Label').fill('team:ui');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator(`tr[data-job="${id}"] .progress[data-pct="100"]`).waitFor();
  assert.equal(await page.locator('table.jobs tbody tr').count(), 1);
}));

test('upload a CSV batch with one bad row: its error is shown and nothing is created', T, () => withPage('csv-batch', async ({ page, expectStatus }) => {
  await signIn(page);
  const before = (await api('/jobs?limit=500')).body.items.length;
  const header = 'source_host,source_port,source_security,source_user,source_password,target_host,target_port,target_security,target_user,target_password,labels';
  const row = (u, port = LAB.pop3s) => `${LAB.host},${port},tls,${u},${LAB.srcPw},${LAB.host},${LAB.imaps},tls,${u}dst,${LAB.dstPw},wave=2`;
  const dir = mkdtempSync(join(USER_DATA_ROOT, 'csv-'));
  const bad = join(dir, 'bad.csv');
  writeFileSync(bad, [header, row('b1'), row('b2', 'pop3-port'), ''].join('\n'));

  expectStatus(422, '/api/v1/batches');
  await page.getByRole('link', { name: 'Batches' }).click();
  await page.getByLabel('CSV file').setInputFiles(bad);
  await page.getByLabel('Batch name (optional)').fill('browser wave');
  await page.getByRole('button', { name: 'Check mailboxes' }).click();
  const errorRow = page.locator('table.row-errors tr[data-row="2"]');
  await errorRow.waitFor();
  assert.match(await errorRow.textContent(), /Row 2.*source_port.*must be a number/);
  assert.equal(await page.locator('table.row-errors tbody tr').count(), 1, 'only the bad row is listed');
  await page.getByRole('alert').filter({ hasText: 'nothing was created' }).waitFor();
  assert.equal((await api('/jobs?limit=500')).body.items.length, before, 'no job was created');

  // Fixed, it goes through and the batch view shows its aggregate progress.
  const good = join(dir, 'good.csv');
  writeFileSync(good, [header, row('b1'), row('b2'), ''].join('\n'));
  await page.getByLabel('CSV file').setInputFiles(good);
  // Preflight first (issue 17): each mailbox's verdict and the totals, nothing created yet.
  await page.getByRole('button', { name: 'Check mailboxes' }).click();
  await page.locator('table.preflight tr[data-row="2"][data-verdict="ready"]').waitFor();
  assert.equal(await page.locator('table.preflight tbody tr').count(), 2);
  assert.match(await page.locator('.preflight-totals').textContent(), /10 messages/);
  assert.equal((await api('/jobs?limit=500')).body.items.length, before, 'the preflight created no job');
  await page.getByRole('button', { name: 'Upload and create jobs' }).click();
  await page.waitForURL(/#\/batches\/\d+$/);
  await page.getByRole('heading', { name: /^Batch #\d+$/ }).waitFor();
  await page.locator('.card .progress[data-pct="100"]').first().waitFor({ timeout: 60_000 });
  assert.match(await page.locator('.card .progress-label').first().textContent(), /10 \/ 10 copied/);
  assert.equal(await page.locator('table tbody tr[data-job]').count(), 2);

  // The batch list (GET /batches) shows it first, named, with its aggregate progress.
  const batchId = page.url().match(/#\/batches\/(\d+)$/)[1];
  await page.getByRole('link', { name: '← All batches' }).click();
  const listed = page.locator(`table.batches tr[data-batch="${batchId}"]`);
  await listed.waitFor();
  assert.equal(await page.locator('table.batches tbody tr').first().getAttribute('data-batch'), batchId, 'newest first');
  assert.match(await listed.innerText(), /browser wave/);
  await listed.locator('.progress[data-pct="100"]').waitFor();
}));

test('cancel a running job after confirming', T, () => withPage('cancel', async ({ page }) => {
  const created = await api('/jobs', { method: 'POST', body: JSON.stringify(jobBody('big', 'bigdst', { size: 'big' })) });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id;
  await signIn(page);
  await page.goto(`${BASE}/#/jobs/${id}`);
  await page.locator('.title-row .badge', { hasText: 'running' }).waitFor({ timeout: 60_000 });
  // Some progress first, so the cancel really stops a transfer in flight.
  await page.waitForFunction(() => Number(document.querySelector('.card .progress')?.dataset.pct) >= 1, null, { timeout: 60_000 });

  // "Keep it" leaves the job alone...
  await page.getByRole('button', { name: 'Cancel job' }).click();
  const dialog = page.getByRole('dialog', { name: 'Cancel this job?' });
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Keep it' }).click();
  await dialog.waitFor({ state: 'hidden' });
  assert.equal((await api(`/jobs/${id}`)).body.cancel_requested, false);

  // ..."Cancel job" in the dialog stops it.
  await page.getByRole('button', { name: 'Cancel job' }).click();
  await dialog.getByRole('button', { name: 'Cancel job' }).click();
  await page.locator('.title-row .badge', { hasText: 'cancelled' }).waitFor({ timeout: 60_000 });
  const job = (await api(`/jobs/${id}`)).body;
  assert.equal(job.state, 'cancelled');
  assert.ok(job.counts.copied < 1500, `stopped early: ${job.counts.copied} copied`);
  await page.getByRole('button', { name: 'Rerun' }).waitFor();
}));

test('a scheduled job shows its next run, has its cadence edited and is cut over after confirming', T, () => withPage('cutover', async ({ page }) => {
  // A dry run: its passes list the mailbox and change nothing, whatever the policy.
  const body = { ...jobBody('b2', 'b2dst'), options: { dry_run: true }, schedule: { every: '1h' } };
  const created = await api('/jobs', { method: 'POST', body: JSON.stringify(body) });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id;
  await signIn(page);
  await page.goto(`${BASE}/#/jobs/${id}`);
  await page.locator('.title-row .badge', { hasText: 'scheduled' }).waitFor({ timeout: 60_000 });
  await page.locator('dd[data-k="Schedule"]', { hasText: 'every 1h' }).waitFor();
  await page.locator('dd[data-k="Next run"]').waitFor();
  // The cadence edited in place: shown, stored, and the next run moved with it.
  const before = (await api(`/jobs/${id}`)).body.next_run_at;
  await page.getByLabel('Every', { exact: true }).fill('2h');
  await page.getByRole('button', { name: 'Save schedule' }).click();
  await page.locator('dd[data-k="Schedule"]', { hasText: 'every 2h' }).waitFor();
  const edited = (await api(`/jobs/${id}`)).body;
  assert.equal(edited.schedule.every, '2h');
  // An hour later (to within a second: the worker's release counts its wait from its own clock).
  const moved = Date.parse(edited.next_run_at) - Date.parse(before);
  assert.ok(Math.abs(moved - 3_600_000) < 1000, `${before} → ${edited.next_run_at}`);
  await page.getByRole('button', { name: 'Cut over' }).click();
  const dialog = page.getByRole('dialog', { name: 'Cut this job over?' });
  await dialog.getByRole('button', { name: 'Cut over' }).click();
  await page.locator('.title-row .badge', { hasText: 'succeeded' }).waitFor({ timeout: 60_000 });
  await page.locator('dd[data-k="Cutover"]', { hasText: 'after-verified' }).waitFor();
  const job = (await api(`/jobs/${id}`)).body;
  assert.equal(job.state, 'succeeded');
  assert.equal(job.runs, 2, 'the first pass, then the final one');
  assert.equal(job.next_run_at, null);
  assert.equal(job.cutover.delete, 'after-verified');
  assert.ok(job.cutover.started_at);
}));

// Set by the archive test: the digest of the message both archive mailboxes hold.
let INVOICE_DIGEST = '';

test('archive two mailboxes, search the archive, open a message, run verify and export', T, () => withPage('archive', async ({ page }) => {
  await signIn(page);
  // One archive job from the form…
  await page.getByRole('link', { name: 'New job' }).click();
  const source = page.getByRole('group', { name: 'Source (POP3)' });
  await source.getByLabel('Host').fill(LAB.host);
  await source.getByLabel('Port').fill(String(LAB.pop3s));
  await source.getByLabel('Username').fill('arch1');
  await source.getByLabel('Password').fill(LAB.srcPw);
  const target = page.getByRole('group', { name: 'Target', exact: true });
  await target.getByLabel('Deliver to').selectOption('archive');
  assert.ok(await target.getByLabel('Folder').isHidden(), 'IMAP fields are hidden for an archive target');
  await target.getByLabel('Archive name').fill('legal');
  await page.getByRole('button', { name: 'Create job' }).click();
  await page.waitForURL(/#\/jobs\/\d+$/);
  const first = Number(/#\/jobs\/(\d+)/.exec(page.url())[1]);
  // …and one through the API.
  const body = jobBody('arch2', 'dst');
  body.target = { protocol: 'archive', archive: 'legal' };
  const created = await api('/jobs', { method: 'POST', body: JSON.stringify(body) });
  assert.equal(created.status, 201);
  for (const id of [first, created.body.id]) {
    for (let i = 0; ; i++) {
      const j = (await api(`/jobs/${id}`)).body;
      if (j.state === 'succeeded') break;
      assert.ok(i < 300 && !['failed', 'partial', 'cancelled'].includes(j.state), `archive job ${id}: ${j.state} ${j.last_error}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  // The list: 3 messages from 4 arrivals.
  await page.getByRole('link', { name: 'Archives' }).click();
  const row = page.locator('table.archives tr[data-archive="legal"]');
  await row.waitFor();
  assert.match(await row.innerText(), /\b3\b[\s\S]*\b4\b/);
  assert.match(await row.innerText(), /1\.\d\d×/);
  await row.getByRole('link', { name: 'legal' }).click();
  await page.getByRole('heading', { name: 'Archive legal' }).waitFor();

  // Search by subject, then open the hit.
  const search = page.getByRole('search');
  await search.getByLabel('Subject').fill('invoice');
  await search.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('heading', { name: 'Results (2)' }).waitFor();
  await page.locator('table.messages tbody tr').first().getByRole('link', { name: 'Quarterly invoice' }).click();
  await page.getByRole('heading', { name: 'Quarterly invoice' }).waitFor();
  await assertText(page.locator('pre.message-source[data-part="body"]'), 'Please pay the zeppelin invoice.');
  await assertText(page.locator('pre.message-source[data-part="header"]'), 'Message-ID: <inv1@lab>');
  assert.equal(await page.locator('table.occurrences tbody tr').count(), 2, 'both mailboxes are listed');
  INVOICE_DIGEST = (await page.locator('code.digest').innerText()).trim();
  assert.match(INVOICE_DIGEST, /^[0-9a-f]{64}$/);

  // HTML in a message is shown as text, never rendered.
  await page.goto(`${BASE}/#/archives/legal?q=mallory`);
  await page.locator('table.messages tbody tr').first().getByRole('link', { name: 'Totally safe' }).click();
  await assertText(page.locator('pre.message-source[data-part="body"]'), '<img src=x onerror=alert(1)>');
  assert.equal(await page.locator('main img').count(), 0, 'no element was made from message content');

  // Verify: progress, then the result.
  await page.goto(`${BASE}/#/archives/legal`);
  await page.getByRole('button', { name: 'Verify archive' }).click();
  await page.getByText('Verified: no discrepancies.').waitFor();
  await page.getByText('3 messages').first().waitFor();

  // Export everything as mbox and download it.
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  const dl = page.getByRole('button', { name: /^Download legal-export-\d+\.mbox$/ });
  await dl.waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), dl.click()]);
  const mbox = readFileSync(await download.path(), 'utf8');
  assert.equal((mbox.match(/^From mailferry-archive /gm) || []).length, 3, 'three distinct messages');
  assert.ok(mbox.includes('zeppelin'));
}));

test('every main view, wide and phone-sized, light and dark: screenshots for review', T, async () => {
  mkdirSync(SHOTS, { recursive: true });
  const jobs = (await api('/jobs?limit=500')).body.items;
  const done = jobs.find((j) => j.state === 'succeeded' && !j.batch_id);
  const batch = jobs.find((j) => j.batch_id);
  assert.ok(done && batch, 'the earlier tests left a finished job and a batch');
  // [file name, route, heading, what shows once the view has its data]
  const views = [
    ['overview', '#/', 'Overview', '[data-total="messages"]'],
    ['jobs', '#/jobs', 'Jobs', 'table.jobs tbody tr'],
    ['job', `#/jobs/${done.id}`, `Job #${done.id}`, 'table.ledger tbody tr'],
    ['new-job', '#/new', 'New job', 'form.job-form'],
    ['batches', '#/batches', 'Batches', 'section table tbody tr'],
    ['batch', `#/batches/${batch.batch_id}`, `Batch #${batch.batch_id}`, 'table tbody tr[data-job]'],
    ['archives', '#/archives', 'Archives', 'table.archives tbody tr'],
    ['archive', '#/archives/legal?subject=invoice', 'Archive legal', 'table.messages tbody tr'],
    ['archive-message', `#/archives/legal/messages/${INVOICE_DIGEST}`, 'Quarterly invoice', 'pre.message-source'],
  ];
  for (const [size, viewport] of [['1280', { width: 1280, height: 900 }], ['390', { width: 390, height: 844 }]]) {
    for (const scheme of ['light', 'dark']) {
      await withPage(`views-${size}-${scheme}`, async ({ page }) => {
        await signIn(page);
        if (size === '1280' && scheme === 'light') {
          // Something moving for the chart: rerun the cancelled big job (~1,300 messages left).
          const big = jobs.find((j) => j.state === 'cancelled');
          assert.ok(big, 'the cancel test left a cancelled job');
          assert.equal((await api(`/jobs/${big.id}/rerun`, { method: 'POST', body: '{}' })).status, 200);
          await page.waitForFunction(() => Number(document.querySelector('[data-rate="msgs"]')?.textContent.split(' ')[0]) > 0, null, { timeout: 60_000 });
          await page.waitForTimeout(6000);
        } else {
          await page.waitForTimeout(2500); // two samples: the chart has a line
        }
        for (const [name, hash, heading, ready] of views) {
          await page.goto(`${BASE}/${hash}`);
          await page.getByRole('heading', { name: heading, exact: true }).waitFor();
          await page.locator(ready).first().waitFor();
          // Nothing is wider than the screen (tables scroll inside their own box).
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          assert.ok(overflow <= 0, `${name} at ${size}px is ${overflow}px wider than the screen`);
          await page.screenshot({ path: join(SHOTS, `${name}-${size}-${scheme}.png`), fullPage: true });
        }
        // Times are the viewer's local time with UTC on hover.
        await page.goto(`${BASE}/#/jobs/${done.id}`);
        const t = page.locator('time').first();
        assert.match(await t.getAttribute('title'), /UTC$/);
      }, { viewport, colorScheme: scheme });
    }
  }
});

async function assertText(locator, text) {
  await locator.filter({ hasText: text }).waitFor();
}
