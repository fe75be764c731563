/* The problems list: every problem GET /cluster reports, each with its fix. */

import { $, h } from './dom.js';
import { setKids } from './morph.js';
import { plural } from './format.js';

export function renderProblems(state) {
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
