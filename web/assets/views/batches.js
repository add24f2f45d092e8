// Batches: upload a CSV of mailboxes (all rows are checked by the API before anything is
// created; its row-numbered errors are listed here). Each mailbox is preflighted first
// (POST /batches?preflight=true: verdicts, reasons, totals, estimated time) and the admin
// then confirms creating the batch. Below, the batches so far, newest first, a page at a
// time from GET /batches.

import { go } from '../app.js';
import { ApiError, getJSON, qs, request } from '../api.js';
import { download, empty, field, fill, h, notice, num, problemBox, progress, time } from '../dom.js';

const SAMPLE = 'source_host,source_port,source_security,source_user,source_password,target_host,target_port,target_security,target_user,target_password,target_folder,delete,labels\n'
  + 'pop.example.com,995,tls,alice,alice-pop-password,imap.example.com,993,tls,alice,alice-imap-password,INBOX,keep,team=sales;wave=1\n';

export async function render(main, _route, { signal }) {
  const file = h('input', { type: 'file', name: 'file', accept: '.csv,text/csv', required: true });
  const name = h('input', { name: 'name', placeholder: 'e.g. sales team, wave 1', maxlength: '200' });
  const source = h('input', { name: 'source', placeholder: 'pop3s://pop.example.com:995', spellcheck: 'false' });
  const target = h('input', { name: 'target', placeholder: 'imaps://imap.example.com:993 or archive:NAME', spellcheck: 'false' });
  const skip = h('input', { type: 'checkbox', name: 'skip_invalid', id: 'skip-invalid' });
  const result = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Check mailboxes');
  const create = h('button', { type: 'button', hidden: true, onclick: () => upload() }, 'Upload and create jobs');
  const checked = h('div', { 'aria-live': 'polite' });
  // A new file or new servers need a new check before the batch can be created.
  for (const input of [file, source, target, skip]) input.addEventListener('change', () => { create.hidden = true; fill(checked); });
  const list = h('div', h('p.muted', 'Loading…'));

  const form = h('form.card', { novalidate: true, onsubmit: (ev) => { ev.preventDefault(); check(); } },
    h('h2', 'Upload a CSV batch'),
    h('p', 'One mailbox per row. Required columns: ', h('code', 'source_host, source_user, source_password, target_host, target_user, target_password'),
      ' (no hosts when the servers are given below; an archive target needs only ', h('code', 'target_archive'), ')',
      '; optional: ', h('code', 'source_port, source_security, source_auth, source_tls_pin, target_kind (imap or archive), target_archive, target_port, target_security, target_auth, target_folder, target_flags, target_tls_pin, delete, verify, dry_run, max_message_bytes, labels'),
      '. imapsync-style ', h('code', 'host1, user1, password1, host2, user2, password2'), ' work too, and so does a Microsoft 365 migration file (',
      h('code', 'EmailAddress, UserName, Password'), ') with the servers given once below. Every row is checked first: if any row is invalid, nothing is created.'),
    h('p', h('button.link', { type: 'button', onclick: () => download(new Blob([SAMPLE], { type: 'text/csv' }), 'mailferry-batch-sample.csv') }, 'Download a sample CSV')),
    h('div.row', field('CSV file', file), field('Batch name (optional)', name)),
    h('div.row', field('Source server for every row (optional)', source, 'Used where a row has no source_host.'),
      field('Target for every row (optional)', target, 'Used where a row has no target_host.')),
    h('div.field.check', skip, h('label', { for: 'skip-invalid' }, 'Create the valid rows even if some are invalid')),
    h('div.actions', submit),
    checked,
    h('div.actions', create),
    result);

  fill(main, h('h1', 'Batches'), form, h('section.card', h('h2', 'Batches so far'), list));

  function params() {
    return { name: name.value.trim(), source: source.value.trim(), target: target.value.trim(), skip_invalid: skip.checked ? 'true' : '' };
  }

  // Preflight: log in to every mailbox, look, change nothing; then offer to create.
  async function check() {
    fill(result);
    fill(checked);
    create.hidden = true;
    const f = file.files && file.files[0];
    if (!f) {
      fill(result, h('div.problem', { role: 'alert' }, h('strong', 'Choose a CSV file first.')));
      file.focus();
      return;
    }
    submit.disabled = true;
    fill(checked, h('p.muted', 'Checking every mailbox (logins, UIDL, folder, quota, sizes)…'));
    try {
      const res = await request(`/batches${qs({ ...params(), preflight: 'true' })}`, {
        method: 'POST', body: await f.text(), headers: { 'Content-Type': 'text/csv' },
      });
      const report = await res.json();
      fill(checked, preflightTable(report));
      create.hidden = false;
    } catch (e) {
      fill(checked);
      if (!(e instanceof ApiError)) throw e;
      fill(result, problemBox(e), (e.problem.errors || []).length ? rowErrors(e.problem.errors) : null);
    } finally {
      submit.disabled = false;
    }
  }

  async function upload() {
    fill(result);
    const f = file.files && file.files[0];
    if (!f) {
      fill(result, h('div.problem', { role: 'alert' }, h('strong', 'Choose a CSV file first.')));
      file.focus();
      return;
    }
    submit.disabled = true;
    try {
      const res = await request(`/batches${qs(params())}`, {
        method: 'POST', body: await f.text(), headers: { 'Content-Type': 'text/csv', 'Idempotency-Key': crypto.randomUUID() },
      });
      const created = await res.json();
      notice(`Batch ${created.id} created with ${created.jobs.length} jobs.`);
      if (created.skipped.length) {
        fill(result, h('p', `Batch ${created.id} created with ${created.jobs.length} jobs. These rows were left out:`), rowErrors(created.skipped),
          h('p', h('a', { href: `#/batches/${created.id}` }, `Open batch ${created.id}`)));
      } else {
        go(`#/batches/${created.id}`);
      }
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      fill(result, problemBox(e), (e.problem.errors || []).length ? rowErrors(e.problem.errors) : null);
    } finally {
      submit.disabled = false;
    }
  }

  // Newest first, a page at a time; "Show older batches" follows the cursor.
  const rows = h('tbody');
  const more = h('button.link', { type: 'button', hidden: true, onclick: () => page(more.dataset.cursor) }, 'Show older batches');
  async function page(cursor) {
    more.disabled = true;
    try {
      const res = await getJSON(`/batches${qs({ cursor, limit: 20 })}`, { signal });
      if (!cursor && !res.items.length) {
        fill(list, empty('No batches yet.', 'Upload a CSV file above to create many jobs at once.'));
        return;
      }
      if (!cursor) {
        fill(list, h('div.table-wrap', h('table.stack.batches',
          h('thead', h('tr', ['Batch', 'Name', 'Jobs', 'States', 'Progress', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
          rows)), h('p', more));
      }
      rows.append(...res.items.map((b) => h('tr', { dataset: { batch: String(b.id) } },
        h('td', h('a', { href: `#/batches/${b.id}` }, `#${b.id}`)),
        h('td.wrap', b.name),
        h('td.num', { 'data-label': 'Jobs' }, num(b.jobs)),
        h('td', Object.entries(b.states).map(([s, n]) => `${n} ${s}`).join(', ')),
        h('td.cell-progress', progress(b.counts)),
        h('td', { 'data-label': 'Created' }, time(b.created_at)))));
      more.hidden = !res.next_cursor;
      more.dataset.cursor = res.next_cursor || '';
    } catch (e) {
      if (e.name !== 'AbortError') fill(list, problemBox(e));
    } finally {
      more.disabled = false;
    }
  }
  await page();
}

/** A batch preflight: one row per mailbox (verdict, reasons, size, estimate), then the totals. */
export function preflightTable(report) {
  const t = report.totals;
  const mins = Math.max(1, Math.round(t.estimate_secs / 60));
  return h('div',
    h('div.table-wrap', h('table.preflight',
      h('caption', `Preflight: ${t.ready} ready, ${t.warning} warning, ${t.blocked} blocked`),
      h('thead', h('tr', ['Row', 'Verdict', 'Reasons', 'Mailbox', 'Messages', 'Estimate'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', report.rows.map((r) => h('tr', { dataset: { row: String(r.row), verdict: r.verdict } },
        h('td.num', `Row ${r.row}`),
        h('td', h(`span.badge.${r.verdict}`, r.verdict)),
        h('td.wrap', r.reasons.length ? r.reasons.map((x) => h('div', h('code', x.code), ' ', x.detail)) : '—'),
        h('td.wrap', r.source.endpoint || '—'),
        h('td.num', num(r.source.messages)),
        h('td.num', `${r.estimate_secs} s`)))))),
    h('p.preflight-totals', `${num(t.messages)} messages, ${num(t.bytes)} bytes; about ${mins} min with the per-host limits.`,
      t.blocked ? ` ${t.blocked} mailbox${t.blocked === 1 ? ' is' : 'es are'} blocked: those jobs would fail as they are.` : ''));
}

/** The API's field errors as a table: row (1-based, header row not counted), column, problem. */
export function rowErrors(errors) {
  return h('div.table-wrap', h('table.row-errors',
    h('caption', `${errors.length} problem${errors.length === 1 ? '' : 's'}`),
    h('thead', h('tr', ['Row', 'Column', 'Problem'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', errors.map((e) => h('tr', { dataset: { row: e.row ? String(e.row) : 'header' } },
      h('td.num', e.row ? `Row ${e.row}` : 'Header'),
      h('td.mono', e.field || '—'),
      h('td.wrap', e.message))))));
}
