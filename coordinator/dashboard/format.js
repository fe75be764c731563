/* How numbers, times and statuses read on the page. */

import { h } from './dom.js';

export const dash = '—';

export function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + 'Z');
  return Number.isNaN(t) ? null : t;
}

export function ago(iso) {
  const t = parseTime(iso);
  if (t === null) return dash;
  const sec = Math.max(0, (Date.now() - t) / 1000);
  if (sec < 10) return `${sec.toFixed(1)} s ago`;
  if (sec < 90) return `${Math.round(sec)} s ago`;
  if (sec < 5400) return `${Math.round(sec / 60)} min ago`;
  if (sec < 172800) return `${Math.round(sec / 3600)} h ago`;
  return `${Math.round(sec / 86400)} days ago`;
}

export function clock(iso) {
  const t = parseTime(iso);
  if (t === null) return dash;
  const d = new Date(t);
  const today = new Date().toDateString() === d.toDateString();
  const hms = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  return today ? hms : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${hms}`;
}

export function duration(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return dash;
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${String(sec % 60).padStart(2, '0')}s`;
  if (sec < 86400) return `${Math.floor(sec / 3600)}h ${String(Math.floor(sec / 60) % 60).padStart(2, '0')}m`;
  return `${Math.floor(sec / 86400)}d ${Math.floor(sec / 3600) % 24}h`;
}

export function gb(x) {
  if (x === null || x === undefined) return dash;
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1).replace(/\.0$/, '') : x.toFixed(1);
}

export function num(x, digits = 4) {
  if (x === null || x === undefined || !Number.isFinite(x)) return dash;
  if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

export function count(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return dash;
  return Math.round(x).toLocaleString('en-US');
}

export function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }

export function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + '…' : text; }

export function pill(status) { return h('span', { class: `pill s-${status}` }, status); }
