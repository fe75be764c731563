/* The job view's loss curve: an SVG line over the loss history, on a linear or log scale. */

import { $, s } from './dom.js';
import { setKids } from './morph.js';
import { num, count, plural } from './format.js';

/** Draw `history` ([{step, loss}], step may be null) into #jd-chart. */
export function renderLossChart(history) {
  const svg = $('#jd-chart');
  const W = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 640);
  const H = 260;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const all = history.map((pt, i) => ({ x: pt.step ?? i, y: pt.loss })).filter((pt) => Number.isFinite(pt.y));
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
}

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
