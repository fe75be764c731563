/* The page's session with the coordinator: which token it uses (the login prompt, a link's
 * `#token=`), and the poll that keeps every panel fresh while it is accepted. */

import { $ } from './dom.js';
import { api, store, authMessage, AuthError, ApiError, Unreachable } from './api.js';
import { hashParams, setHash } from './address.js';
import { setConn, banner } from './notice.js';
import { state } from './state.js';
import { renderTiles } from './tiles.js';
import { renderNodes } from './nodes.js';
import { renderJobs, MAX_JOB_ROWS } from './jobs.js';
import { renderTopology } from './topology.js';
import { renderProblems } from './problems.js';
import { jd } from './jobview.js';

const REFRESH_MS = 2500;

/** Move `#token=...` out of the address bar (and the history); keep it if no token is kept yet.
 * A different token already kept stays in use: a link must not swap the admin's session for
 * someone else's without a click, so the page offers the link's token instead. */
let offeredToken = null;
export function takeTokenFromFragment() {
  const params = hashParams();
  const token = params.get('token');
  if (token === null) return;
  params.delete('token');
  setHash(params);
  const offered = token.trim();
  const saved = store.get();
  if (!offered || offered === saved) return;
  if (!saved) { store.set(offered); return; }
  offeredToken = offered;
  $('#token-offer-error').hidden = true;
  $('#token-offer').hidden = false;
}

export function dropTokenOffer() {
  offeredToken = null;
  $('#token-offer').hidden = true;
}

/** "Use the link's token": checked against the coordinator first, so a bad link cannot log out. */
export async function acceptTokenOffer() {
  const token = offeredToken;
  if (!token) return;
  const err = $('#token-offer-error');
  try {
    await api('/cluster', { token });
  } catch (e) {
    err.hidden = false;
    err.textContent = `The coordinator refused the link's token (${e.message}); the kept token stays in use.`;
    return;
  }
  dropTokenOffer();
  store.set(token);
  start(token);
}

export function showLogin(message) {
  state.token = null;
  state.generation += 1;
  clearTimeout(state.timer);
  jd.close();
  setConn('auth', 'token needed');
  banner(null);
  $('#forget-token').hidden = true;
  $('#login').hidden = false;
  const input = $('#login-token');
  input.value = '';
  if (offeredToken) {
    // The kept token is refused: the link's token is the user's to choose, by pressing Connect.
    input.value = offeredToken;
    message = `${message ? message + ' ' : ''}The token from the link is filled in: Connect uses it.`;
    dropTokenOffer();
  }
  const err = $('#login-error');
  err.hidden = !message;
  err.textContent = message || '';
  input.focus();
}

/** The kept token was refused (revoked, or the coordinator's was rotated): forget it and ask. */
export function refused(e) {
  store.clear();
  showLogin(authMessage(e, true));
}

export function start(token) {
  state.token = token;
  state.generation += 1;
  $('#login').hidden = true;
  $('#forget-token').hidden = false;
  $('#main').hidden = false;
  refresh();
  const job = hashParams().get('job');
  if (job) jd.open(job);
}

export async function refresh() {
  clearTimeout(state.timer);
  const gen = state.generation;
  if (!state.token) return;
  try {
    const [nodes, jobs, cluster, topology] = await Promise.all([
      api('/nodes'), api(`/jobs?limit=${MAX_JOB_ROWS + 1}`), api('/cluster'), api('/topology'),
    ]);
    if (gen !== state.generation) return;
    Object.assign(state, { nodes, jobs, cluster, topology, updated: new Date() });
    $('#main').classList.remove('stale');
    banner(null);
    setConn('ok', `live · updated ${state.updated.toLocaleTimeString([], { hour12: false })}`);
    render();
  } catch (e) {
    if (gen !== state.generation) return;
    if (e instanceof AuthError) {
      refused(e);
      return;
    }
    $('#main').classList.add('stale');
    const since = state.updated ? ` The data below is from ${state.updated.toLocaleTimeString([], { hour12: false })}.` : '';
    if (e instanceof Unreachable) {
      setConn('down', 'coordinator unreachable');
      banner(`Cannot reach the coordinator at ${location.origin} (${e.message}). ` +
             `Retrying every ${REFRESH_MS / 1000} s.${since}`);
    } else {
      if (!(e instanceof ApiError)) console.error(e);  // a bug here, not an answer from there
      setConn('error', 'error');
      banner(`The coordinator answered ${e.message}. Retrying every ${REFRESH_MS / 1000} s.${since}`, true);
    }
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

function render() {
  renderTiles(state);
  renderNodes(state);
  renderJobs(state, jd.id);
  renderTopology(state.topology);
  renderProblems(state);
  jd.fromList(state.jobs);
}
