/* The nodes table; a node's problems unfold in a row under it (the toggle is wired in main.js). */

import { $, h } from './dom.js';
import { setKids } from './morph.js';
import { dash, ago, gb, plural, pill } from './format.js';

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

export function renderNodes(state) {
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
