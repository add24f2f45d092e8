// One archived message: its digest, parsed headers, every occurrence (which mailbox it came
// from, when, by which job), its tombstone if purged, and the message itself shown as plain
// text (textContent only: archived mail is evidence and untrusted, never rendered as HTML).

import { ApiError, getJSON, request } from '../api.js';
import { bytes, download, fill, h, num, problemBox, time } from '../dom.js';

export async function render(main, { params }, { signal }) {
  const [name, digest] = params;
  const base = `/archives/${encodeURIComponent(name)}/messages/${digest}`;
  const meta = await getJSON(`${base}/meta`, { signal });
  const m = meta.headers || {};
  const content = h('section.card', { 'aria-labelledby': 'content-h' }, h('h2#content-h', 'Message'), h('p.muted', 'Loading…'));

  fill(main,
    h('p', h('a', { href: `#/archives/${encodeURIComponent(name)}` }, `← Archive ${name}`)),
    h('h1', m.subject || '(no subject)'),
    h('section.grid',
      h('div.card', h('h2', 'Headers'), h('dl.kv',
        kv('From', (m.from || []).join(', ') || '—'), kv('To', (m.to || []).join(', ') || '—'),
        (m.cc || []).length ? kv('Cc', m.cc.join(', ')) : null,
        kv('Date', time(m.date)), kv('Message-ID', m.message_id || '—'),
        kv('Attachments', (m.attachment_names || []).length ? h('ul.plain', m.attachment_names.map((a) => h('li', a))) : 'none'))),
      h('div.card', h('h2', 'Storage'), h('dl.kv',
        kv('SHA-256', h('code.digest', meta.digest)), kv('State', meta.state), kv('Size', bytes(meta.size)),
        kv('Stored size', bytes(meta.stored_size)), kv('Sealed with key', meta.key_id || 'not sealed'), kv('Stored', time(meta.stored_at))),
        h('div.actions', h('button.secondary', { type: 'button', onclick: save }, 'Download .eml')))),
    meta.tombstone ? h('div.problem', { role: 'alert' }, h('strong', 'Purged under retention'),
      h('p', `${meta.tombstone.reason} — by ${meta.tombstone.purged_by}, `, time(meta.tombstone.purged_at))) : null,
    h('section.card', h('h2', `Occurrences (${num(meta.occurrences.length)})`),
      h('p.muted', 'Every mailbox this exact message was archived from; the source mailbox is the only record of Bcc recipients.'),
      h('div.table-wrap', h('table.occurrences.stack', h('caption.visually-hidden', 'Occurrences'),
        h('thead', h('tr', ['Account', 'Source host', 'UIDL', 'Job', 'Retrieved', 'Ingested', 'Log record'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', meta.occurrences.map((o) => h('tr',
          h('td', o.account), h('td', { 'data-label': 'Host' }, o.source_host), h('td.wrap', { 'data-label': 'UIDL' }, h('code', o.uidl)),
          h('td', { 'data-label': 'Job' }, o.job_id ? h('a', { href: `#/jobs/${o.job_id}` }, `#${o.job_id}`) : '—'),
          h('td', { 'data-label': 'Retrieved' }, time(o.retrieved_at)), h('td', { 'data-label': 'Ingested' }, time(o.ingested_at)),
          h('td.num', { 'data-label': 'Log record' }, `#${o.event_seq}`))))))),
    content);

  async function save() {
    const res = await request(base);
    download(await res.blob(), `${digest}.eml`);
  }

  if (meta.state !== 'stored') {
    fill(content, h('h2#content-h', 'Message'), h('p.muted', 'The message was purged; only its tombstone and provenance remain.'));
    return;
  }
  try {
    const res = await request(base, { signal });
    const text = new TextDecoder('utf-8', { fatal: false }).decode(await res.arrayBuffer());
    const split = text.search(/\r?\n\r?\n/);
    const head = split < 0 ? text : text.slice(0, split);
    const body = split < 0 ? '' : text.slice(split).replace(/^\r?\n\r?\n/, '');
    // <pre> with textContent: shown exactly as stored (MIME parts included), never interpreted.
    fill(content, h('h2#content-h', 'Message'),
      h('p.muted', 'Verified against its SHA-256 on the way out. Shown as plain text, exactly as archived.'),
      h('h3', 'Header'), h('pre.message-source', { dataset: { part: 'header' } }, head),
      h('h3', 'Body'), h('pre.message-source', { dataset: { part: 'body' } }, body));
  } catch (e) {
    if (e.name === 'AbortError') return;
    fill(content, h('h2#content-h', 'Message'), problemBox(e));
    if (!(e instanceof ApiError)) throw e;
  }
}

function kv(k, v) {
  return [h('dt', k), h('dd', v)];
}
