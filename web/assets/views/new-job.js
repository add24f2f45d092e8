// New job: a POP3 source, an IMAP folder or a compliance archive as target, and options. The API is the one validator: the
// form sends what was typed and shows each problem+json `errors[]` entry next to its field.

import { go } from '../app.js';
import { ApiError, request } from '../api.js';
import { field, fill, h, notice, problemBox, setFieldError } from '../dom.js';

const opt = (v, label) => h('option', { value: v }, label || v);

export async function render(main) {
  const controls = {}; // API field path → control
  const input = (path, attrs = {}) => (controls[path] = h('input', { name: path, ...attrs }));
  const select = (path, options) => (controls[path] = h('select', { name: path }, options));

  const afterDays = h('input', { name: 'options.delete.days', type: 'number', min: '1', value: '30', inputmode: 'numeric' });
  const deleteSel = select('options.delete', [opt('keep', 'Keep everything at the source'), opt('after-verified', 'Delete once the copy is verified'), opt('after-days', 'Delete N days after the copy')]);
  const daysField = field('Days before deleting', afterDays);
  daysField.hidden = true;
  deleteSel.addEventListener('change', () => { daysField.hidden = deleteSel.value !== 'after-days'; });

  const protocolSel = select('target.protocol', [opt('imap', 'IMAP folder'), opt('archive', 'Compliance archive')]);
  const archiveField = field('Archive name', input('target.archive', { autocomplete: 'off', placeholder: 'legal', spellcheck: 'false' }),
    'Letters, digits, ".", "_" or "-"; created on first use. Messages are kept byte for byte, deduplicated.');
  const imapRows = h('div',
    h('div.row',
      field('Host', input('target.host', { autocomplete: 'off', placeholder: 'imap.example.com', spellcheck: 'false' })),
      field('Port', input('target.port', { type: 'number', min: '1', max: '65535', inputmode: 'numeric', placeholder: '993' }), 'Empty: 993 for TLS, 143 otherwise'),
      field('Security', select('target.security', [opt('tls', 'TLS'), opt('starttls', 'STARTTLS'), opt('none', 'None (allow-listed hosts only)')]))),
    h('div.row',
      field('Username', input('target.username', { autocomplete: 'off', spellcheck: 'false' })),
      field('Password', input('target.password', { type: 'password', autocomplete: 'new-password' })),
      field('Authentication', select('target.auth', ['auto', 'login', 'plain', 'xoauth2'].map((v) => opt(v))))),
    h('div.row',
      field('Folder', input('target.folder', { value: 'INBOX', spellcheck: 'false' })),
      field('Flags', input('target.flags', { placeholder: '\\Seen', spellcheck: 'false' }), 'Set on every copied message, separated by spaces')));
  const showTarget = () => {
    const archive = protocolSel.value === 'archive';
    imapRows.hidden = archive;
    archiveField.hidden = !archive;
  };
  protocolSel.addEventListener('change', showTarget);
  showTarget();

  const labels = h('textarea', { name: 'labels', rows: '2', placeholder: 'team=sales\nwave=1', spellcheck: 'false' });
  controls.labels = labels;
  const general = h('div');
  const submit = h('button', { type: 'submit' }, 'Create job');

  const form = h('form.card.job-form', { novalidate: true, onsubmit: (ev) => { ev.preventDefault(); create(); } },
    h('fieldset',
      h('legend', 'Source (POP3)'),
      h('div.row',
        field('Host', input('source.host', { autocomplete: 'off', placeholder: 'pop.example.com', spellcheck: 'false' })),
        field('Port', input('source.port', { type: 'number', min: '1', max: '65535', inputmode: 'numeric', placeholder: '995' }), 'Empty: 995 for TLS, 110 otherwise'),
        field('Security', select('source.security', [opt('tls', 'TLS'), opt('starttls', 'STARTTLS'), opt('none', 'None (allow-listed hosts only)')]))),
      h('div.row',
        field('Username', input('source.username', { autocomplete: 'off', spellcheck: 'false' })),
        field('Password', input('source.password', { type: 'password', autocomplete: 'new-password' })),
        field('Authentication', select('source.auth', ['auto', 'user', 'apop', 'plain', 'xoauth2'].map((v) => opt(v)))))),
    h('fieldset',
      h('legend', 'Target'),
      h('div.row', field('Deliver to', protocolSel), archiveField),
      imapRows),
    h('fieldset',
      h('legend', 'Options'),
      h('div.row',
        field('At the source', deleteSel),
        daysField,
        field('Largest message (bytes)', input('options.max_message_bytes', { type: 'number', min: '1', inputmode: 'numeric' }), 'Larger messages are skipped and recorded; empty: no limit')),
      h('div.row',
        h('div.field.check', input('options.dry_run', { type: 'checkbox', id: 'dry-run' }), h('label', { for: 'dry-run' }, 'Dry run: list and compare only, copy and delete nothing')),
        field('Labels', labels, 'One key=value per line, for filtering'))),
    general,
    h('div.actions', submit));

  fill(main, h('h1', 'New job'), h('p.muted', 'Drain one POP3 mailbox into an IMAP folder or a compliance archive. Passwords are encrypted at rest and never shown again.'), form);

  function body() {
    const v = (p) => controls[p].value.trim();
    const port = (p) => (v(p) === '' ? undefined : Number(v(p)));
    const or = (x) => (x === '' ? undefined : x);
    const labelMap = {};
    const bad = [];
    for (const line of labels.value.split('\n').map((l) => l.trim()).filter(Boolean)) {
      const m = /^([^=:]+)[=:](.*)$/.exec(line);
      if (m) labelMap[m[1].trim()] = m[2].trim();
      else bad.push(line);
    }
    let del = deleteSel.value;
    if (del === 'after-days') del = `after-days:${afterDays.value.trim()}`;
    const flags = v('target.flags').split(/\s+/).filter(Boolean);
    return [{
      source: {
        protocol: 'pop3', host: or(v('source.host')), port: port('source.port'), security: v('source.security'),
        username: or(v('source.username')), password: or(controls['source.password'].value), auth: v('source.auth'),
      },
      target: protocolSel.value === 'archive' ? { protocol: 'archive', archive: or(v('target.archive')) } : {
        protocol: 'imap', host: or(v('target.host')), port: port('target.port'), security: v('target.security'),
        username: or(v('target.username')), password: or(controls['target.password'].value), auth: v('target.auth'),
        folder: or(v('target.folder')), flags: flags.length ? flags : undefined,
      },
      options: {
        delete: del,
        max_message_bytes: port('options.max_message_bytes'),
        dry_run: controls['options.dry_run'].checked,
      },
      labels: labelMap,
    }, bad];
  }

  function clearErrors() {
    for (const c of Object.values(controls)) setFieldError(c, null);
    setFieldError(afterDays, null);
    fill(general);
  }

  /** The control an API error names: `target.flags[2]` → target.flags, `labels.x` → labels. */
  function controlFor(path) {
    const p = path.replace(/\[\d+\]$/, '');
    if (p === 'options.delete' && deleteSel.value === 'after-days') return afterDays;
    if (controls[p]) return controls[p];
    if (p.startsWith('labels')) return labels;
    return null;
  }

  async function create() {
    clearErrors();
    const [job, badLabels] = body();
    if (badLabels.length) {
      setFieldError(labels, `Labels are key=value, one per line; not: ${badLabels.join(', ')}`);
      labels.focus();
      return;
    }
    submit.disabled = true;
    try {
      const res = await request('/jobs', { method: 'POST', json: job, headers: { 'Idempotency-Key': crypto.randomUUID() } });
      const created = await res.json();
      notice(`Job #${created.id} created.`);
      go(`#/jobs/${created.id}`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const unplaced = [];
      const messages = new Map();
      for (const err of e.problem.errors || []) {
        const c = controlFor(err.field);
        if (c) messages.set(c, [...(messages.get(c) || []), err.message]);
        else unplaced.push(err);
      }
      for (const [c, msgs] of messages) setFieldError(c, msgs.join('; '));
      fill(general, problemBox(e), unplaced.length ? h('ul', unplaced.map((u) => h('li', u.field ? `${u.field}: ` : '', u.message))) : null);
      const first = [...messages.keys()][0];
      (first || general).focus?.();
    } finally {
      submit.disabled = false;
    }
  }
}
