// Policy: what is in force, its hash, the last reload and its error; reload for admins.
import { $, facts, safe } from './dom.js';
import { get, isAdmin, post } from './api.js';

async function load() {
  try {
    const p = await get('/api/policy');
    facts($('policy-facts'), [
      ['hash', p.hash],
      ['mode', p.mode],
      ['files', p.files.join(', ') || '(flags only)'],
      ['loaded at', p.loadedAt],
      ['reloads', p.reloads],
      ['failed reloads', p.reloadFailures],
    ]);
    $('policy-error').textContent = p.lastError ? `${safe(p.lastError.time)}\n${safe(p.lastError.message)}` : 'none';
    $('policy-body').textContent = safe(JSON.stringify(p.policy, null, 2));
  } catch (err) {
    $('policy-error').textContent = safe(err.message);
  }
}

export function init() {
  $('reload').addEventListener('click', async () => {
    $('reload-status').textContent = 'reloading...';
    try {
      const r = await post('/api/policy/reload');
      $('reload-status').textContent = `reloaded: ${safe(r.hash)}`;
    } catch (err) {
      $('reload-status').textContent = `${err.status ?? ''} ${safe(err.message)}`;
    }
    load();
  });
}

export function shown() {
  $('reload').hidden = !isAdmin();
  load();
}
