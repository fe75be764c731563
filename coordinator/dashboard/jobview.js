/* One job in detail, under the jobs table: its header and stats, the live loss curve, the log
 * over the event stream, and the Cancel button. `#job=ID` in the address names the open job. */

import { $, h } from './dom.js';
import { setKids } from './morph.js';
import { dash, clock, duration, num, count } from './format.js';
import { TERMINAL } from './status.js';
import { api, ApiError, AuthError } from './api.js';
import { hashParams, setHash } from './address.js';
import { banner } from './notice.js';
import { EventStream } from './events.js';
import { renderLossChart } from './chart.js';
import { progressOf, jobDuration, renderJobs, statusBadges } from './jobs.js';
import { state } from './state.js';

const MAX_LOG_LINES = 4000;

// What the job view needs from the page around it. session.js holds both and imports this module,
// so main.js hands them in rather than this module importing session.js back.
const page = {
  refused: (e) => {},   // the coordinator refused the token: back to the login prompt
  refresh: () => {},    // poll now
};

export function wireJobView(hooks) { Object.assign(page, hooks); }

// What the list poll brings that the event stream does not: read from it even while streaming.
const POLLED = ['rank_progress', 'stragglers', 'warnings', 'stalled'];

/** A part of the job view the page's HTML has no place for: made once, put after `after`. */
function slot(id, tag, cls, after) {
  let el = document.getElementById(id);
  if (!el) {
    el = h(tag, { id, class: cls });
    $(after).after(el);
  }
  return el;
}

export const jd = {
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
    renderJobs(state, this.id);
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
    // With the raw progress lines: this view counts them, and shows them when asked.
    const stream = new EventStream(`/jobs/${encodeURIComponent(id)}/events?progress_lines=true`, {
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
      auth: (e) => page.refused(e),
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
      for (const key of POLLED) if (key in fresh) this.job[key] = fresh[key];
      this.renderMeta();  // durations move on
      this.renderRanks();
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
    this.renderRanks();
  },

  /** The stalled and straggler badges beside the status, the job's warnings, and the ranks' own
   * progress with the stragglers marked and their likely cause beside them. */
  renderRanks() {
    const job = this.job;
    setKids(slot('jd-flags', 'span', 'jd-flags', '#jd-status'), job ? statusBadges(job).slice(1) : []);
    const warnings = (job && job.warnings) || [];
    const warn = slot('jd-warnings', 'div', 'alert warn', '#jd-pending');
    warn.hidden = !warnings.length;
    setKids(warn, warnings.map((w) => h('div', { class: 'warning' }, w)));
    const ranks = (job && job.rank_progress) || [];
    const box = slot('jd-ranks', 'div', 'jd-ranks', '#jd-stats');
    // One rank printing its step is the job's progress, already above; a table is for several.
    box.hidden = !(ranks.length > 1 || ranks.some((r) => Number.isFinite(r.step_time_s)));
    if (box.hidden) { setKids(box); return; }
    const slow = new Map((job.stragglers || []).map((s) => [s.rank, s]));
    const rows = ranks.map((r) => {
      const s = slow.get(r.rank);
      return h('tr', { class: s ? 'straggler' : null, dataset: { rank: String(r.rank) } },
        h('td', { class: 'num' }, String(r.rank)),
        h('td', {}, r.node || dash),
        h('td', { class: 'num' }, count(r.step)),
        h('td', { class: 'num' }, num(r.step_time_s, 3)),
        h('td', { class: 'num' }, num(r.share, 3)),
        h('td', { class: 'rank-note' }, s ? [
          h('span', { class: 'badge warn straggler' }, `straggler · ${Math.round(s.slower_pct)} % slower`),
          s.cause ? h('span', { class: 'cause' }, s.cause) : null] : null));
    });
    const head = [['num', 'Rank'], [null, 'Node'], ['num', 'Step'], ['num', 's / step'], ['num', 'Share'], [null, '']];
    setKids(box, h('table', { class: 'grid ranks' },
      h('thead', {}, h('tr', {}, head.map(([cls, text]) => h('th', { class: cls }, text)))),
      h('tbody', {}, rows)));
  },

  renderMeta() {
    const job = this.job;
    if (!job) { setKids($('#jd-meta')); return; }
    const item = (k, v, title) => h('span', title ? { title } : {}, `${k} `, h('b', {}, v));
    setKids($('#jd-meta'), ...[
      item('backend', job.backend || dash, job.backend_reason || undefined),
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
    setTimeout(() => { this.chartPending = false; this.renderChart(); renderJobs(state, this.id); }, 250);
  },

  renderChart() { renderLossChart(this.history); },

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
      page.refresh();
    } catch (e) {
      if (e instanceof AuthError) { page.refused(e); return; }
      b.disabled = false;
      banner(`Cancel failed: ${e.message}`, true);
    }
  },
};
