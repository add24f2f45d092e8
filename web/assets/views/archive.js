// One archive: counts, retention and holds; search with the API's fields and a results
// table (the query lives in the URL, so back and forward work); verify with progress and
// its report; export as mbox or EML zip with a download once done.

import { go } from '../app.js';
import { getJSON, postJSON, qs, request } from '../api.js';
import { bytes, download, empty, field, fill, h, notice, num, problemBox, time } from '../dom.js';

const PAGE = 50;
const POLL_MS = 500;
const FIELDS = [
  ['q', 'Free text', 'Words in from, to, cc, subject, body or attachment names'],
  ['from', 'From'], ['to', 'To'], ['cc', 'Cc'], ['subject', 'Subject'], ['body', 'Body'],
  ['attachment', 'Attachment name'], ['account', 'Account', 'The source mailbox, exactly'],
  ['message_id', 'Message-ID', 'Exactly'],
  ['date_from', 'Date from', 'YYYY-MM-DD or RFC 3339', 'date'], ['date_to', 'Date to', 'That whole day included', 'date'],
  ['size_min', 'Size at least (bytes)', null, 'number'], ['size_max', 'Size at most (bytes)', null, 'number'],
];

export const retentionText = (days) => (days ? `${num(days)} days from ingest` : 'forever');

export function holdText(hold) {
  const s = hold.scope;
  let what = 'the whole archive';
  if (s && s.account) what = `account ${s.account}`;
  else if (s && s.query) what = `messages matching ${Object.entries(s.query).map(([k, v]) => `${k}:${v}`).join(' ')}`;
  return `#${hold.id}: ${what} — ${hold.reason}`;
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); reject(new DOMException('aborted', 'AbortError')); }, { once: true });
});

export async function render(main, { params, query }, { signal }) {
  const name = params[0];
  const base = `/archives/${encodeURIComponent(name)}`;
  const list = await getJSON('/archives', { signal });
  const a = list.items.find((x) => x.name === name);
  if (!a) {
    fill(main, h('p', h('a', { href: '#/archives' }, '← All archives')), h('h1', `Archive ${name}`),
      empty('There is no such archive.', 'Archives appear once a job has written to them. ', h('a', { href: '#/archives' }, 'See all archives.')));
    return;
  }

  const summary = h('section.grid',
    h('div.card', h('h2', 'Contents'), h('dl.kv',
      kv('Messages', num(a.messages)), kv('Occurrences', num(a.occurrences)), kv('Purged', num(a.purged)),
      kv('Stored bytes', bytes(a.stored_bytes)), kv('Logical bytes', bytes(a.logical_bytes)),
      kv('Dedup ratio', `${a.dedup_ratio.toFixed(2)}×`))),
    h('div.card', h('h2', 'Policy'), h('dl.kv',
      kv('Retention', retentionText(a.retention_days)),
      kv('Legal holds', a.holds.length ? h('ul.plain', a.holds.map((x) => h('li', holdText(x)))) : 'none')),
      h('p.muted', 'Holds and retention are changed by an admin through the API.')));

  // Verify.
  const verifyBtn = h('button.secondary', { type: 'button', onclick: () => verify() }, 'Verify archive');
  const verifyOut = h('div', { role: 'status', 'aria-live': 'polite' });
  // Export.
  const formatSel = h('select', { name: 'format' }, h('option', { value: 'mbox' }, 'mbox'), h('option', { value: 'eml-zip' }, 'EML zip'));
  const exportBtn = h('button.secondary', { type: 'button', onclick: () => exportRun() }, 'Export');
  const exportOut = h('div', { role: 'status', 'aria-live': 'polite' });

  // Search.
  const inputs = {};
  const hasAtt = h('select', { name: 'has_attachment' }, h('option', { value: '' }, 'any'), h('option', { value: 'true' }, 'yes'), h('option', { value: 'false' }, 'no'));
  inputs.has_attachment = hasAtt;
  const fieldsEls = FIELDS.map(([k, label, hint, type]) => {
    const input = h('input', { name: k, type: type === 'number' ? 'number' : 'text', spellcheck: 'false', autocomplete: 'off', inputmode: type === 'number' ? 'numeric' : undefined, placeholder: type === 'date' ? 'YYYY-MM-DD' : undefined });
    input.value = query.get(k) || '';
    inputs[k] = input;
    return field(label, input, hint);
  });
  hasAtt.value = query.get('has_attachment') || '';
  const form = h('form.card.archive-search', { role: 'search', onsubmit: (ev) => { ev.preventDefault(); search(); } },
    h('h2', 'Search'),
    h('div.row', fieldsEls.slice(0, 1), field('Has attachment', hasAtt)),
    h('div.row', fieldsEls.slice(1, 5)),
    h('div.row', fieldsEls.slice(5, 9)),
    h('div.row', fieldsEls.slice(9)),
    h('div.actions', h('button', { type: 'submit' }, 'Search'),
      h('button.secondary', { type: 'button', onclick: () => go(`#/archives/${encodeURIComponent(name)}`) }, 'Clear')));
  const results = h('section.card', { 'aria-labelledby': 'results-h' });

  fill(main,
    h('p', h('a', { href: '#/archives' }, '← All archives')),
    h('h1', `Archive ${name}`),
    summary,
    h('section.grid',
      h('div.card', h('h2', 'Verify'),
        h('p', 'Re-hash every stored message, check every occurrence and walk the tamper-evident event log.'),
        h('div.actions', verifyBtn), verifyOut),
      h('div.card', h('h2', 'Export'),
        h('p', 'The messages matching the search below (all when it is empty), each once, with a SHA-256 manifest.'),
        h('div.row', field('Format', formatSel), h('div.field.submit', exportBtn)), exportOut)),
    form, results);

  function current() {
    const out = {};
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) out[k] = el.value.trim();
    return out;
  }

  function search() {
    go(`#/archives/${encodeURIComponent(name)}${qs(current())}`);
  }

  const cursors = [undefined];
  async function load() {
    const filters = Object.fromEntries([...query.entries()].filter(([k]) => k in inputs));
    let page;
    try {
      page = await getJSON(`${base}/messages${qs({ ...filters, cursor: cursors[cursors.length - 1], limit: PAGE })}`, { signal });
    } catch (e) {
      if (e.name === 'AbortError') return;
      for (const err of (e.problem && e.problem.errors) || []) if (inputs[err.field]) inputs[err.field].setAttribute('aria-invalid', 'true');
      fill(results, h('h2#results-h', 'Results'), problemBox(e));
      return;
    }
    const rows = page.items.map((m) => h('tr', { dataset: { digest: m.digest } },
      h('td.wrap', h('a', { href: `#/archives/${encodeURIComponent(name)}/messages/${m.digest}` }, m.subject || '(no subject)')),
      h('td.wrap', { 'data-label': 'From' }, m.from.join(', ') || '—'),
      h('td', { 'data-label': 'Date' }, time(m.date)),
      h('td', { 'data-label': 'Account' }, `${m.account}@${m.source_host}`),
      h('td.num', { 'data-label': 'Size' }, bytes(m.size)),
      h('td', { 'data-label': 'Attachment' }, m.has_attachment ? 'yes' : 'no'),
      h('td', { 'data-label': 'Archived' }, time(m.retrieved_at))));
    const n = cursors.length;
    fill(results, h('h2#results-h', `Results (${num(page.total)})`),
      page.items.length
        ? h('div.table-wrap', h('table.messages.stack', h('caption.visually-hidden', 'Matching messages'),
          h('thead', h('tr', ['Subject', 'From', 'Date', 'Mailbox', 'Size', 'Attachment', 'Archived'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', rows)))
        : empty('No message matches.', 'Change or clear the search fields above.'),
      h('div.pager',
        h('button.secondary', { type: 'button', disabled: n <= 1, onclick: () => { cursors.pop(); load(); } }, '← Previous page'),
        h('span.muted', `Page ${n}`),
        h('button.secondary', { type: 'button', disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(); } }, 'Next page →')));
  }

  async function poll(path, show) {
    for (;;) {
      const run = await getJSON(path, { signal });
      show(run);
      if (run.state !== 'running') return run;
      await sleep(POLL_MS, signal);
    }
  }

  async function verify() {
    verifyBtn.disabled = true;
    try {
      const run = await postJSON(`${base}/verify`, {}, { signal });
      await poll(`${base}/verify/${run.id}`, showVerify);
    } catch (e) {
      if (e.name !== 'AbortError') fill(verifyOut, problemBox(e));
    } finally {
      verifyBtn.disabled = false;
    }
  }

  function showVerify(run) {
    const { done, total } = run.progress;
    if (run.state === 'running') {
      const bar = h('progress', { max: Math.max(total, 1), value: done });
      bar.setAttribute('aria-label', 'Verify progress');
      fill(verifyOut, h('div.progress', bar, h('span.progress-label', `Verifying… ${num(done)} / ${num(total)} messages`)));
      return;
    }
    if (run.state === 'failed') {
      fill(verifyOut, h('div.problem', { role: 'alert' }, h('strong', 'Verify could not finish'), h('p', run.error)));
      return;
    }
    const r = run.report;
    const counts = `${num(r.blobs_checked)} messages (${bytes(r.bytes_checked)}), ${num(r.occurrences_checked)} occurrences and ${num(r.events_checked)} log records checked.`;
    if (r.ok) {
      fill(verifyOut, h('div.verify-ok', { dataset: { verify: 'ok' } }, h('p', h('strong', 'Verified: no discrepancies.'), ' ', counts),
        r.chain_head ? h('p.muted', 'Chain head ', h('code', r.chain_head)) : null));
    } else {
      fill(verifyOut, h('div.problem', { role: 'alert', dataset: { verify: 'failed' } },
        h('strong', `${num(r.discrepancies.length)} discrepancies found`), h('p', counts),
        h('ul', r.discrepancies.map((d) => h('li', h('code', d.problem), ' ', d.digest ? h('code', d.digest) : '', ' ', d.kind ? JSON.stringify(d.kind) : '')))));
    }
  }

  async function exportRun() {
    exportBtn.disabled = true;
    const filters = Object.fromEntries([...query.entries()].filter(([k]) => k in inputs));
    if (filters.has_attachment) filters.has_attachment = filters.has_attachment === 'true';
    for (const k of ['size_min', 'size_max']) if (filters[k]) filters[k] = Number(filters[k]);
    try {
      fill(exportOut, h('p', 'Exporting…'));
      const run = await postJSON(`${base}/exports`, { query: filters, format: formatSel.value }, { signal });
      const done = await poll(`${base}/exports/${run.id}`, () => {});
      if (done.state === 'failed') {
        fill(exportOut, h('div.problem', { role: 'alert' }, h('strong', 'The export failed'), h('p', done.error)));
        return;
      }
      const file = `${name}-export-${done.id}.${done.format === 'mbox' ? 'mbox' : 'zip'}`;
      fill(exportOut,
        h('p', `Exported ${num(done.result.messages)} messages (${bytes(done.result.bytes)}). SHA-256 of the file: `, h('code', done.result.file_sha256)),
        h('div.actions',
          h('button', { type: 'button', dataset: { export: String(done.id) }, onclick: async () => {
            try {
              const res = await request(done.result.download.replace(/^\/api\/v1/, ''));
              download(await res.blob(), file);
              notice(`Downloaded ${file}.`);
            } catch (e) {
              fill(exportOut, problemBox(e));
            }
          } }, `Download ${file}`),
          h('button.secondary', { type: 'button', onclick: () => download(new Blob([done.result.manifest], { type: 'text/plain' }), `${file}.sha256`) }, 'Download manifest')));
    } catch (e) {
      if (e.name !== 'AbortError') fill(exportOut, problemBox(e));
    } finally {
      exportBtn.disabled = false;
    }
  }

  await load();
}

function kv(k, v) {
  return [h('dt', k), h('dd', v)];
}
