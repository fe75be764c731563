/* What the page last heard from the coordinator, and the token it asks with. */

export const state = {
  token: null,
  nodes: [], jobs: [], cluster: null, topology: null,
  expanded: new Set(),      // node ids whose problems are shown
  updated: null,
  timer: null,
  generation: 0,            // bumps when the token changes: late answers for an old token are dropped
};
