/* Jupiter dashboard: vanilla JS modules, no build step, nothing fetched from anywhere but this
 * coordinator. This is the page's entry (index.html loads it with <script type="module">): it
 * wires the page's controls and starts.
 *
 * The admin token is asked for once and kept in localStorage ("Forget token" removes it). A URL
 * fragment `#token=...` is stripped from the address bar at once and kept when the browser has no
 * token yet, so a link or a script can hand the page its token (`/#token=adm_...`). It never
 * silently replaces a token already kept: the page keeps using that one and asks (a notice with
 * "Use the link's token" / "Keep the current one"). `#job=ID` opens that job's detail.
 *
 * Every call sends `Authorization: Bearer <token>`. The job event stream (Server-Sent Events) is
 * read with fetch() and a stream reader (events.js), because EventSource cannot send that header.
 */

import { $ } from './dom.js';
import { api, store, authMessage, AuthError, Unreachable } from './api.js';
import { hashParams } from './address.js';
import { state } from './state.js';
import { renderNodes } from './nodes.js';
import { renderJobs } from './jobs.js';
import { renderTopology } from './topology.js';
import { jd, wireJobView } from './jobview.js';
import {
  takeTokenFromFragment, dropTokenOffer, acceptTokenOffer, showLogin, refused, start, refresh,
} from './session.js';

function init() {
  wireJobView({ refused, refresh });
  takeTokenFromFragment();
  // Rows are re-rendered on every poll, so their clicks are listened for on the table bodies.
  $('#nodes-body').addEventListener('click', (ev) => {
    const b = ev.target.closest('[data-toggle]');
    if (!b) return;
    const id = b.dataset.toggle;
    if (!state.expanded.delete(id)) state.expanded.add(id);
    renderNodes(state);
  });
  const pickJob = (ev) => {
    const tr = ev.target.closest('tr[data-job]');
    if (tr && (ev.type === 'click' || ev.key === 'Enter')) jd.open(tr.dataset.job);
  };
  $('#jobs-body').addEventListener('click', pickJob);
  $('#jobs-body').addEventListener('keydown', pickJob);
  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('#login-token').value.trim();
    if (!token) return;
    const btn = $('#login-submit');
    btn.disabled = true;
    const err = $('#login-error');
    try {
      await api('/cluster', { token });
      store.set(token);
      start(token);
    } catch (e) {
      err.hidden = false;
      err.textContent = e instanceof AuthError ? authMessage(e, false)
        : e instanceof Unreachable ? `Cannot reach the coordinator at ${location.origin} (${e.message}).`
          : `The coordinator answered ${e.message}.`;
    } finally {
      btn.disabled = false;
    }
  });
  $('#token-offer-use').addEventListener('click', () => acceptTokenOffer());
  $('#token-offer-keep').addEventListener('click', () => dropTokenOffer());
  $('#forget-token').addEventListener('click', (ev) => {
    ev.preventDefault();
    store.clear();
    showLogin('Token forgotten. Paste a token to connect again.');
  });
  $('#jd-close').addEventListener('click', () => { jd.close(); renderJobs(state, jd.id); });
  $('#jd-cancel').addEventListener('click', () => jd.cancel());
  $('#jd-log-scale').addEventListener('change', () => jd.renderChart());
  // The stream replays the whole log on connect: reconnect to show (or drop) the progress lines.
  $('#jd-show-progress').addEventListener('change', () => jd.reconnect());
  window.addEventListener('hashchange', () => {
    takeTokenFromFragment();
    const saved = store.get();
    if (saved && saved !== state.token) { start(saved); return; }
    const job = hashParams().get('job');
    if (job && job !== jd.id && state.token) jd.open(job);
  });
  window.addEventListener('resize', () => { if (jd.id) jd.renderChart(); renderTopology(state.topology); });
  const token = store.get();
  if (token) start(token);
  else showLogin(null);
}

init();
