// The session and every call to the admin API. The token is sent once, in the sign-in POST body; after
// that only the HttpOnly cookie (which scripts cannot read) and the CSRF token (kept in memory only,
// never in storage) travel. Nothing is ever put in a URL.
const state = { role: null, csrf: null, open: false };

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onSignedOut = () => {};
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export const session = () => state;
export const isAdmin = () => state.role === 'admin';

async function call(method, path, body) {
  const headers = {};
  if (method !== 'GET') {
    headers['content-type'] = 'application/json';
    if (state.csrf) headers['x-csrf-token'] = state.csrf;
  }
  const res = await fetch(path, { method, headers, credentials: 'same-origin', cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    if (res.status === 401 && path !== '/api/session') {
      state.role = null;
      onSignedOut();
    }
    throw new ApiError(res.status, (data && (data.message || data.error)) || `HTTP ${res.status}`);
  }
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body = {}) => call('POST', path, body);

/** The current session, if the cookie still holds one (after a reload of the page). */
export async function resume() {
  try {
    const s = await call('GET', '/api/session');
    Object.assign(state, { role: s.role, csrf: s.csrfToken, open: s.open });
    return true;
  } catch {
    return false;
  }
}

export async function signIn(token) {
  const s = await call('POST', '/api/session', { token });
  Object.assign(state, { role: s.role, csrf: s.csrfToken, open: s.open });
}

export async function signOut() {
  try {
    await call('DELETE', '/api/session');
  } finally {
    Object.assign(state, { role: null, csrf: null });
  }
}

/** Query string from a filter object, empty values left out. */
export function qs(obj) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== undefined && v !== null && String(v).trim() !== '') q.set(k, String(v).trim());
  return q.toString();
}
