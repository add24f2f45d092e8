// Jobs: a filterable table (state, batch, label, text) paged with the API's cursor, with a
// progress bar per job kept live by each active job's event stream.

import { getJSON, qs, streamEvents } from '../api.js';
import { badge, empty, field, fill, h, problemBox, progress, time } from '../dom.js';

const STATES = ['queued', 'running', 'paused', 'scheduled', 'succeeded', 'partial', 'failed', 'cancelled'];
const PAGE = 25;
/** Browsers allow 6 HTTP/1.1 connections per host: stream at most this many jobs at once. */
const MAX_STREAMS = 3;
const REFRESH_MS = 4000;

export async function render(main, { query }, { signal }) {
  const filters = {
    state: query.get('state') || '',
    batch: query.get('batch') || '',
    label: query.get('label') || '',
    q: query.get('q') || '',
  };
  const stateSel = h('select', { name: 'state' }, h('option', { value: '' }, 'Any state'), STATES.map((s) => h('option', { value: s }, s)));
  stateSel.value = filters.state;
  const batchIn = h('input', { name: 'batch', type: 'number', min: '1', inputmode: 'numeric', value: filters.batch, placeholder: 'e.g. 3' });
  const labelIn = h('input', { name: 'label', value: filters.label, placeholder: 'key:value' });
  const qIn = h('input', { name: 'q', type: 'search', value: filters.q, placeholder: 'user or host' });
  const formError = h('div');
  const body = h('div');
  const pager = h('nav.pager', { 'aria-label': 'Pages' });

  const cursors = ['']; // cursor of each page seen so far; the last is the current page's
  let next = null;
  const streams = new Map(); // job id → AbortController
  let timer = null;

  const form = h('form.filters', {
    role: 'search',
    onsubmit: (ev) => {
      ev.preventDefault();
      Object.assign(filters, { state: stateSel.value, batch: batchIn.value.trim(), label: labelIn.value.trim(), q: qIn.value.trim() });
      history.replaceState(null, '', `#/jobs${qs(filters)}`);
      cursors.length = 1;
      load();
    },
  },
  field('State', stateSel), field('Batch', batchIn), field('Label', labelIn), field('Search', qIn),
  h('div.field.submit', h('button', { type: 'submit' }, 'Filter')));
  stateSel.addEventListener('change', () => form.requestSubmit());

  fill(main, h('div.title-row', h('h1', 'Jobs'), h('a.button', { href: '#/new' }, 'New job')), form, formError, body, pager);

  const stopStreams = () => {
    for (const c of streams.values()) c.abort();
    streams.clear();
  };
  signal.addEventListener('abort', () => {
    stopStreams();
    clearTimeout(timer);
  });

  function updateRow(id, data) {
    const row = body.querySelector(`tr[data-job="${id}"]`);
    if (!row) return;
    if (data.state) fill(row.querySelector('.cell-state'), badge(data.state));
    if (data.counts) fill(row.querySelector('.cell-progress'), progress(data.counts, id));
    if (data.state) row.dataset.state = data.state;
  }

  function follow(jobs) {
    const active = jobs.filter((j) => j.state === 'running' || j.state === 'queued').map((j) => j.id);
    for (const [id, c] of streams) {
      if (!active.includes(id)) {
        c.abort();
        streams.delete(id);
      }
    }
    for (const id of active) {
      if (streams.size >= MAX_STREAMS) break;
      if (streams.has(id)) continue;
      const c = new AbortController();
      streams.set(id, c);
      streamEvents(`/jobs/${id}/events`, (_name, data) => updateRow(id, data), c.signal)
        .catch(() => {})
        .finally(() => {
          if (streams.get(id) === c) streams.delete(id);
        });
    }
  }

  async function load(quiet) {
    clearTimeout(timer);
    const cursor = cursors[cursors.length - 1];
    let page;
    try {
      page = await getJSON(`/jobs${qs({ ...filters, cursor, limit: PAGE })}`, { signal });
      fill(formError);
    } catch (e) {
      if (e.name === 'AbortError') return;
      fill(formError, problemBox(e));
      showFieldErrors(e);
      if (!quiet) fill(body);
      return;
    }
    next = page.next_cursor;
    renderTable(page.items);
    renderPager();
    follow(page.items);
    timer = setTimeout(() => load(true), REFRESH_MS);
  }

  function showFieldErrors(e) {
    for (const err of (e.problem && e.problem.errors) || []) {
      const input = form.elements.namedItem(err.field);
      if (input) input.setAttribute('aria-invalid', 'true');
    }
  }

  function renderTable(jobs) {
    for (const el of form.elements) el.removeAttribute && el.removeAttribute('aria-invalid');
    if (!jobs.length) {
      const filtered = Object.values(filters).some(Boolean);
      fill(body, filtered
        ? empty('No job matches these filters.', 'Change or clear the filters above.')
        : empty('No jobs yet.', h('a', { href: '#/new' }, 'Create a job'), ' from the form or ', h('a', { href: '#/batches' }, 'upload a CSV batch'), '.'));
      return;
    }
    const rows = jobs.map((j) => h('tr', { dataset: { job: String(j.id), state: j.state } },
      h('td', h('a', { href: `#/jobs/${j.id}` }, `#${j.id}`)),
      h('td.cell-state', badge(j.state)),
      h('td.wrap', h('span', j.source_display), h('span.arrow', { 'aria-label': 'to' }, ' → '), h('span', j.target_display),
        Object.keys(j.labels).length ? h('div.labels', Object.entries(j.labels).map(([k, v]) => h('span.label', `${k}:${v}`))) : null),
      h('td', j.batch_id ? h('a', { href: `#/batches/${j.batch_id}` }, `batch ${j.batch_id}`) : h('span.muted', 'no batch')),
      h('td.cell-progress', progress(j.counts, j.id)),
      h('td', { 'data-label': 'Updated' }, time(j.updated_at))));
    fill(body, h('div.table-wrap', h('table.jobs.stack',
      h('caption.visually-hidden', 'Jobs'),
      h('thead', h('tr', ['Job', 'State', 'Source → target', 'Batch', 'Progress', 'Updated'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', rows))));
  }

  function renderPager() {
    const n = cursors.length;
    fill(pager,
      h('button.secondary', { type: 'button', disabled: n <= 1, onclick: () => { cursors.pop(); load(); } }, '← Previous page'),
      h('span.muted', `Page ${n}`),
      h('button.secondary', { type: 'button', disabled: !next, onclick: () => { cursors.push(next); load(); } }, 'Next page →'));
  }

  await load();
}
