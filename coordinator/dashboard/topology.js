/* The Thunderbolt topology: nodes on a circle (cabled neighbours side by side), cables as edges
 * labelled with their speed, cables to hosts outside the cluster as dashed boxes, and the facts
 * (chains, rings, warnings) listed under it. */

import { $, h, s } from './dom.js';
import { setKids } from './morph.js';
import { num, plural, clip } from './format.js';
import { STATUSES } from './status.js';

export function renderTopology(topology) {
  const t = topology || { nodes: [], links: [] };
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
