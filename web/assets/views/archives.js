// Archives: the archive API does not exist yet (DESIGN.md §7 lists an archive browser with
// search and verify). Until it does, this view says so instead of guessing at routes.
// EMPTY STATE: "Archives arrive with the archive feature" — replace with the real views
// (list, search, message view, verify, export) once /api/v1/archives exists.

import { empty, fill, h } from '../dom.js';

export async function render(main) {
  fill(main, h('h1', 'Archives'),
    h('section.card', { dataset: { empty: 'archives' } },
      empty('Archives arrive with the archive feature.',
        'This server has no archive API yet. Once it does, this page will list archives, search them, show messages and run verify and export. ',
        'Meanwhile, ', h('a', { href: '#/new' }, 'migrate mailboxes to IMAP'), '.')));
}
