// Small DOM helpers. Everything the API returns is put on the page with textContent
// (through h()), never as HTML: message metadata, reasons and errors are untrusted.

/** h('tag.class#id', {attrs}, ...children): an element; strings become text nodes. */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || 'div');
  for (const part of ((m && m[2]) || '').match(/[.#][\w-]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string' && k !== 'list') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A <time> in the viewer's timezone with the UTC instant on hover. */
export function time(iso) {
  if (!iso) return h('span.muted', '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', iso);
  return h('time', { datetime: d.toISOString(), title: `${d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace('Z', ' UTC')}` }, dateFmt.format(d));
}

const units = ['B', 'KB', 'MB', 'GB', 'TB'];

/** 1234567 → "1.2 MB" (decimal units, as MB/s is). */
export function bytes(n) {
  n = Number(n) || 0;
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

const numFmt = new Intl.NumberFormat();
export const num = (n) => numFmt.format(Number(n) || 0);

/** Copied / listed as a <progress> with a text label; `data-progress` carries the job id. */
export function progress(counts, id) {
  const listed = counts.listed || 0;
  const done = (counts.copied || 0) + (counts.skipped || 0) + (counts.failed || 0);
  const pct = listed ? Math.floor((100 * Math.min(done, listed)) / listed) : 0;
  const bar = h('progress', { max: Math.max(listed, 1), value: listed ? Math.min(done, listed) : 0 });
  bar.setAttribute('aria-label', id ? `Progress of job ${id}` : 'Progress');
  const label = h('span.progress-label', `${pct}% · ${num(counts.copied)} / ${num(listed)} copied · ${bytes(counts.bytes)}`);
  const wrap = h('div.progress', { dataset: { pct: String(pct) } }, bar, label);
  if (id) wrap.dataset.job = String(id);
  return wrap;
}

/** A state badge. */
export function badge(state) {
  return h(`span.badge.state-${state}`, state);
}

/** An empty state: what is missing and what to do next. */
export function empty(title, ...next) {
  return h('div.empty', h('p.empty-title', title), h('p', ...next));
}

/** A problem+json (or network) error as title and detail. */
export function problemBox(err) {
  const p = err && err.problem;
  const title = p ? p.title : 'Something went wrong';
  const detail = p ? p.detail : String((err && err.message) || err);
  return h('div.problem', { role: 'alert' }, h('strong', title), detail ? h('p', detail) : null);
}

/** A labelled form control: <label for> + control + slot for the field's error. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const err = h('p.field-error', { id: `${id}-err`, hidden: true });
  const hintEl = hint ? h('p.hint', { id: `${id}-hint` }, hint) : null;
  control.setAttribute('aria-describedby', [hintEl && hintEl.id, err.id].filter(Boolean).join(' '));
  const lab = h('label', { for: id }, label);
  return h('div.field', lab, control, hintEl, err);
}

/** Show `message` under the control named by `data-field` (or clear it with null). */
export function setFieldError(control, message) {
  const err = document.getElementById(`${control.id}-err`);
  if (!err) return;
  err.textContent = message || '';
  err.hidden = !message;
  if (message) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
}

/** Ask before doing something that cannot be undone; resolves true on "Confirm". */
export function confirmDialog(title, text, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel || 'Confirm';
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
  });
}

/** A status line for everyone (aria-live). */
export function notice(text, kind) {
  const el = document.getElementById('notice');
  el.textContent = text || '';
  el.className = `notice${kind ? ` ${kind}` : ''}`;
}

/** Save a Blob as a file download. */
export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
