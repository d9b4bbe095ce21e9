// Entry point: sign-in, the view switcher, and the one EventSource the views share.
import { $ } from './dom.js';
import { isAdmin, resume, session, signIn, signOut, whenSignedOut } from './api.js';
import * as live from './live.js';
import * as overview from './overview.js';
import * as approvals from './approvals.js';
import * as policy from './policy.js';

const VIEWS = { live, overview, approvals, policy };
let current = null;

function showSignIn(message = '') {
  live.stop();
  approvals.stop();
  $('main').hidden = true;
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('who').textContent = '';
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('token').focus();
}

function viewName() {
  const v = location.hash.replace(/^#/, '');
  return v in VIEWS ? v : 'live';
}

function show() {
  const name = viewName();
  for (const [n] of Object.entries(VIEWS)) $(`view-${n}`).hidden = n !== name;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  current = name;
  VIEWS[name].shown();
}

function signedIn() {
  const s = session();
  $('signin').hidden = true;
  $('main').hidden = false;
  $('nav').hidden = false;
  $('signout').hidden = s.open;
  $('who').textContent = s.open ? 'open admin API (no token)' : s.role === 'admin' ? 'signed in: admin' : 'signed in: viewer (read-only)';
  document.body.classList.toggle('viewer', !isAdmin());
  live.start();
  approvals.start();
  show();
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('token');
  const token = input.value;
  input.value = '';
  try {
    await signIn(token);
    signedIn();
  } catch (err) {
    showSignIn(err.status === 401 ? 'Wrong token.' : String(err.message));
  }
});

$('signout').addEventListener('click', async () => {
  await signOut().catch(() => undefined);
  showSignIn('Signed out.');
});

window.addEventListener('hashchange', () => {
  if (!$('main').hidden) show();
});

whenSignedOut(() => showSignIn('Your session ended; sign in again.'));
for (const v of Object.values(VIEWS)) v.init?.();
resume().then((ok) => (ok ? signedIn() : showSignIn()));
export { current };
