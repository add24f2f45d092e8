// Overview: jobs by state, totals moved, current msgs/s and MB/s with a live chart of the
// last minutes, and the jobs that need attention (failed, partial) first.
//
// The API has no aggregate endpoint, so this view sums the job list (all pages) every few
// seconds; throughput is the change of the totals between two samples. Samples survive
// leaving the view, so the chart is not empty when coming back.

import { allJobs } from '../api.js';
import { drawThroughput } from '../chart.js';
import { badge, bytes, empty, fill, h, num, problemBox, progress, time } from '../dom.js';

const STATES = ['running', 'queued', 'paused', 'scheduled', 'failed', 'partial', 'succeeded', 'cancelled'];
const WINDOW_MS = 5 * 60 * 1000;
const POLL_MS = 2000;
const samples = []; // {t, msgs, mbs}
let last = null; // {t, copied, bytes}

export async function render(main, _route, { signal }) {
  const stateList = h('dl.states');
  const totals = h('div.totals');
  const rates = h('div.rates');
  const canvas = h('canvas.chart', { role: 'img', 'aria-label': 'Throughput over the last 5 minutes' });
  const attention = h('div');
  const error = h('div');
  fill(
    main,
    h('h1', 'Overview'),
    error,
    h('section.grid',
      h('div.card', h('h2', 'Jobs by state'), stateList),
      h('div.card', h('h2', 'Moved so far'), totals),
      h('div.card', h('h2', 'Throughput now'), rates)),
    h('section.card', h('h2', 'Throughput, last 5 minutes'), canvas),
    h('section.card', h('h2', 'Needs attention'), attention),
  );

  const tick = async () => {
    let jobs;
    try {
      jobs = await allJobs({}, signal);
      fill(error);
    } catch (e) {
      if (e.name === 'AbortError') return;
      fill(error, problemBox(e));
      return;
    }
    const byState = Object.fromEntries(STATES.map((s) => [s, 0]));
    let copied = 0;
    let moved = 0;
    for (const j of jobs) {
      byState[j.state] = (byState[j.state] || 0) + 1;
      copied += j.counts.copied;
      moved += j.counts.bytes;
    }
    const t = Date.now();
    if (last && t > last.t) {
      const secs = (t - last.t) / 1000;
      samples.push({ t, msgs: Math.max(0, copied - last.copied) / secs, mbs: Math.max(0, moved - last.bytes) / secs / 1e6 });
    }
    last = { t, copied, bytes: moved };
    while (samples.length && samples[0].t < t - WINDOW_MS) samples.shift();
    const cur = samples[samples.length - 1] || { msgs: 0, mbs: 0 };

    fill(stateList, STATES.flatMap((s) => [
      h('dt', h('a', { href: `#/jobs?state=${s}` }, badge(s))),
      h('dd', { dataset: { state: s } }, num(byState[s])),
    ]));
    fill(totals,
      h('p.big', { dataset: { total: 'messages' } }, num(copied), h('span.unit', ' messages')),
      h('p.big', { dataset: { total: 'bytes' } }, bytes(moved)),
      h('p.muted', `${num(jobs.length)} jobs in all`));
    fill(rates,
      h('p.big', { dataset: { rate: 'msgs' } }, cur.msgs.toFixed(1), h('span.unit', ' msgs/s')),
      h('p.big', { dataset: { rate: 'mbs' } }, cur.mbs.toFixed(2), h('span.unit', ' MB/s')));
    drawThroughput(canvas, samples, WINDOW_MS);

    const bad = jobs.filter((j) => j.state === 'failed' || j.state === 'partial' || j.last_error)
      .sort((a, b) => (a.state === 'failed' ? 0 : 1) - (b.state === 'failed' ? 0 : 1) || b.id - a.id)
      .slice(0, 10);
    if (!jobs.length) {
      fill(attention, empty('No jobs yet.', h('a', { href: '#/new' }, 'Create a job'), ' or ', h('a', { href: '#/batches' }, 'upload a CSV batch'), '.'));
    } else if (!bad.length) {
      fill(attention, empty('Nothing is failing.', 'Failed and partial jobs will show up here first. ', h('a', { href: '#/jobs' }, 'See all jobs.')));
    } else {
      fill(attention, h('ul.attention', bad.map((j) => h('li',
        badge(j.state), ' ',
        h('a', { href: `#/jobs/${j.id}` }, `#${j.id} ${j.source_display}`), ' ',
        progress(j.counts, j.id),
        j.last_error ? h('p.error-text', j.last_error) : null,
        h('p.muted', 'updated ', time(j.updated_at))))));
    }
  };

  await tick();
  const timer = setInterval(tick, POLL_MS);
  const redraw = () => drawThroughput(canvas, samples, WINDOW_MS);
  window.addEventListener('resize', redraw);
  signal.addEventListener('abort', () => {
    clearInterval(timer);
    window.removeEventListener('resize', redraw);
  });
}
