/* The connection dot in the header and the banner under it. */

import { $ } from './dom.js';

export function setConn(kind, text) {
  const el = $('#conn');
  el.dataset.state = kind;
  $('#conn-text').textContent = text;
}

export function banner(text, warn = false) {
  const el = $('#banner');
  if (!text) { el.hidden = true; el.textContent = ''; return; }
  el.hidden = false;
  el.className = warn ? 'banner warn' : 'banner';
  el.textContent = text;
}
