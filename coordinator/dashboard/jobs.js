/* The jobs table, and the progress and duration of a job (the job view shows them too). */

import { $, h } from './dom.js';
import { setKids } from './morph.js';
import { dash, parseTime, clock, duration, num, count, pill } from './format.js';

export const MAX_JOB_ROWS = 30;  // GET /jobs carries each job's loss history: keep the poll small

export function progressOf(job) {
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

/** The job's status pill, with a "stalled" badge for a job stopped for making no progress and a
 * "straggler" one while some rank is persistently slower than the others. */
export function statusBadges(job) {
  const slow = job.stragglers || [];
  const title = slow.map((s) => `rank ${s.rank} on ${s.node}, ${Math.round(s.slower_pct)} % slower` +
    (s.cause ? `: ${s.cause}` : '')).join('\n');
  return [
    pill(job.status),
    job.stalled ? h('span', { class: 'badge bad stalled',
      title: 'no rank printed or reported progress for its stall timeout' }, 'stalled') : null,
    slow.length ? h('span', { class: 'badge warn straggler', title },
      slow.length > 1 ? `${slow.length} stragglers` : 'straggler') : null,
  ];
}

export function jobDuration(job) {
  const a = parseTime(job.started_at);
  if (a === null) return null;
  const b = parseTime(job.ended_at) ?? Date.now();
  return (b - a) / 1000;
}

/** `selected`: the id of the job open below the table, if any; its row is marked. */
export function renderJobs(state, selected) {
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
      class: `job${selected === j.id ? ' selected' : ''}`, dataset: { job: j.id, status: j.status }, tabindex: '0',
    },
    h('td', {}, h('span', { class: 'mono' }, j.id)),
    h('td', { class: 'name-cell' }, h('span', { class: 'name' }, j.name)),
    h('td', { class: 'status', title: j.error || j.pending_reason || '' }, statusBadges(j)),
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
