// One batch: aggregate progress over its jobs (refreshed while any is active), jobs per
// state, the report download, and its jobs.

import { allJobs, getJSON, request } from '../api.js';
import { badge, bytes, download, fill, h, num, problemBox, progress, time } from '../dom.js';

const POLL_MS = 2000;

export async function render(main, { params }, { signal }) {
  const id = Number(params[0]);
  const head = h('div');
  const status = h('div');
  const jobsEl = h('div');
  fill(main, h('p', h('a', { href: '#/batches' }, '← All batches')), head, status,
    h('section.card', h('h2', 'Jobs'), h('p', h('a', { href: `#/jobs?batch=${id}` }, 'Filter the jobs table by this batch')), jobsEl));

  let timer = null;
  signal.addEventListener('abort', () => clearTimeout(timer));

  async function tick() {
    let batch;
    let jobs;
    try {
      [batch, jobs] = await Promise.all([getJSON(`/batches/${id}`, { signal }), allJobs({ batch: id }, signal)]);
      fill(status);
    } catch (e) {
      if (e.name === 'AbortError') return;
      fill(status, problemBox(e));
      timer = setTimeout(tick, POLL_MS * 2);
      return;
    }
    fill(head,
      h('div.title-row', h('h1', `Batch #${batch.id}`), h('span.muted', batch.name)),
      h('section.grid',
        h('div.card', h('h2', 'Aggregate progress'), progress(batch.counts),
          h('dl.kv',
            h('dt', 'Jobs'), h('dd', num(batch.jobs)),
            h('dt', 'Copied'), h('dd', num(batch.counts.copied)),
            h('dt', 'Failed messages'), h('dd', num(batch.counts.failed)),
            h('dt', 'Bytes copied'), h('dd', bytes(batch.counts.bytes)),
            h('dt', 'Created'), h('dd', time(batch.created_at)))),
        h('div.card', h('h2', 'Jobs by state'),
          h('ul.plain', Object.entries(batch.states).map(([s, n]) => h('li', badge(s), ` ${num(n)}`))),
          h('button.secondary', { type: 'button', onclick: report }, 'Download report (CSV)'))));
    fill(jobsEl, h('div.table-wrap', h('table.stack',
      h('thead', h('tr', ['Job', 'State', 'Source → target', 'Progress', 'Last error'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', jobs.map((j) => h('tr', { dataset: { job: String(j.id) } },
        h('td', h('a', { href: `#/jobs/${j.id}` }, `#${j.id}`)),
        h('td', badge(j.state)),
        h('td.wrap', `${j.source_display} → ${j.target_display}`),
        h('td.cell-progress', progress(j.counts, j.id)),
        j.last_error ? h('td.wrap', h('span.error-text', j.last_error)) : h('td', h('span.muted', 'no error'))))))));
    const active = jobs.some((j) => ['queued', 'running'].includes(j.state));
    if (active) timer = setTimeout(tick, POLL_MS);
  }

  async function report() {
    try {
      const res = await request(`/batches/${id}/report`, { signal });
      download(await res.blob(), `batch-${id}-report.csv`);
    } catch (e) {
      if (e.name !== 'AbortError') fill(status, problemBox(e));
    }
  }

  await tick();
}
