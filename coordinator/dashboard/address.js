/* The address bar's fragment (`#token=...`, `#job=ID`), read and rewritten without a history entry. */

export function hashParams() { return new URLSearchParams(location.hash.replace(/^#/, '')); }

export function setHash(params) {
  const text = params.toString();
  history.replaceState(null, '', location.pathname + location.search + (text ? '#' + text : ''));
}
