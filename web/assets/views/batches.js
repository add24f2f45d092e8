// Batches: upload a CSV of mailboxes (all rows are checked by the API before anything is
// created; its row-numbered errors are listed here), and the batches seen in the job list.

import { go } from '../app.js';
import { allJobs, ApiError, getJSON, qs, request } from '../api.js';
import { download, empty, field, fill, h, notice, num, problemBox, progress, time } from '../dom.js';

const SAMPLE = 'source_host,source_port,source_security,source_user,source_password,target_host,target_port,target_security,target_user,target_password,target_folder,delete,labels\n'
  + 'pop.example.com,995,tls,alice,alice-pop-password,imap.example.com,993,tls,alice,alice-imap-password,INBOX,keep,team=sales;wave=1\n';

export async function render(main, _route, { signal }) {
  const file = h('input', { type: 'file', name: 'file', accept: '.csv,text/csv', required: true });
  const name = h('input', { name: 'name', placeholder: 'e.g. sales team, wave 1', maxlength: '200' });
  const skip = h('input', { type: 'checkbox', name: 'skip_invalid', id: 'skip-invalid' });
  const result = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Upload and create jobs');
  const list = h('div', h('p.muted', 'Loading…'));

  const form = h('form.card', { novalidate: true, onsubmit: (ev) => { ev.preventDefault(); upload(); } },
    h('h2', 'Upload a CSV batch'),
    h('p', 'One mailbox per row. Required columns: ', h('code', 'source_host, source_user, source_password, target_host, target_user, target_password'),
      '; optional: ', h('code', 'source_port, source_security, source_auth, target_port, target_security, target_auth, target_folder, delete, labels'),
      ' (imapsync-style ', h('code', 'host1, user1, password1, host2, user2, password2'), ' work too). Every row is checked first: if any row is invalid, nothing is created.'),
    h('p', h('button.link', { type: 'button', onclick: () => download(new Blob([SAMPLE], { type: 'text/csv' }), 'mailferry-batch-sample.csv') }, 'Download a sample CSV')),
    h('div.row', field('CSV file', file), field('Batch name (optional)', name)),
    h('div.field.check', skip, h('label', { for: 'skip-invalid' }, 'Create the valid rows even if some are invalid')),
    h('div.actions', submit),
    result);

  fill(main, h('h1', 'Batches'), form, h('section.card', h('h2', 'Batches so far'), list));

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
      const res = await request(`/batches${qs({ name: name.value.trim(), skip_invalid: skip.checked ? 'true' : '' })}`, {
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

  // The API lists batches only through their jobs: collect the batch ids seen.
  try {
    const jobs = await allJobs({}, signal);
    const ids = [...new Set(jobs.map((j) => j.batch_id).filter(Boolean))].sort((a, b) => b - a).slice(0, 20);
    if (!ids.length) {
      fill(list, empty('No batches yet.', 'Upload a CSV file above to create many jobs at once.'));
      return;
    }
    const batches = await Promise.all(ids.map((id) => getJSON(`/batches/${id}`, { signal })));
    fill(list, h('div.table-wrap', h('table.stack',
      h('thead', h('tr', ['Batch', 'Name', 'Jobs', 'States', 'Progress', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', batches.map((b) => h('tr',
        h('td', h('a', { href: `#/batches/${b.id}` }, `#${b.id}`)),
        h('td.wrap', b.name),
        h('td.num', { 'data-label': 'Jobs' }, num(b.jobs)),
        h('td', Object.entries(b.states).map(([s, n]) => `${n} ${s}`).join(', ')),
        h('td.cell-progress', progress(b.counts)),
        h('td', { 'data-label': 'Created' }, time(b.created_at))))))));
  } catch (e) {
    if (e.name !== 'AbortError') fill(list, problemBox(e));
  }
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
