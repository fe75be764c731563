/* Jupiter dashboard: vanilla JS, no build step, nothing fetched from anywhere but this coordinator.
 *
 * The admin token is asked for once and kept in localStorage ("Forget token" removes it). A URL
 * fragment `#token=...` is stripped from the address bar at once and kept when the browser has no
 * token yet, so a link or a script can hand the page its token (`/#token=adm_...`). It never
 * silently replaces a token already kept: the page keeps using that one and asks (a notice with
 * "Use the link's token" / "Keep the current one"). `#job=ID` opens that job's detail.
 *
 * Every call sends `Authorization: Bearer <token>`. The job event stream (Server-Sent Events) is
 * read with fetch() and a stream reader, because EventSource cannot send that header.
 */
(() => {
  'use strict';

  const TOKEN_KEY = 'jupiter.adminToken';
  const REFRESH_MS = 2500;
  const RECONNECT_MS = 2000;
  const MAX_LOG_LINES = 4000;
  const MAX_JOB_ROWS = 30;  // GET /jobs carries each job's loss history: keep the poll small
  const STATUSES = ['ready', 'busy', 'draining', 'down', 'pending'];  // pending: enrolled, awaiting approval
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------- tiny DOM helpers

  function add(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    return add(el, kids);
  }

  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v);
    }
    return add(el, kids);
  }

  /** Make `from` look like `to` in place: the elements that stay keep their identity, so a click,
   * a hover tooltip or a text selection survives the refresh. Listeners are not copied: content
   * that is re-rendered uses delegated listeners (see init). */
  function morph(from, to) {
    if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName || from.nodeType !== Node.ELEMENT_NODE) {
      if (from.nodeType === Node.TEXT_NODE && to.nodeType === Node.TEXT_NODE) {
        if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      } else {
        from.replaceWith(to);
      }
      return;
    }
    for (const { name } of [...from.attributes]) {
      if (name !== 'style' && !to.hasAttribute(name)) from.removeAttribute(name);
    }
    for (const { name, value } of [...to.attributes]) {
      if (name !== 'style' && from.getAttribute(name) !== value) from.setAttribute(name, value);
    }
    if (from.style && from.style.cssText !== to.style.cssText) from.style.cssText = to.style.cssText;  // CSSOM: CSP allows it
    morphKids(from, [...to.childNodes]);
  }

  function morphKids(parent, kids) {
    kids.forEach((kid, i) => {
      const cur = parent.childNodes[i];
      if (cur) morph(cur, kid); else parent.append(kid);
    });
    while (parent.childNodes.length > kids.length) parent.lastChild.remove();
  }

  /** Like el.replaceChildren(...kids), but morphing what is there. */
  function setKids(el, ...kids) {
    morphKids(el, kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false)
      .map((k) => (k instanceof Node ? k : document.createTextNode(String(k)))));
  }

  // ---------------------------------------------------------------- formatting

  const dash = '—';

  function parseTime(iso) {
    if (!iso) return null;
    const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + 'Z');
    return Number.isNaN(t) ? null : t;
  }

  function ago(iso) {
    const t = parseTime(iso);
    if (t === null) return dash;
    const sec = Math.max(0, (Date.now() - t) / 1000);
    if (sec < 10) return `${sec.toFixed(1)} s ago`;
    if (sec < 90) return `${Math.round(sec)} s ago`;
    if (sec < 5400) return `${Math.round(sec / 60)} min ago`;
    if (sec < 172800) return `${Math.round(sec / 3600)} h ago`;
    return `${Math.round(sec / 86400)} days ago`;
  }

  function clock(iso) {
    const t = parseTime(iso);
    if (t === null) return dash;
    const d = new Date(t);
    const today = new Date().toDateString() === d.toDateString();
    const hms = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    return today ? hms : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${hms}`;
  }

  function duration(sec) {
    if (sec === null || sec === undefined || !Number.isFinite(sec)) return dash;
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return `${sec}s`;
    if (sec < 3600) return `${Math.floor(sec / 60)}m ${String(sec % 60).padStart(2, '0')}s`;
    if (sec < 86400) return `${Math.floor(sec / 3600)}h ${String(Math.floor(sec / 60) % 60).padStart(2, '0')}m`;
    return `${Math.floor(sec / 86400)}d ${Math.floor(sec / 3600) % 24}h`;
  }

  function gb(x) {
    if (x === null || x === undefined) return dash;
    return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1).replace(/\.0$/, '') : x.toFixed(1);
  }

  function num(x, digits = 4) {
    if (x === null || x === undefined || !Number.isFinite(x)) return dash;
    if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
    return Number(x.toPrecision(digits)).toString();
  }

  function count(x) {
    if (x === null || x === undefined || !Number.isFinite(x)) return dash;
    return Math.round(x).toLocaleString('en-US');
  }

  function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }

  function pill(status) { return h('span', { class: `pill s-${status}` }, status); }

  // ---------------------------------------------------------------- token

  const memory = {};
  const store = {
    get() { try { return localStorage.getItem(TOKEN_KEY); } catch (e) { return memory.token || null; } },
    set(v) { try { localStorage.setItem(TOKEN_KEY, v); } catch (e) { memory.token = v; } },
    clear() { try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* none */ } delete memory.token; },
  };

  function hashParams() { return new URLSearchParams(location.hash.replace(/^#/, '')); }

  function setHash(params) {
    const text = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (text ? '#' + text : ''));
  }

  /** Move `#token=...` out of the address bar (and the history); keep it if no token is kept yet.
   * A different token already kept stays in use: a link must not swap the admin's session for
   * someone else's without a click, so the page offers the link's token instead. */
  let offeredToken = null;
  function takeTokenFromFragment() {
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

  function dropTokenOffer() {
    offeredToken = null;
    $('#token-offer').hidden = true;
  }

  /** "Use the link's token": checked against the coordinator first, so a bad link cannot log out. */
  async function acceptTokenOffer() {
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

  // ---------------------------------------------------------------- API

  class AuthError extends Error {
    constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
  }
  class Unreachable extends Error {}
  class ApiError extends Error {
    constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
  }

  async function detailOf(res) {
    try {
      const body = await res.json();
      const d = body && body.detail;
      if (typeof d === 'string') return d;
      if (Array.isArray(d)) return d.map((e) => e.msg || JSON.stringify(e)).join('; ');
      return JSON.stringify(d ?? body);
    } catch (e) {
      return res.statusText || 'no detail';
    }
  }

  async function call(path, { method = 'GET', token = state.token, signal, accept = 'application/json' } = {}) {
    let res;
    try {
      res = await fetch(path, {
        method, signal, cache: 'no-store',
        headers: { Authorization: `Bearer ${token}`, Accept: accept },
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new Unreachable(e.message || 'network error');
    }
    if (res.status === 401 || res.status === 403) throw new AuthError(res.status, await detailOf(res));
    if (!res.ok) throw new ApiError(res.status, await detailOf(res));
    return res;
  }

  const api = async (path, opts) => (await call(path, opts)).json();

  // ---------------------------------------------------------------- state

  const state = {
    token: null,
    nodes: [], jobs: [], cluster: null, topology: null,
    expanded: new Set(),      // node ids whose problems are shown
    updated: null,
    timer: null,
    generation: 0,            // bumps when the token changes: late answers for an old token are dropped
  };

  // ---------------------------------------------------------------- connection and errors

  function setConn(kind, text) {
    const el = $('#conn');
    el.dataset.state = kind;
    $('#conn-text').textContent = text;
  }

  function banner(text, warn = false) {
    const el = $('#banner');
    if (!text) { el.hidden = true; el.textContent = ''; return; }
    el.hidden = false;
    el.className = warn ? 'banner warn' : 'banner';
    el.textContent = text;
  }

  function showLogin(message) {
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

  function authMessage(e, saved) {
    const hint = e.status === 403 ? 'That is not the admin token (a join or node token?).'
      : 'The coordinator does not know that token.';
    return `${saved ? 'The coordinator refused the token' : 'Refused'} (${e.status}: ${e.detail}). ${hint} Paste the admin token.`;
  }

  function start(token) {
    state.token = token;
    state.generation += 1;
    $('#login').hidden = true;
    $('#forget-token').hidden = false;
    $('#main').hidden = false;
    refresh();
    const job = hashParams().get('job');
    if (job) jd.open(job);
  }

  // ---------------------------------------------------------------- polling

  async function refresh() {
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
        store.clear();
        showLogin(authMessage(e, true));
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
    renderTiles();
    renderNodes();
    renderJobs();
    renderTopology();
    renderProblems();
    jd.fromList(state.jobs);
  }

  // ---------------------------------------------------------------- summary tiles

  function tile(label, value, sub, cls) {
    return h('div', { class: `tile ${cls || ''}` },
      h('div', { class: 'tile-label' }, label),
      h('div', { class: 'tile-value' }, value),
      h('div', { class: 'tile-sub' }, sub));
  }

  function swatch(status, n) {
    const i = h('i', { class: `s-${status}` });
    i.style.background = `var(--${status})`;
    return h('span', { class: 'sw' }, i, `${n} ${status}`);
  }

  function renderTiles() {
    const c = state.cluster || {};
    const by = c.nodes_by_status || {};
    const jobs = state.jobs;
    const running = jobs.filter((j) => j.status === 'running' || j.status === 'starting').length;
    const pending = jobs.filter((j) => j.status === 'pending').length;
    const failed = jobs.filter((j) => j.status === 'failed').length;
    const issues = (c.issues || []).length;
    const memTotal = c.memory_gb || 0;
    const memFree = c.memory_available_gb || 0;
    const memBar = h('div', { class: 'bar' }, h('span'));
    memBar.firstChild.style.width = `${memTotal ? Math.min(100, 100 * (1 - memFree / memTotal)) : 0}%`;
    const comps = (state.topology && state.topology.components || []).filter((x) => x.nodes.length > 1);
    setKids($('#tiles'), 
      tile('Nodes', String(c.nodes ?? state.nodes.length),
        STATUSES.filter((st) => by[st]).map((st) => swatch(st, by[st])), by.down ? 'bad' : ''),
      tile('Memory', h('span', {}, gb(memFree), h('small', {}, `of ${gb(memTotal)} GB free`)), memBar),
      tile('Jobs running', String(running),
        `${pending} pending · ${failed} failed · ${plural(Math.min(jobs.length, MAX_JOB_ROWS), 'recent job')}`),
      tile('Problems', String(issues), issues ? 'see the list below, with fixes' : 'nothing to fix',
        issues ? 'bad' : 'good'),
      tile('Backend', c.backend || dash,
        comps.length ? comps.map((x) => `${x.kind} of ${x.nodes.length}`).join(', ') : 'no Thunderbolt groups'),
    );
  }

  // ---------------------------------------------------------------- nodes

  function mpiCell(mpi) {
    if (!mpi || !mpi.implementation) return h('span', { class: 'badge bad' }, 'none');
    const name = mpi.implementation === 'openmpi' ? 'Open MPI' : mpi.implementation === 'mpich' ? 'MPICH' : mpi.implementation;
    return h('span', {}, name, ' ', h('span', { class: 'muted' }, mpi.version || ''),
      mpi.implementation === 'mpich' ? h('span', { class: 'badge warn', title: 'MLX loads only Open MPI' }, 'not for MLX') : null);
  }

  function memCell(n) {
    if (n.memory_gb === null || n.memory_gb === undefined) return dash;
    const free = n.memory_available_gb;
    const bar = h('div', { class: 'bar' }, h('span'));
    if (free !== null && free !== undefined && n.memory_gb) {
      bar.firstChild.style.width = `${Math.min(100, Math.max(0, 100 * (1 - free / n.memory_gb)))}%`;
    }
    return h('div', { class: 'mem' },
      h('span', {}, h('b', {}, `${gb(n.memory_gb)} GB`), h('span', { class: 'muted' }, ` · ${gb(free)} free`)), bar);
  }

  /** "macOS 15.2 (24C101)" -> "macOS 15.2"; "Debian GNU/Linux 12 (bookworm), kernel ..." -> "Debian GNU/Linux 12". */
  function shortOs(text) { return text ? text.split(/[,(]/)[0].trim() : null; }

  function renderNodes() {
    const body = $('#nodes-body');
    const nodes = state.nodes;
    $('#nodes-note').textContent = nodes.length ? plural(nodes.length, 'node') : '';
    if (!nodes.length) {
      setKids(body, h('tr', {}, h('td', { class: 'empty', colspan: 9 },
        'No node has reported yet. Start an agent: jupiter agent --coordinator ' + location.origin + ' --name NAME')));
      return;
    }
    const rows = [];
    for (const n of nodes) {
      const probs = n.problems || [];
      const open = state.expanded.has(n.id);
      const mlx = n.mlx_version
        ? h('span', {}, n.mlx_version, h('span', { class: `badge ${n.mlx_device === 'gpu' ? 'gpu' : ''}` }, n.mlx_device || '?'))
        : h('span', { class: 'badge bad' }, 'no MLX');
      rows.push(h('tr', { class: 'node', dataset: { node: n.name, status: n.status } },
        h('td', {}, h('span', { class: 'name' }, n.name),
          h('span', { class: 'sub', title: n.id }, n.role || '')),
        h('td', { class: 'host' }, h('span', { class: 'mono' }, n.host)),
        h('td', { class: 'status' }, pill(n.status)),
        h('td', { class: 'chip', title: n.os_version || '' }, n.chip || dash,
          h('span', { class: 'sub' }, [n.device_type, n.cpu_cores ? `${n.cpu_cores} cores` : null, shortOs(n.os_version)]
            .filter(Boolean).join(' · '))),
        h('td', { class: 'mem-cell' }, memCell(n)),
        h('td', { class: 'mlx' }, mlx, n.python_version ? h('span', { class: 'sub' }, `Python ${n.python_version}`) : null),
        h('td', { class: 'mpi' }, mpiCell(n.mpi)),
        h('td', { class: n.status === 'down' ? 'hb down' : 'hb', title: n.last_heartbeat || '' }, ago(n.last_heartbeat)),
        h('td', { class: 'problems-cell' }, probs.length
          ? h('button', { class: 'probs-btn', type: 'button', 'aria-expanded': String(open), dataset: { toggle: n.id } },
            `${probs.length} ${open ? '▾' : '▸'}`)
          : h('span', { class: 'ok-mark' }, 'none'))));
      if (open && probs.length) {
        rows.push(h('tr', { class: 'problem-row' }, h('td', { colspan: 9 },
          h('ul', {}, probs.map((p) => h('li', {}, p))))));
      }
    }
    setKids(body, ...rows);
  }

  // ---------------------------------------------------------------- jobs

  function progressOf(job) {
    const p = job.progress || {};
    const step = Number.isFinite(p.step) ? p.step : null;
    const total = Number.isFinite(p.total_steps) && p.total_steps > 0 ? p.total_steps : null;
    return { step, total, pct: step !== null && total ? Math.min(100, (100 * step) / total) : null, p };
  }

  function progressCell(job) {
    const { step, total, pct } = progressOf(job);
    if (step === null) return h('span', { class: 'faint' }, dash);
    const cls = job.status === 'succeeded' ? 'done' : job.status === 'failed' ? 'failed' : job.status === 'cancelled' ? 'cancelled' : '';
    const bar = h('div', { class: `bar progress ${cls}` }, h('span'));
    bar.firstChild.style.width = `${pct ?? 100}%`;
    return h('div', { class: 'progress-cell', dataset: { step: String(step), total: String(total ?? '') } },
      h('div', { class: 'progress-text' },
        h('span', { class: 'steps' }, total ? `${count(step)} / ${count(total)}` : `step ${count(step)}`),
        h('span', {}, pct !== null ? `${pct.toFixed(pct < 10 ? 1 : 0)}%` : '')),
      bar);
  }

  function jobDuration(job) {
    const a = parseTime(job.started_at);
    if (a === null) return null;
    const b = parseTime(job.ended_at) ?? Date.now();
    return (b - a) / 1000;
  }

  function renderJobs() {
    const body = $('#jobs-body');
    const jobs = state.jobs.slice(0, MAX_JOB_ROWS);
    if (!jobs.length) {
      setKids(body, h('tr', {}, h('td', { class: 'empty', colspan: 9 },
        'No jobs yet. Submit one: jupiter start --domain sample, or jupiter submit -- python train.py')));
      return;
    }
    const rows = jobs.map((j) => {
      const { p } = progressOf(j);
      return h('tr', {
        class: `job${jd.id === j.id ? ' selected' : ''}`, dataset: { job: j.id, status: j.status }, tabindex: '0',
      },
      h('td', {}, h('span', { class: 'mono' }, j.id)),
      h('td', { class: 'name-cell' }, h('span', { class: 'name' }, j.name)),
      h('td', { class: 'status', title: j.error || j.pending_reason || '' }, pill(j.status)),
      h('td', {}, j.backend),
      h('td', {}, j.nodes.length ? j.nodes.join(', ') : h('span', { class: 'faint' }, `${j.world_size} rank(s), unplaced`)),
      h('td', {}, progressCell(j)),
      h('td', { class: 'num loss' }, num(p.loss)),
      h('td', {}, clock(j.started_at)),
      h('td', {}, duration(jobDuration(j))));
    });
    if (state.jobs.length > MAX_JOB_ROWS) {
      rows.push(h('tr', {}, h('td', { class: 'empty', colspan: 9 }, `older jobs not shown (jupiter jobs lists them all)`)));
    }
    setKids(body, ...rows);
  }

  // ---------------------------------------------------------------- SSE over fetch

  /** Server-Sent Events read from a fetch() body, so the request can carry the Authorization header. */
  class EventStream {
    constructor(path, handlers) {
      this.path = path;
      this.on = handlers;   // {open, event(name, data), ended, error(e, willRetry), auth(e)}
      this.ctrl = null;
      this.stopped = false;
      this.done = false;
    }

    stop() { this.stopped = true; if (this.ctrl) this.ctrl.abort(); }

    async run() {
      while (!this.stopped && !this.done) {
        this.ctrl = new AbortController();
        try {
          const res = await call(this.path, { signal: this.ctrl.signal, accept: 'text/event-stream' });
          if (this.stopped) return;
          await this.on.open();
          await this.read(res.body.getReader());
          if (this.done || this.stopped) return;
          this.on.error(new Error('the stream closed early'), true);
        } catch (e) {
          if (this.stopped) return;
          if (e instanceof AuthError) { this.on.auth(e); return; }
          if (e instanceof ApiError && e.status === 404) { this.on.error(e, false); return; }
          this.on.error(e, true);
        }
        await new Promise((r) => setTimeout(r, RECONNECT_MS));
      }
    }

    async read(reader) {
      const decoder = new TextDecoder();
      let buf = '';
      let ev = { name: 'message', data: [] };
      const line = (text) => {
        if (text === '') {
          if (ev.data.length) this.dispatch(ev.name, ev.data.join('\n'));
          ev = { name: 'message', data: [] };
          return;
        }
        if (text.startsWith(':')) return;  // a comment (keep-alive)
        const i = text.indexOf(':');
        const field = i < 0 ? text : text.slice(0, i);
        let value = i < 0 ? '' : text.slice(i + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') ev.name = value;
        else if (field === 'data') ev.data.push(value);
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let m;
        // A lone '\r' at the very end may be the first half of '\r\n': wait for more.
        while ((m = /\r\n|\n|\r(?=[^\n])/.exec(buf)) !== null) {
          line(buf.slice(0, m.index));
          buf = buf.slice(m.index + m[0].length);
          if (this.done) { reader.cancel().catch(() => {}); return; }
        }
      }
    }

    dispatch(name, raw) {
      if (this.stopped) return;
      let data = raw;
      try { data = JSON.parse(raw); } catch (e) { /* plain text */ }
      if (name === 'end') this.done = true;
      this.on.event(name, data);
    }
  }

  // ---------------------------------------------------------------- job detail

  const jd = {
    id: null,
    job: null,
    history: [],
    stream: null,
    chartPending: false,
    logQueue: [],
    logTimer: null,
    hiddenProgress: 0,
    cancelArmed: null,

    open(id) {
      if (this.id === id) { $('#job-detail').scrollIntoView({ behavior: 'smooth', block: 'nearest' }); return; }
      this.close();
      this.id = id;
      this.job = (state.jobs.find((j) => j.id === id)) || null;
      this.history = [];
      const params = hashParams();
      params.set('job', id);
      setHash(params);
      $('#job-detail').hidden = false;
      $('#jd-log').replaceChildren();
      this.renderHead();
      this.renderChart();
      renderJobs();
      this.connect();
    },

    close() {
      if (this.stream) this.stream.stop();
      this.stream = null;
      clearTimeout(this.logTimer);
      this.logTimer = null;
      this.logQueue = [];
      this.disarm();
      if (this.id) {
        const params = hashParams();
        params.delete('job');
        setHash(params);
      }
      this.id = null;
      this.job = null;
      $('#job-detail').hidden = true;
    },

    reconnect() {
      if (!this.id) return;
      if (this.stream) this.stream.stop();
      clearTimeout(this.logTimer);
      this.logTimer = null;
      this.logQueue = [];
      this.connect();
    },

    setStream(kind, text) {
      const el = $('#jd-stream');
      el.dataset.state = kind;
      el.textContent = text;
    },

    connect() {
      const id = this.id;
      const stream = new EventStream(`/jobs/${encodeURIComponent(id)}/events`, {
        open: async () => {
          // The stream replays the whole log; the loss history comes from the job itself.
          const job = await api(`/jobs/${encodeURIComponent(id)}`);
          if (this.id !== id) return;
          this.job = job;
          this.history = (job.loss_history || []).map((pt) => ({ step: pt.step, loss: pt.loss }));
          $('#jd-log').replaceChildren();
          this.logQueue = [];
          this.hiddenProgress = 0;
          $('#jd-progress-count').textContent = '';
          this.setStream('live', 'live');
          this.renderHead();
          this.renderChart();
        },
        event: (name, data) => { if (this.id === id) this.onEvent(name, data); },
        error: (e, retry) => {
          if (this.id !== id) return;
          if (e instanceof ApiError && e.status === 404) this.setStream('error', 'no such job');
          else this.setStream(retry ? 'retry' : 'error', retry ? `stream lost (${e.message}); reconnecting` : e.message);
        },
        auth: (e) => { store.clear(); showLogin(authMessage(e, true)); },
      });
      this.stream = stream;
      this.setStream('retry', 'connecting');
      stream.run();
    },

    onEvent(name, data) {
      const job = this.job || (this.job = { id: this.id, name: this.id, progress: {}, nodes: [] });
      if (name === 'status') {
        Object.assign(job, data);
        this.renderHead();
      } else if (name === 'progress') {
        job.progress = data;
        if (Number.isFinite(data.loss)) {
          const last = this.history[this.history.length - 1];
          const step = Number.isFinite(data.step) ? data.step : null;
          if (!last || step === null || last.step === null || step > last.step) this.history.push({ step, loss: data.loss });
        }
        const row = state.jobs.find((j) => j.id === this.id);
        if (row) row.progress = data;  // the table follows the stream too, not only the polls
        this.renderStats();
        this.scheduleChart();
      } else if (name === 'log') {
        this.queueLog(typeof data === 'string' ? data : JSON.stringify(data));
      } else if (name === 'end') {
        Object.assign(job, { status: data.status, exit_code: data.exit_code, error: data.error });
        this.setStream('ended', `ended: ${data.status}`);
        this.renderHead();
      }
    },

    /** Keep the header in step with the table between events. */
    fromList(jobs) {
      if (!this.id || !this.job) return;
      const fresh = jobs.find((j) => j.id === this.id);
      if (!fresh) return;
      const streaming = this.stream && !this.stream.done && $('#jd-stream').dataset.state === 'live';
      if (!streaming) {
        Object.assign(this.job, fresh);
        this.renderHead();
      } else {
        this.renderMeta();  // durations move on
      }
    },

    renderHead() {
      const job = this.job;
      setKids($('#jd-title'), job ? job.name : 'Job', h('span', { class: 'mono' }, this.id || ''));
      const st = $('#jd-status');
      st.className = job ? `pill s-${job.status}` : 'pill';
      st.textContent = job ? job.status : '';
      const cancel = $('#jd-cancel');
      cancel.disabled = !job || TERMINAL.has(job.status);
      if (cancel.disabled) this.disarm();
      const err = $('#jd-error');
      err.hidden = !(job && job.error);
      err.textContent = job && job.error ? job.error : '';
      const pend = $('#jd-pending');
      pend.hidden = !(job && job.status === 'pending' && job.pending_reason);
      pend.textContent = job && job.pending_reason ? `Waiting: ${job.pending_reason}` : '';
      this.renderMeta();
      this.renderStats();
    },

    renderMeta() {
      const job = this.job;
      if (!job) { setKids($('#jd-meta')); return; }
      const item = (k, v) => h('span', {}, `${k} `, h('b', {}, v));
      setKids($('#jd-meta'), ...[
        item('backend', job.backend || dash),
        item('ranks', String(job.world_size ?? dash)),
        item('nodes', (job.nodes || []).join(', ') || dash),
        item('started', clock(job.started_at)),
        item('duration', duration(jobDuration(job))),
        job.attempt ? item('attempt', String(job.attempt + 1)) : null,
        job.exit_code !== null && job.exit_code !== undefined ? item('exit code', String(job.exit_code)) : null,
        job.command ? h('span', { class: 'mono', title: job.command.join(' ') },
          job.command.join(' ').slice(0, 90) + (job.command.join(' ').length > 90 ? '…' : '')) : null,
      ].filter(Boolean));
    },

    renderStats() {
      const job = this.job;
      const p = (job && job.progress) || {};
      const { step, total, pct } = job ? progressOf(job) : {};
      const stat = (label, value, key) => h('div', { class: 'stat', dataset: { key } },
        h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value));
      setKids($('#jd-stats'), 
        stat('Step', step === null || step === undefined ? dash
          : total ? `${count(step)} / ${count(total)}` : count(step), 'step'),
        stat('Done', pct === null || pct === undefined ? dash : `${pct.toFixed(1)}%`, 'pct'),
        stat('Loss', num(p.loss), 'loss'),
        stat('Eval loss', num(p.eval_loss), 'eval_loss'),
        stat('Tokens / s', count(p.tokens_per_s), 'tokens_per_s'),
        stat('ETA', Number.isFinite(p.eta_s) ? duration(p.eta_s) : dash, 'eta'));
    },

    scheduleChart() {
      if (this.chartPending) return;
      this.chartPending = true;
      setTimeout(() => { this.chartPending = false; this.renderChart(); renderJobs(); }, 250);
    },

    renderChart() {
      const svg = $('#jd-chart');
      const W = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 640);
      const H = 260;
      svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
      const all = this.history.map((pt, i) => ({ x: pt.step ?? i, y: pt.loss })).filter((pt) => Number.isFinite(pt.y));
      const logBox = $('#jd-log-scale');
      logBox.disabled = !all.length || all.some((pt) => pt.y <= 0);
      const logY = logBox.checked && !logBox.disabled;
      const pts = logY ? all.map((pt) => ({ x: pt.x, y: Math.log10(pt.y) })) : all;
      const label = (v) => num(logY ? 10 ** v : v, 3);
      $('#jd-chart-note').textContent = all.length ? `${plural(all.length, 'point')}, last ${num(all[all.length - 1].y)}` : '';
      if (!pts.length) {
        setKids(svg, s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty-text' },
          'No loss reported yet'));
        return;
      }
      const m = { l: 52, r: 14, t: 12, b: 26 };
      let x0 = pts[0].x, x1 = pts[pts.length - 1].x;
      for (const pt of pts) { x0 = Math.min(x0, pt.x); x1 = Math.max(x1, pt.x); }
      let y0 = Infinity, y1 = -Infinity;
      for (const pt of pts) { y0 = Math.min(y0, pt.y); y1 = Math.max(y1, pt.y); }
      if (x1 === x0) { x1 = x0 + 1; }
      if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
      const yt = logY && y1 - y0 >= 1.5 ? ticks(Math.floor(y0), Math.ceil(y1), Math.min(6, Math.ceil(y1) - Math.floor(y0) + 1))
        : ticks(y0, y1, 5);
      y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
      const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
      const Y = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
      const kids = [];
      for (const t of yt) {
        kids.push(s('line', { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: 'gridline' }));
        kids.push(s('text', { x: m.l - 8, y: Y(t) + 4, 'text-anchor': 'end', class: 'axis-label' }, label(t)));
      }
      for (const t of ticks(x0, x1, 6).filter((t) => t >= x0 && t <= x1)) {
        kids.push(s('line', { x1: X(t), x2: X(t), y1: m.t, y2: H - m.b, class: 'gridline' }));
        kids.push(s('text', { x: X(t), y: H - 8, 'text-anchor': 'middle', class: 'axis-label' }, count(t)));
      }
      // At most ~2 points per pixel column; always keep the last.
      const every = Math.max(1, Math.floor(pts.length / (2 * (W - m.l - m.r))));
      const shown = pts.filter((_, i) => i % every === 0 || i === pts.length - 1);
      const line = shown.map((pt) => `${X(pt.x).toFixed(1)},${Y(pt.y).toFixed(1)}`).join(' ');
      const base = Y(y0).toFixed(1);
      kids.push(s('polygon', {
        class: 'area',
        points: `${X(shown[0].x).toFixed(1)},${base} ${line} ${X(shown[shown.length - 1].x).toFixed(1)},${base}`,
      }));
      kids.push(s('polyline', { class: 'curve', points: line }));
      const last = shown[shown.length - 1];
      kids.push(s('circle', { class: 'last', cx: X(last.x), cy: Y(last.y), r: 4 },
        s('title', {}, `step ${last.x}: loss ${label(last.y)}`)));
      setKids(svg, ...kids);
    },

    queueLog(text) {
      this.logQueue.push(text);
      if (!this.logTimer) this.logTimer = setTimeout(() => this.flushLog(), 100);
    },

    /** Progress lines stay out of the log unless asked for (they come once a step); only the last
     * MAX_LOG_LINES lines are kept. */
    flushLog() {
      this.logTimer = null;
      const pre = $('#jd-log');
      const follow = $('#jd-follow').checked;
      const showProgress = $('#jd-show-progress').checked;
      const kept = [];
      for (const text of this.logQueue.splice(0)) {
        const m = /^\[(\d+|jupiter)\] ?(.*)$/s.exec(text);
        const body = m ? m[2] : text;
        const progress = body.startsWith('JUPITER_PROGRESS ');
        if (progress && !showProgress) { this.hiddenProgress += 1; continue; }
        kept.push([m, body, progress]);
      }
      const frag = document.createDocumentFragment();
      for (const [m, body, progress] of kept.slice(-MAX_LOG_LINES)) {
        const who = m ? (m[1] === 'jupiter' ? 'sys' : 'rank') : null;
        let cls = 'ln';
        if (progress) cls += ' progress';
        else if (/\b(Traceback|Error|Exception|FAILED)\b|exited with code|^failed/.test(body)) cls += ' err';
        else if (who === 'sys' && /^succeeded/.test(body)) cls += ' ok';
        frag.append(h('span', { class: cls }, m ? h('span', { class: who }, `[${m[1]}] `) : null, body, '\n'));
      }
      $('#jd-progress-count').textContent = showProgress || !this.hiddenProgress ? '' : `(${count(this.hiddenProgress)} hidden)`;
      pre.append(frag);
      while (pre.childElementCount > MAX_LOG_LINES) pre.firstElementChild.remove();
      if (follow) pre.scrollTop = pre.scrollHeight;
    },

    disarm() {
      clearTimeout(this.cancelArmed);
      this.cancelArmed = null;
      const b = $('#jd-cancel');
      b.classList.remove('confirm');
      b.textContent = 'Cancel job';
    },

    async cancel() {
      const b = $('#jd-cancel');
      if (!this.id || b.disabled) return;
      if (!this.cancelArmed) {  // two clicks: a dashboard should not kill a run on one stray click
        b.classList.add('confirm');
        b.textContent = 'Click again to cancel';
        this.cancelArmed = setTimeout(() => this.disarm(), 4000);
        return;
      }
      this.disarm();
      b.disabled = true;
      try {
        const job = await api(`/jobs/${encodeURIComponent(this.id)}/cancel`, { method: 'POST' });
        if (this.job && job.id === this.id) Object.assign(this.job, job);
        this.renderHead();
        refresh();
      } catch (e) {
        if (e instanceof AuthError) { store.clear(); showLogin(authMessage(e, true)); return; }
        b.disabled = false;
        banner(`Cancel failed: ${e.message}`, true);
      }
    },
  };

  /** About n round tick values covering [a, b]. */
  function ticks(a, b, n) {
    const span = b - a;
    const raw = span / Math.max(1, n - 1);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((st) => st >= raw) || raw;
    const out = [];
    for (let v = Math.floor(a / step) * step; v <= b + step * 0.5 && out.length < 50; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  // ---------------------------------------------------------------- topology

  function renderTopology() {
    const t = state.topology || { nodes: [], links: [] };
    const svg = $('#topo');
    const W = Math.max(420, Math.round(svg.getBoundingClientRect().width) || 560);
    const H = 420;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const nodes = circleOrder(t);
    const links = t.links || [];
    const strays = t.strays || [];
    $('#topo-note').textContent = `${plural(nodes.length, 'node')}, ${plural(links.length, 'link')}`;
    if (!nodes.length) {
      setKids(svg, s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty-text' }, 'No nodes yet'));
      renderTopoFacts(t);
      return;
    }
    const cx = W / 2, cy = H / 2;
    const one = nodes.length === 1;
    const rx = one ? 0 : W / 2 - (strays.length ? 150 : 80);
    const ry = one ? 0 : H / 2 - (strays.length ? 70 : 34);
    const start = nodes.length === 2 ? Math.PI : -Math.PI / 2;
    const pos = new Map();
    nodes.forEach((n, i) => {
      const a = start + (i * 2 * Math.PI) / nodes.length;
      pos.set(n.id, { x: cx + rx * Math.cos(a), y: cy + ry * Math.sin(a), a });
    });
    const edges = [], labels = [], boxes = [];

    // Parallel cables between the same pair bow apart.
    const pairs = new Map();
    for (const ln of links) {
      const key = [ln.a_id, ln.b_id].sort().join('|');
      if (!pairs.has(key)) pairs.set(key, []);
      pairs.get(key).push(ln);
    }
    for (const group of pairs.values()) {
      group.forEach((ln, j) => {
        const p = pos.get(ln.a_id), q = pos.get(ln.b_id);
        if (!p || !q) return;
        const flip = ln.a_id > ln.b_id ? -1 : 1;  // same normal for a->b and b->a
        const dx = q.x - p.x, dy = q.y - p.y, len = Math.hypot(dx, dy) || 1;
        const nx = (-dy / len) * flip, ny = (dx / len) * flip;
        const off = (j - (group.length - 1) / 2) * 34;
        const mx = (p.x + q.x) / 2 + nx * off, my = (p.y + q.y) / 2 + ny * off;
        const cls = ['edge', ln.one_sided ? 'one-sided' : '', ln.slow ? 'slow' : ''].join(' ').trim();
        const end = (name, port, iface) => `${name} ${iface || (port !== null && port !== undefined ? 'TB' + port : '?')}`;
        const tip = `${end(ln.a, ln.a_port, ln.a_interface)} ↔ ${end(ln.b, ln.b_port, ln.b_interface)}` +
          `, ${ln.speed_gbps ?? '?'} Gb/s${ln.one_sided ? `; only ${ln.a} sees this cable` : ''}${ln.slow ? '; slower than these Macs can do' : ''}`;
        const d = off === 0 ? `M${p.x},${p.y} L${q.x},${q.y}`
          : `M${p.x},${p.y} Q${2 * mx - (p.x + q.x) / 2},${2 * my - (p.y + q.y) / 2} ${q.x},${q.y}`;
        edges.push(s('path', { d, class: cls, 'data-a': ln.a, 'data-b': ln.b }, s('title', {}, tip)));
        const text = `${ln.speed_gbps === null || ln.speed_gbps === undefined ? '?' : num(ln.speed_gbps, 3)} Gb/s`;
        const w = text.length * 6.6 + 12;
        labels.push(s('g', { class: `edge-label${ln.slow ? ' slow' : ''}`, transform: `translate(${mx},${my})` },
          s('rect', { x: -w / 2, y: -10, width: w, height: 20, rx: 10 }),
          s('text', { x: 0, y: 4, 'text-anchor': 'middle' }, text),
          s('title', {}, tip)));
      });
    }

    // Cables to hosts outside the cluster end at a dashed grey box beyond their node.
    const strayCount = new Map();
    for (const st of strays) {
      const p = pos.get(st.node_id);
      if (!p) continue;
      const k = strayCount.get(st.node_id) || 0;
      strayCount.set(st.node_id, k + 1);
      const a = (nodes.length === 1 ? -Math.PI / 2 : p.a) + k * 0.5;
      const x = Math.min(W - 60, Math.max(60, p.x + 92 * Math.cos(a)));
      const y = Math.min(H - 22, Math.max(22, p.y + 80 * Math.sin(a)));
      edges.push(s('path', { d: `M${p.x},${p.y} L${x},${y}`, class: 'edge stray' },
        s('title', {}, `${st.node} ${st.interface || 'TB' + st.port} → ${st.peer_name || 'unknown host'} (not in the cluster)`)));
      boxes.push(s('g', { class: 'node stray', transform: `translate(${x},${y})` },
        s('rect', { x: -52, y: -17, width: 104, height: 34, rx: 8 }),
        s('text', { class: 'chip', x: 0, y: -2, 'text-anchor': 'middle' }, clip(st.peer_name || 'unknown host', 16)),
        s('text', { class: 'chip', x: 0, y: 11, 'text-anchor': 'middle' }, 'not in cluster')));
    }

    for (const n of nodes) {
      const p = pos.get(n.id);
      const st = STATUSES.includes(n.status) ? n.status : 'down';
      boxes.push(s('g', { class: `node st-${st}`, transform: `translate(${p.x},${p.y})`, 'data-node': n.name },
        s('rect', { x: -66, y: -23, width: 132, height: 46, rx: 9 }),
        s('circle', { class: `st-dot st-${st}`, cx: -52, cy: -7, r: 4.5 }),
        s('text', { class: 'name', x: -42, y: -3 }, clip(n.name, 15)),
        s('text', { class: 'chip', x: -42, y: 13 }, clip(n.chip || 'chip unknown', 18)),
        s('title', {}, `${n.name} (${n.status})${n.chip ? ', ' + n.chip : ''}` +
          (n.bridge && n.bridge.interface ? `\n${n.bridge.interface} ${n.bridge.up ? 'up' : 'down'} ${(n.bridge.ips || []).join(' ')}` : ''))));
    }
    setKids(svg, ...edges, ...labels, ...boxes);
    renderTopoFacts(t);
  }

  /** Nodes cabled together sit next to each other on the circle, in chain or ring order. */
  function circleOrder(t) {
    const byId = new Map((t.nodes || []).map((n) => [n.id, n]));
    const byName = new Map((t.nodes || []).map((n) => [n.name, n]));
    const out = [], seen = new Set();
    const take = (n) => { if (n && !seen.has(n.id)) { seen.add(n.id); out.push(n); } };
    for (const r of t.rings || []) r.forEach((name) => take(byName.get(name)));
    for (const c of t.components || []) {
      if ((c.ids || c.nodes).length > 1) (c.ids || []).forEach((id) => take(byId.get(id)));
    }
    (t.nodes || []).forEach(take);
    return out;
  }

  function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + '…' : text; }

  function renderTopoFacts(t) {
    const items = [];
    const fact = (k, v, cls) => h('li', { class: cls || '' }, h('span', { class: 'k' }, k), v);
    for (const c of (t.components || []).filter((x) => x.nodes.length > 1)) {
      items.push(fact(c.kind, c.nodes.join(' – ')));
    }
    for (const r of t.rings || []) items.push(fact('ring order', [...r, r[0]].join(' → ')));
    for (const w of t.warnings || []) {  // their fixes are in the Problems list
      items.push(fact('warning', `${w.node ? w.node + ': ' : ''}${w.message}`, 'warn'));
    }
    for (const note of t.notes || []) items.push(fact('note', note));
    if (!(t.links || []).length && (t.nodes || []).length) {
      items.push(fact('links', 'No Thunderbolt cable between nodes is reported; ranks talk over the other networks.'));
    }
    setKids($('#topo-facts'), ...items);
  }

  // ---------------------------------------------------------------- problems

  function renderProblems() {
    const issues = (state.cluster && state.cluster.issues) || [];
    $('#problems-note').textContent = issues.length ? `${plural(issues.length, 'problem')} found` : '';
    if (!issues.length) {
      setKids($('#problems'), h('li', { class: 'none' }, '✓ No problems found'));
      return;
    }
    setKids($('#problems'), ...issues.map((p) => h('li', { dataset: { kind: p.kind } },
      h('div', { class: 'p-head' }, h('span', { class: 'p-node' }, p.node || 'cluster'), h('span', { class: 'p-kind' }, p.kind)),
      h('div', { class: 'p-msg' }, p.message),
      p.fix ? h('div', { class: 'p-fix' }, h('b', {}, 'Fix: '), p.fix) : null)));
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    takeTokenFromFragment();
    $('#nodes-body').addEventListener('click', (ev) => {
      const b = ev.target.closest('[data-toggle]');
      if (!b) return;
      const id = b.dataset.toggle;
      if (!state.expanded.delete(id)) state.expanded.add(id);
      renderNodes();
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
    $('#jd-close').addEventListener('click', () => { jd.close(); renderJobs(); });
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
    window.addEventListener('resize', () => { if (jd.id) jd.renderChart(); renderTopology(); });
    const token = store.get();
    if (token) start(token);
    else showLogin(null);
  }

  init();
})();
