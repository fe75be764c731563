/* Calls to the coordinator, and the admin token they carry.
 *
 * The token is kept in localStorage (in memory if the browser refuses storage). Every call sends
 * `Authorization: Bearer <token>`; refusals, unreachability and other errors are told apart so the
 * page can say which it was. */

import { state } from './state.js';

const TOKEN_KEY = 'jupiter.adminToken';

const memory = {};
export const store = {
  get() { try { return localStorage.getItem(TOKEN_KEY); } catch (e) { return memory.token || null; } },
  set(v) { try { localStorage.setItem(TOKEN_KEY, v); } catch (e) { memory.token = v; } },
  clear() { try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* none */ } delete memory.token; },
};

export class AuthError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
}
export class Unreachable extends Error {}
export class ApiError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
}

async function detailOf(res) {
  try {
    const body = await res.json();
    const d = body && body.detail;
    if (typeof d === 'string') return d;
    if (Array.isArray(d)) return d.map((e) => e.msg || JSON.stringify(e)).join('; ');
    return JSON.stringify(d ?? body);
  } catch (e) {
    return res.statusText || 'no detail';
  }
}

export async function call(path, { method = 'GET', token = state.token, signal, accept = 'application/json' } = {}) {
  let res;
  try {
    res = await fetch(path, {
      method, signal, cache: 'no-store',
      headers: { Authorization: `Bearer ${token}`, Accept: accept },
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new Unreachable(e.message || 'network error');
  }
  if (res.status === 401 || res.status === 403) throw new AuthError(res.status, await detailOf(res));
  if (!res.ok) throw new ApiError(res.status, await detailOf(res));
  return res;
}

export const api = async (path, opts) => (await call(path, opts)).json();

export function authMessage(e, saved) {
  const hint = e.status === 403 ? 'That is not the admin token (a join or node token?).'
    : 'The coordinator does not know that token.';
  return `${saved ? 'The coordinator refused the token' : 'Refused'} (${e.status}: ${e.detail}). ${hint} Paste the admin token.`;
}
