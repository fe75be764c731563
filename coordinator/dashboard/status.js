/* The status words the page itself must know. The server sends each node's and job's status as a
 * plain word and the page shows that word as it comes; these lists only order the summary tile,
 * catch a word a newer coordinator might send (drawn as down), and tell which jobs can no longer
 * be cancelled. They mirror shared/status.py; tests/test_status_words.py keeps them in step. */

export const STATUSES = ['ready', 'busy', 'draining', 'down', 'pending'];  // pending: enrolled, awaiting approval
export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
