// The dashboard's entry point: sign-in, the hash router and the view lifecycle.
// Views live in views/*.js and export render(main, params, ctx); ctx.signal aborts when
// the view is left, so streams and timers stop with it.

import { ApiError, getJSON, setUnauthorizedHandler, token } from './api.js';
import { field, fill, h, notice, problemBox } from './dom.js';

const routes = [
  [/^\/?$/, 'overview', () => import('./views/overview.js')],
  [/^\/jobs$/, 'jobs', () => import('./views/jobs.js')],
  [/^\/jobs\/(\d+)$/, 'jobs', () => import('./views/job.js')],
  [/^\/new$/, 'new', () => import('./views/new-job.js')],
  [/^\/batches$/, 'batches', () => import('./views/batches.js')],
  [/^\/batches\/(\d+)$/, 'batches', () => import('./views/batch.js')],
  [/^\/archives$/, 'archives', () => import('./views/archives.js')],
  [/^\/archives\/([\w.-]+)$/, 'archives', () => import('./views/archive.js')],
  [/^\/archives\/([\w.-]+)\/messages\/([0-9a-f]{64})$/, 'archives', () => import('./views/archive-message.js')],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = null; // AbortController of the view on screen

/** The route and its query: "#/jobs?state=running" → ["/jobs", URLSearchParams]. */
function location() {
  const raw = decodeURIComponent(window.location.hash.replace(/^#/, '')) || '/';
  const [path, query] = raw.split('?');
  return [path, new URLSearchParams(query || '')];
}

/** Navigate within the dashboard. */
export function go(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  const ctx = { signal: current.signal };
  notice('');
  if (!token.get()) {
    nav.hidden = true;
    signIn();
    return;
  }
  nav.hidden = false;
  const [path, query] = location();
  const found = routes.find(([re]) => re.test(path));
  for (const a of nav.querySelectorAll('a')) {
    if (found && a.dataset.nav === found[1]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    fill(main, h('h1', 'Not found'), h('p', 'There is no such page. ', h('a', { href: '#/' }, 'Go to the overview.')));
    return;
  }
  const [re, , load] = found;
  const params = re.exec(path).slice(1);
  try {
    const view = await load();
    if (ctx.signal.aborted) return;
    fill(main);
    await view.render(main, { params, query }, ctx);
  } catch (e) {
    if (e.name === 'AbortError' || ctx.signal.aborted) return;
    fill(main, problemBox(e));
    if (!(e instanceof ApiError)) console.warn(e);
  }
}

function signIn(message) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const status = h('div');
  const form = h(
    'form.card.signin',
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        fill(status);
        try {
          // Any read works as a check; a token without the read scope cannot use the page.
          await getJSON('/jobs?limit=1', { token: t });
          token.set(t);
          input.value = '';
          route();
        } catch (e) {
          fill(status, problemBox(e));
          input.focus();
        }
      },
    },
    h('h1', 'Sign in'),
    h('p', 'Paste an API token (from ', h('code', 'mailferry token create'), '). It is kept in this tab only and never shown again.'),
    field('API token', input),
    h('button', { type: 'submit' }, 'Sign in'),
    status,
  );
  fill(main, form);
  if (message) fill(status, problemBox(message));
  input.focus();
}

setUnauthorizedHandler((problem) => {
  token.clear();
  if (current) current.abort();
  nav.hidden = true;
  signIn(new ApiError(401, problem));
});

document.getElementById('sign-out').addEventListener('click', () => {
  token.clear();
  window.location.hash = '#/';
  route();
  notice('Signed out.');
});

window.addEventListener('hashchange', route);
route();
