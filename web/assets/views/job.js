// One job: timestamps, runs, counts, last error, live progress, controls, report and
// signed receipt downloads, and the ledger page by page (failed and skipped messages with
// their reasons).

import { getJSON, qs, request, streamEvents } from '../api.js';
import { badge, bytes, confirmDialog, download, empty, field, fill, h, notice, num, problemBox, progress, setFieldError, time } from '../dom.js';

const LEDGER_PAGE = 50;

/** What each control does, when it applies, and whether it asks first. */
const ACTIONS = [
  { verb: 'pause', label: 'Pause', when: (j) => ['queued', 'running', 'scheduled'].includes(j.state) && !j.pause_requested },
  { verb: 'resume', label: 'Resume', when: (j) => j.state === 'paused' || (j.state === 'running' && j.pause_requested) },
  {
    verb: 'rerun', label: 'Rerun', when: (j) => ['succeeded', 'partial', 'failed', 'cancelled'].includes(j.state),
    confirm: (j) => ['Rerun this job?', `Job #${j.id} will run again on the same ledger and copy only messages that are new at the source.`, 'Rerun'],
  },
  {
    verb: 'cancel', label: 'Cancel job', danger: true, when: (j) => ['queued', 'running', 'paused', 'scheduled'].includes(j.state) && !j.cancel_requested,
    confirm: (j) => ['Cancel this job?', `Job #${j.id} stops after the message in flight. Messages already copied stay copied; the rest are not copied unless you rerun it.`, 'Cancel job'],
  },
  {
    // Issue 17: the final pass of a scheduled job, deleting at the source what was verified.
    verb: 'cutover', label: 'Cut over', danger: true, json: { delete: 'after-verified' },
    when: (j) => j.schedule && !j.cutover && ['queued', 'running', 'paused', 'scheduled'].includes(j.state),
    confirm: (j) => ['Cut this job over?', `Job #${j.id} runs one final pass now (after the pass in progress, if any) and deletes at the source every message whose copy was verified. Then its schedule ends.`, 'Cut over'],
  },
];

export async function render(main, { params }, { signal }) {
  const id = Number(params[0]);
  let job = await getJSON(`/jobs/${id}`, { signal });
  let stream = null;

  const head = h('div');
  const status = h('div', { role: 'status', 'aria-live': 'polite' });
  const controls = h('div.actions');
  const summary = h('div');
  const ledger = h('section.card', { 'aria-labelledby': 'ledger-h' });
  // Issue 17: the schedule edited in place (PUT /jobs/{id}/schedule). Built once, so an
  // event refreshing the job does not wipe what is being typed.
  const every = h('input', { type: 'text', name: 'every', placeholder: '6h', autocomplete: 'off' });
  const until = h('input', { type: 'datetime-local', name: 'until' });
  const endSchedule = h('button.danger', { type: 'button', onclick: () => editSchedule(null) }, 'End schedule');
  const scheduleForm = h('form.card', { novalidate: true, hidden: true, 'aria-labelledby': 'schedule-h', onsubmit: (ev) => { ev.preventDefault(); editSchedule(ev); } },
    h('h2#schedule-h', 'Edit schedule'),
    h('p', 'Delta passes at this cadence (a number and s, m, h or d), none starting after the end (your local time; empty: until a cutover). The next run moves to match.'),
    h('div.row', field('Every', every), field('Until (optional)', until)),
    h('div.actions', h('button', { type: 'submit' }, 'Save schedule'), endSchedule));
  fill(main,
    h('p', h('a', { href: '#/jobs' }, '← All jobs')),
    head, status, controls, summary, scheduleForm,
    h('section.card', h('h2', 'Report'),
      h('p', 'Every ledger row with its state, reason, digest and destination UID.'),
      h('div.actions',
        h('button.secondary', { type: 'button', onclick: () => report('csv') }, 'Download CSV'),
        h('button.secondary', { type: 'button', onclick: () => report('json') }, 'Download JSON'))),
    h('section.card', h('h2', 'Receipt'),
      h('p', 'The latest run\'s signed receipt: every message, where it went and the digests read back, with a Merkle root and an Ed25519 signature. ',
        'Anyone can check it offline with this server\'s public key (GET /api/v1/receipts/public-key).'),
      h('div.actions',
        // A download, not a link to /api/v1/jobs/{id}/receipt: the API needs the bearer
        // token, which only fetch() sends.
        h('button.secondary', { type: 'button', onclick: receipt }, 'Receipt (signed JSON)'))),
    ledger);

  function show() {
    fill(head, h('div.title-row', h('h1', `Job #${job.id}`), badge(job.state),
      job.cancel_requested ? h('span.muted', 'cancel requested…') : null,
      job.pause_requested ? h('span.muted', 'pause requested…') : null));
    const target = job.target;
    const src = job.source;
    fill(summary, h('section.grid',
      h('div.card', h('h2', 'Progress'), progress(job.counts, job.id),
        h('dl.kv',
          kv('Listed', num(job.counts.listed)), kv('Copied', num(job.counts.copied)),
          kv('Skipped', num(job.counts.skipped)), kv('Failed', num(job.counts.failed)),
          kv('Deleted at source', num(job.counts.deleted)), kv('Bytes copied', bytes(job.counts.bytes)))),
      h('div.card', h('h2', 'Mailboxes'),
        h('dl.kv',
          kv('Source', job.source_display),
          src ? kv('Source security', `${src.security}, auth ${src.auth}`) : null,
          kv('Target', job.target_display),
          target && target.protocol === 'imap' ? kv('Target security', `${target.security}, auth ${target.auth}`) : null,
          target && target.flags && target.flags.length ? kv('Flags', target.flags.join(' ')) : null,
          job.options ? kv('Delete at source', job.options.delete) : null,
          job.options && job.options.max_message_bytes ? kv('Largest message', bytes(job.options.max_message_bytes)) : null,
          job.options && job.options.dry_run ? kv('Dry run', 'yes') : null,
          job.batch_id ? kv('Batch', h('a', { href: `#/batches/${job.batch_id}` }, `batch ${job.batch_id}`)) : null,
          Object.keys(job.labels).length ? kv('Labels', Object.entries(job.labels).map(([k, v]) => `${k}:${v}`).join(', ')) : null)),
      h('div.card', h('h2', 'Timeline'),
        h('dl.kv',
          kv('Created', time(job.created_at)), kv('Started', time(job.started_at)),
          kv('Finished', time(job.finished_at)), kv('Updated', time(job.updated_at)), kv('Runs', num(job.runs)),
          job.schedule ? kv('Schedule', `every ${job.schedule.every}${job.schedule.until ? ` until ${job.schedule.until}` : ''}`) : null,
          job.next_run_at ? kv('Next run', time(job.next_run_at)) : null,
          job.cutover ? kv('Cutover', `final pass, delete ${job.cutover.delete}`) : null,
          job.cutover && job.cutover.started_at ? kv('Final pass started', time(job.cutover.started_at)) : null)),
    ), job.last_error ? h('div.problem', { role: 'alert' }, h('strong', 'Last error'), h('p.error-text', job.last_error)) : null);

    // Editable unless a CLI job, or cut over (the final pass ends the schedule).
    const editable = job.source && !job.cutover && !['failed', 'cancelled'].includes(job.state);
    if (editable && scheduleForm.hidden) {
      every.value = job.schedule ? job.schedule.every : '';
      until.value = job.schedule && job.schedule.until ? localInput(job.schedule.until) : '';
    }
    scheduleForm.hidden = !editable;
    endSchedule.hidden = !job.schedule;
    const available = job.source ? ACTIONS.filter((a) => a.when(job)) : [];
    fill(controls, available.map((a) => h(`button${a.danger ? '.danger' : '.secondary'}`, { type: 'button', dataset: { action: a.verb }, onclick: () => act(a) }, a.label)),
      !job.source ? h('p.muted', 'This job was started by mailferry migrate and is controlled by that command.') : null);
  }

  async function act(a) {
    if (a.confirm && !(await confirmDialog(...a.confirm(job)))) return;
    fill(status);
    try {
      job = await (await request(`/jobs/${id}/${a.verb}`, { method: 'POST', json: a.json })).json();
      notice(`Job #${id}: ${a.verb} requested.`);
      show();
      watch();
      loadLedger(true);
    } catch (e) {
      fill(status, problemBox(e));
    }
  }

  /** Save the form's schedule (keeping its start), or end it (`null`). */
  async function editSchedule(ev) {
    fill(status);
    for (const c of [every, until]) setFieldError(c, null);
    try {
      let res;
      if (ev) {
        const body = { every: every.value.trim() };
        if (job.schedule && job.schedule.not_before) body.not_before = job.schedule.not_before;
        if (until.value) body.until = new Date(until.value).toISOString();
        res = await request(`/jobs/${id}/schedule`, { method: 'PUT', json: body });
      } else {
        if (!(await confirmDialog('End this schedule?', `Job #${id} runs no more delta passes: a pass in progress finishes, then the job ends in the state of its last pass.`, 'End schedule'))) return;
        res = await request(`/jobs/${id}/schedule`, { method: 'DELETE' });
      }
      job = await res.json();
      notice(ev ? `Job #${id}: schedule saved.` : `Job #${id}: schedule ended.`);
      scheduleForm.hidden = true;
      show();
      watch();
    } catch (e) {
      const errs = (e.problem && e.problem.errors) || [];
      for (const err of errs) {
        const c = { 'schedule.every': every, 'schedule.until': until }[err.field];
        if (c) setFieldError(c, err.message || err.detail);
      }
      fill(status, problemBox(e));
    }
  }

  async function report(format) {
    fill(status);
    try {
      const res = await request(`/jobs/${id}/report?format=${format}`, { signal });
      download(await res.blob(), `job-${id}-report.${format}`);
    } catch (e) {
      if (e.name !== 'AbortError') fill(status, problemBox(e));
    }
  }

  async function receipt() {
    fill(status);
    try {
      const res = await request(`/jobs/${id}/receipt`, { signal });
      download(await res.blob(), `job-${id}-receipt.json`);
    } catch (e) {
      if (e.name !== 'AbortError') fill(status, problemBox(e));
    }
  }

  /** Follow the job's events while it is active; refresh the job on state changes. */
  function watch() {
    if (stream) stream.abort();
    if (!['queued', 'running', 'scheduled'].includes(job.state) && !job.cancel_requested && !job.pause_requested) return;
    const c = new AbortController();
    stream = c;
    signal.addEventListener('abort', () => c.abort(), { once: true });
    let refreshing = null;
    const refresh = () => {
      refreshing ??= getJSON(`/jobs/${id}`, { signal: c.signal }).then((j) => { job = j; show(); }).catch(() => {}).finally(() => { refreshing = null; });
    };
    streamEvents(`/jobs/${id}/events`, (name, data) => {
      if (name === 'progress' && data.counts) {
        job = { ...job, state: data.state, counts: data.counts };
        const bar = summary.querySelector('.progress');
        if (bar) bar.replaceWith(progress(data.counts, id));
        for (const [k, v] of Object.entries({ Listed: data.counts.listed, Copied: data.counts.copied, Skipped: data.counts.skipped, Failed: data.counts.failed })) {
          const dd = summary.querySelector(`dd[data-k="${k}"]`);
          if (dd) dd.textContent = num(v);
        }
      }
      if (name === 'state') refresh();
    }, c.signal).then(() => {
      if (!c.signal.aborted) {
        refresh();
        loadLedger(true);
      }
    }).catch((e) => { if (!c.signal.aborted) fill(status, problemBox(e)); });
  }

  // Ledger paging: a stack of cursors, like the jobs table.
  const cursors = [''];
  let next = null;
  const isBad = (m) => m.state === 'failed' || m.state === 'skipped';
  const onlyBad = h('input', { type: 'checkbox', id: 'only-bad', onchange: () => loadLedger(true) });
  async function loadLedger(stay) {
    if (!stay) next = null;
    const cursor = cursors[cursors.length - 1];
    let page;
    try {
      page = await getJSON(`/jobs/${id}/messages${qs({ cursor, limit: LEDGER_PAGE })}`, { signal });
    } catch (e) {
      if (e.name !== 'AbortError') fill(ledger, h('h2#ledger-h', 'Ledger'), problemBox(e));
      return;
    }
    next = page.next_cursor;
    const n = cursors.length;
    const failed = page.items.filter(isBad).length;
    fill(ledger,
      h('h2#ledger-h', 'Ledger'),
      h('p.muted', 'One row per source message: what happened to it and why. ', failed ? `${failed} failed or skipped on this page.` : ''),
      h('div.field.check', onlyBad, h('label', { for: 'only-bad' }, 'Show only failed and skipped messages of this page')),
      page.items.length
        ? h('div.table-wrap', h('table.ledger.stack',
          h('thead', h('tr', ['UIDL', 'State', 'Reason', 'Size', 'Dest. UID', 'Internal date', 'Copied'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', page.items.filter((m) => !onlyBad.checked || isBad(m)).map((m) => h('tr', { class: isBad(m) ? 'row-bad' : '' },
            h('td.mono', m.uidl),
            h('td', badge(m.state)),
            m.reason ? h('td.wrap', m.reason) : h('td', h('span.muted', '—')),
            h('td.num', { 'data-label': 'Size' }, bytes(m.size)),
            h('td.num', { 'data-label': 'Dest. UID' }, m.dest_uid ?? '—'),
            h('td', { 'data-label': 'Date' }, time(m.internal_date), m.internal_date_source ? h('span.muted', ` (${m.internal_date_source})`) : null),
            h('td', { 'data-label': 'Copied' }, time(m.copied_at)))))))
        : empty('The ledger is empty.', job.state === 'queued' ? 'The job has not listed its mailbox yet; rows appear once it runs.' : 'The source mailbox had no messages.'),
      h('nav.pager', { 'aria-label': 'Ledger pages' },
        h('button.secondary', { type: 'button', disabled: n <= 1, onclick: () => { cursors.pop(); loadLedger(); } }, '← Previous page'),
        h('span.muted', `Page ${n}`),
        h('button.secondary', { type: 'button', disabled: !next, onclick: () => { cursors.push(next); loadLedger(); } }, 'Next page →')));
  }

  show();
  watch();
  await loadLedger();
}

/** An RFC 3339 time as a datetime-local input's value (local time, minutes). */
function localInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function kv(k, v) {
  return [h('dt', k), h('dd', { dataset: { k } }, v)];
}
