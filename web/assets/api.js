// The API client: bearer token from the tab's session storage, problem+json errors, and
// Server-Sent Events read through fetch() (EventSource cannot send an Authorization
// header, and the token must not go into a URL where logs and history would keep it).

const KEY = 'mailferry.token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An API failure; `problem` is the RFC 9457 body ({type, title, status, detail, errors}). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let onUnauthorized = () => {};
/** Called when the API answers 401 (the token was revoked or never valid). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function problemOf(res) {
  const type = res.headers.get('content-type') || '';
  if (type.includes('json')) {
    try {
      return await res.json();
    } catch {
      /* fall through */
    }
  }
  return { title: res.statusText || `HTTP ${res.status}`, status: res.status, detail: '' };
}

/**
 * fetch() under /api/v1 with the bearer token. Returns the Response for 2xx; throws
 * ApiError with the problem otherwise. `opts.token` overrides the stored token.
 */
export async function request(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const t = opts.token || token.get();
  if (t) headers.set('Authorization', `Bearer ${t}`);
  let body = opts.body;
  if (opts.json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(opts.json);
  }
  let res;
  try {
    res = await fetch(`/api/v1${path}`, { method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'The server cannot be reached', detail: String(e.message || e), status: 0 });
  }
  if (res.ok) return res;
  const problem = await problemOf(res);
  if (res.status === 401 && !opts.token) onUnauthorized(problem);
  throw new ApiError(res.status, problem);
}

export async function getJSON(path, opts) {
  return (await request(path, opts)).json();
}

export async function postJSON(path, json, opts = {}) {
  return (await request(path, { ...opts, method: 'POST', json })).json();
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Follow a job's event stream: calls onEvent(name, data) for each event until the server
 * ends the stream (job finished or paused) or `signal` aborts. Resolves when it ends.
 */
export async function streamEvents(path, onEvent, signal) {
  const res = await request(path, { headers: { Accept: 'text/event-stream' }, signal });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue; // keep-alive comment
          const i = line.indexOf(':');
          const f = i < 0 ? line : line.slice(0, i);
          const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
          if (f === 'event') name = v;
          else if (f === 'data') data.push(v);
        }
        if (!data.length) continue;
        let parsed = data.join('\n');
        try {
          parsed = JSON.parse(parsed);
        } catch {
          /* not JSON: pass the text */
        }
        onEvent(name, parsed);
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  } finally {
    reader.releaseLock();
  }
}

/** Every job matching `filter`, following the cursor (500 per page). */
export async function allJobs(filter = {}, signal) {
  const out = [];
  let cursor;
  do {
    const page = await getJSON(`/jobs${qs({ ...filter, cursor, limit: 500 })}`, { signal });
    out.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}
