// Archives: every compliance archive with its counts, stored vs logical bytes, dedup ratio,
// retention and legal holds. Each links to its search, verify and export page.

import { getJSON } from '../api.js';
import { bytes, empty, fill, h, num } from '../dom.js';
import { holdText, retentionText } from './archive.js';

export async function render(main, _route, { signal }) {
  const list = await getJSON('/archives', { signal });
  if (!list.items.length) {
    fill(main, h('h1', 'Archives'),
      h('section.card', { dataset: { empty: 'archives' } },
        empty('No archives yet.',
          'An archive is created by the first job that drains a mailbox into it: ',
          h('a', { href: '#/new' }, 'create a job'), ' with the target “Archive” and a name such as ', h('code', 'legal'), '.')));
    return;
  }
  const rows = list.items.map((a) => h('tr', { dataset: { archive: a.name } },
    h('td', h('a', { href: `#/archives/${encodeURIComponent(a.name)}` }, a.name)),
    h('td.num', { 'data-label': 'Messages' }, num(a.messages)),
    h('td.num', { 'data-label': 'Occurrences' }, num(a.occurrences)),
    h('td.num', { 'data-label': 'Stored' }, bytes(a.stored_bytes)),
    h('td.num', { 'data-label': 'Logical' }, bytes(a.logical_bytes)),
    h('td.num', { 'data-label': 'Dedup ratio' }, `${a.dedup_ratio.toFixed(2)}×`),
    h('td', { 'data-label': 'Retention' }, retentionText(a.retention_days)),
    h('td.wrap', { 'data-label': 'Legal holds' }, a.holds.length ? h('ul.plain', a.holds.map((x) => h('li', holdText(x)))) : h('span.muted', 'none'))));
  fill(main, h('h1', 'Archives'),
    h('p.muted', 'Messages are stored once per archive by the SHA-256 of their exact bytes; every arrival from a mailbox is an occurrence. Stored bytes are after compression; logical bytes count every occurrence.'),
    h('section.card', h('div.table-wrap', h('table.archives.stack',
      h('caption.visually-hidden', 'Archives'),
      h('thead', h('tr', ['Archive', 'Messages', 'Occurrences', 'Stored', 'Logical', 'Dedup ratio', 'Retention', 'Legal holds'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', rows)))));
}
