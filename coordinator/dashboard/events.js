/* Server-Sent Events read from a fetch() body: EventSource cannot send the Authorization header. */

import { call, AuthError, ApiError } from './api.js';

const RECONNECT_MS = 2000;

/** One job's event stream, reconnecting until it sends `end` or is stopped. */
export class EventStream {
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
