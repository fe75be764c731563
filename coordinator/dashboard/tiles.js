/* The summary tiles at the top: nodes, memory, jobs, problems, backend. */

import { $, h } from './dom.js';
import { setKids } from './morph.js';
import { dash, gb, plural } from './format.js';
import { STATUSES } from './status.js';
import { MAX_JOB_ROWS } from './jobs.js';

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

export function renderTiles(state) {
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
