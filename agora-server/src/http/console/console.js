// Agora's monitoring console: follows /api/events (one STATS document and one page of
// connections about once a second) and sends the admin actions of the HTTP API.
// It must never put data into the page as markup: every name, payload and error goes
// in through textContent or a text node.
'use strict';

const HISTORY_S = 300;
const COLUMNS = ['kind', 'name', 'depth', 'unacked', 'consumers', 'in', 'out'];

const $ = (id) => document.getElementById(id);

// The broker's own origin, never a URL of the page: a page opened as
// http://user:pass@host/ resolves relative URLs with the credentials in them, and
// fetch() refuses those.
const here = (path) => `${window.location.origin}${path}`;

const state = {
  /** The previous document's broker uptime and counters, to turn counters into rates. */
  prev: null,
  /** kind:name → {in, out} per second, from the last two documents. */
  rates: new Map(),
  /** Total rates over the last HISTORY_S seconds of broker uptime: [{t, in, out}]. */
  history: [],
  /** kind:name → the row, kept across events so a click is never lost to a redraw. */
  rows: new Map(),
  /** kind:name → the values the row shows, for sorting. */
  values: new Map(),
  sort: { key: null, dir: 1 },
  events: 0,
  /** When the last event came (Date.now()), 0 while the stream is down. */
  lastEvent: 0,
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

const key = (d) => `${d.kind}:${d.name}`;

function bytes(n) {
  if (typeof n !== 'number') return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function duration(s) {
  s = Math.floor(s);
  const parts = [[86400, 'd'], [3600, 'h'], [60, 'm']]
    .map(([n, u]) => { const v = Math.floor(s / n); s %= n; return [v, u]; });
  while (parts.length && parts[0][0] === 0) parts.shift();
  return parts.map(([v, u]) => v + u).concat(`${s}s`).join(' ');
}

const plural = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`;

const perSecond = (r) => (r == null ? '' : r < 10 ? r.toFixed(1) : String(Math.round(r)));

// ---- what the events say ----

function setStatus(text, live) {
  const s = $('status');
  s.textContent = text;
  s.className = live ? 'live' : 'down';
}

function onStats(ev) {
  let doc;
  try {
    doc = JSON.parse(ev.data);
  } catch {
    setStatus('a bad event arrived', false);
    return;
  }
  state.events += 1;
  state.lastEvent = Date.now();
  setStatus('live', true);
  const s = doc.stats || {};
  showBroker(s);
  measure(s);
  showDestinations(s);
  drawRates();
  showConnections(doc.connections || {});
  showCluster(s.cluster);
  // Tests wait on this to know a new document has been shown.
  $('status').dataset.events = String(state.events);
}

function showBroker(s) {
  $('version').textContent = s.version ? `${s.server || ''} ${s.version}` : '';
  $('uptime').textContent = duration(s.uptime_s || 0);
  for (const p of ['tcp', 'udp', 'mqtt', 'ws']) {
    $(`clients-${p}`).textContent = String((s.clients || {})[p] ?? '–');
  }
  const m = s.memory || {};
  const pct = m.limit ? ` (${((100 * m.used) / m.limit).toFixed(1)} %)` : '';
  $('memory').textContent = `${bytes(m.used)} of ${bytes(m.limit)}${pct}`;
  $('disk').textContent = s.storage ? bytes(s.storage.disk_bytes) : 'memory only';
}

function measure(s) {
  const t = s.uptime_s || 0;
  const counts = new Map((s.destinations || []).map((d) => [key(d), [d.messages_in, d.messages_out]]));
  const prev = state.prev;
  state.rates = new Map();
  if (prev && t < prev.t) state.history = []; // the broker restarted
  if (prev && t > prev.t) {
    const dt = t - prev.t;
    let tin = 0;
    let tout = 0;
    for (const [k, [i, o]] of counts) {
      const p = prev.counts.get(k);
      // New, or deleted and made again: no rate until it has two documents.
      if (!p || i < p[0] || o < p[1]) continue;
      const r = { in: (i - p[0]) / dt, out: (o - p[1]) / dt };
      state.rates.set(k, r);
      tin += r.in;
      tout += r.out;
    }
    state.history.push({ t, in: tin, out: tout });
  }
  while (state.history.length && state.history[0].t < t - HISTORY_S) state.history.shift();
  state.prev = { t, counts };
}

function newRow(d) {
  const tr = el('tr', { 'data-kind': d.kind, 'data-name': d.name });
  for (const c of COLUMNS) tr.append(el('td', { class: c }));
  tr.cells[1].textContent = d.name;
  tr.cells[0].textContent = d.kind;
  const actions = el('td', { class: 'actions' });
  const button = (cls, text) => el('button', { type: 'button', class: cls }, text);
  if (d.kind === 'queue') {
    actions.append(button('purge', 'Purge'), button('delete', 'Delete'), button('peek', 'Peek'));
  }
  actions.append(button('chain', 'Chain'));
  tr.append(actions);
  return tr;
}

function showDestinations(s) {
  const dests = s.destinations || [];
  const seen = new Set();
  for (const d of dests) {
    const k = key(d);
    seen.add(k);
    let tr = state.rows.get(k);
    if (!tr) {
      tr = newRow(d);
      state.rows.set(k, tr);
    }
    const r = state.rates.get(k);
    const v = {
      kind: d.kind, name: d.name, depth: d.depth, unacked: d.unacked,
      consumers: d.consumers, in: r ? r.in : null, out: r ? r.out : null,
    };
    state.values.set(k, v);
    const texts = [String(v.depth), String(v.unacked), String(v.consumers), perSecond(v.in), perSecond(v.out)];
    // Only what changed: a thousand rows are rewritten every second otherwise.
    texts.forEach((text, i) => {
      const cell = tr.cells[i + 2];
      if (cell.textContent !== text) cell.textContent = text;
    });
  }
  for (const [k, tr] of state.rows) {
    if (!seen.has(k)) {
      tr.remove();
      state.rows.delete(k);
      state.values.delete(k);
    }
  }
  order();
  filter();
  const page = s.page || {};
  $('dest-page').textContent = page.next ? `(the first ${page.listed} of ${page.total})` : '';
}

function compare(a, b) {
  if (a == null || b == null) return (a == null) - (b == null);
  return typeof a === 'string' ? a.localeCompare(b) : a - b;
}

// Moves rows only when the order changed: the broker's order (queues, then topics, by
// name) unless a header was clicked.
function order() {
  const tbody = $('destinations').tBodies[0];
  const keys = [...state.rows.keys()];
  const { key: by, dir } = state.sort;
  if (by) keys.sort((a, b) => dir * compare(state.values.get(a)[by], state.values.get(b)[by]));
  const rows = keys.map((k) => state.rows.get(k));
  if (rows.some((tr, i) => tbody.rows[i] !== tr) || tbody.rows.length !== rows.length) tbody.append(...rows);
}

function filter() {
  const text = $('filter').value.trim().toLowerCase();
  for (const tr of state.rows.values()) tr.hidden = !tr.dataset.name.toLowerCase().includes(text);
}

function drawRates() {
  const h = state.history;
  const now = h.length ? h[h.length - 1].t : 0;
  let max = 1;
  for (const p of h) max = Math.max(max, p.in, p.out);
  // A round top: 1, 2 or 5 times a power of ten.
  const tens = 10 ** Math.floor(Math.log10(max));
  const top = [1, 2, 5, 10].map((m) => m * tens).find((m) => m >= max);
  const points = (field) => h
    .map((p) => `${(600 - ((now - p.t) * 600) / HISTORY_S).toFixed(1)},${(147 - (137 * p[field]) / top).toFixed(1)}`)
    .join(' ');
  $('rates-in').setAttribute('points', points('in'));
  $('rates-out').setAttribute('points', points('out'));
  $('rates-max').textContent = `${top}/s`;
}

function showConnections(c) {
  const list = c.connections || [];
  const rows = list.map((x) => el('tr', { 'data-id': String(x.id) },
    el('td', {}, String(x.address ?? '')),
    el('td', {}, x.name ?? ''),
    el('td', {}, String(x.protocol ?? '')),
    el('td', {}, x.user ?? ''),
    el('td', { class: 'num' }, String(x.subscriptions ?? '')),
    el('td', { class: 'num' }, bytes(x.bytes_in)),
    el('td', { class: 'num' }, bytes(x.bytes_out))));
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: '7' }, 'no connections')));
  $('connections').tBodies[0].replaceChildren(...rows);
  const page = c.page || {};
  $('conn-page').textContent = page.next != null ? `(the first ${page.listed} of ${page.total})` : '';
}

// A node of a cluster: its links with each other node (the section stays hidden on a
// broker that is no cluster's node).
function showCluster(c) {
  $('cluster-section').hidden = !c;
  if (!c) return;
  $('cluster-name').textContent = `${c.name}, this is node ${c.node}`;
  const rows = (c.peers || []).map((p) => el('tr', { 'data-node': String(p.node) },
    el('td', {}, String(p.node)),
    el('td', {}, String(p.addr ?? '')),
    el('td', { class: p.link_out === 'up' ? 'up' : 'down' }, String(p.link_out ?? '')),
    el('td', { class: p.link_in === 'up' ? 'up' : 'down' }, String(p.link_in ?? '')),
    el('td', { class: 'num' }, duration(p.for_s || 0)),
    el('td', { class: 'num' }, String(p.messages_in ?? '')),
    el('td', {}, p.last_error ?? '')));
  $('cluster').tBodies[0].replaceChildren(...rows);
  // Its replicated queues: who leads each, and on the leader how far each member lags.
  const queues = Object.entries(c.replicated || {});
  $('replicated').hidden = queues.length === 0;
  const qrows = queues.map(([name, q]) => el('tr', { 'data-queue': name },
    el('td', {}, name),
    el('td', { class: 'num' }, q.leader ? String(q.leader) : 'none'),
    el('td', { class: q.serving ? 'up' : '' }, q.serving ? 'leads, delivers' : 'follows'),
    el('td', { class: 'num' }, String(q.term ?? '')),
    el('td', { class: 'num' }, String(q.commit ?? '')),
    el('td', {}, Object.entries(q.lag || {}).map(([n, l]) => `node ${n}: ${l}`).join(', ')),
    el('td', {}, (q.voters || []).join(', ')),
    el('td', { class: q.failed ? 'down' : '' }, q.failed ?? 'ok')));
  $('replicated').tBodies[0].replaceChildren(...qrows);
}

// ---- actions ----

function say(text, error) {
  const m = $('message');
  m.textContent = text;
  m.className = error ? 'error' : 'ok';
}

/** Sends an action; answers its JSON, or throws an Error saying `code: message`. */
async function call(method, path, body) {
  const res = await fetch(here(path), {
    method,
    body,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { 'X-Agora-Console': '1' },
  });
  const text = await res.text();
  let doc = null;
  try {
    doc = JSON.parse(text);
  } catch {
    // not JSON: said below from the status
  }
  if (!res.ok) {
    const e = doc && doc.error;
    throw new Error(e ? `${e.code}: ${e.message}` : `http ${res.status}: ${text.trim() || res.statusText}`);
  }
  return doc || {};
}

async function attempt(what) {
  try {
    await what();
  } catch (e) {
    say(e.message || String(e), true);
  }
}

const q = encodeURIComponent;

function openPanel(title, ...children) {
  $('panel-title').textContent = title;
  $('panel-body').replaceChildren(...children);
  $('panel').hidden = false;
}

const actions = {
  async purge(kind, name) {
    const r = await call('POST', `/api/queues/${q(name)}/purge`);
    say(`purged ${plural(r.purged, 'message')} from ${kind}:${name}`);
  },
  async delete(kind, name) {
    if (!window.confirm(`Delete ${kind}:${name} and every message in it?`)) return;
    await call('DELETE', `/api/queues/${q(name)}`);
    say(`deleted ${kind}:${name}`);
  },
  async peek(kind, name) {
    const r = await call('GET', `/api/queues/${q(name)}/peek?limit=10`);
    const msgs = r.messages || [];
    const items = msgs.map((m) => {
      const headers = Object.entries(m.headers || {}).map(([k, v]) => `${k}: ${v}`).join(', ');
      const about = `${m.bytes} bytes, delivered ${m.deliveries} times${headers ? `, ${headers}` : ''}`;
      return el('li', {}, el('pre', {}, m.payload ?? ''), el('small', {}, about));
    });
    openPanel(`${kind}:${name}: ${plural(msgs.length, 'message')} (at most 10 shown)`, msgs.length ? el('ol', {}, ...items) : 'empty');
    say(`peeked at ${plural(msgs.length, 'message')} of ${kind}:${name}`);
  },
  async chain(kind, name) {
    const path = `/api/chain/${q(kind)}/${q(name)}`;
    const r = await call('GET', path);
    const text = el('textarea', { id: 'chain-text', rows: '4', placeholder: 'no chain' });
    text.value = r.chain ?? '';
    const save = el('button', { type: 'button', id: 'chain-save' }, 'Save');
    const clear = el('button', { type: 'button', id: 'chain-clear' }, 'Clear');
    save.addEventListener('click', () => attempt(async () => {
      const s = await call('PUT', path, text.value);
      text.value = s.chain ?? '';
      say(`chain of ${kind}:${name} saved`);
    }));
    clear.addEventListener('click', () => attempt(async () => {
      await call('DELETE', path);
      text.value = '';
      say(`chain of ${kind}:${name} cleared`);
    }));
    openPanel(`chain of ${kind}:${name}`, text, el('div', {}, save, ' ', clear));
  },
};

async function publish(ev) {
  ev.preventDefault();
  const f = ev.target.elements;
  const kind = f.namedItem('kind').value;
  const name = f.namedItem('name').value.trim();
  const payload = f.namedItem('payload').value;
  await call('POST', `/api/publish/${q(kind)}/${q(name)}`, payload);
  say(`published ${new TextEncoder().encode(payload).length} bytes to ${kind}:${name}`);
}

// ---- the stream ----

function connect() {
  const source = new EventSource(here('/api/events'));
  source.addEventListener('stats', onStats);
  source.addEventListener('error', () => {
    state.lastEvent = 0;
    setStatus('disconnected, retrying', false);
    // EventSource retries by itself, except after an answer that is not a stream
    // (503: too many viewers; 401): then it is closed and retrying is ours.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
  });
}

function start() {
  $('destinations').tHead.addEventListener('click', (ev) => {
    const th = ev.target.closest('th[data-sort]');
    if (!th) return;
    const by = th.dataset.sort;
    state.sort = { key: by, dir: state.sort.key === by ? -state.sort.dir : 1 };
    for (const h of th.parentElement.cells) h.removeAttribute('aria-sort');
    th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
    order();
  });
  $('destinations').tBodies[0].addEventListener('click', (ev) => {
    const b = ev.target.closest('button');
    const action = b && actions[b.className];
    if (!action) return;
    const tr = b.closest('tr');
    attempt(() => action(tr.dataset.kind, tr.dataset.name));
  });
  $('filter').addEventListener('input', filter);
  $('publish').addEventListener('submit', (ev) => attempt(() => publish(ev)));
  $('panel-close').addEventListener('click', () => { $('panel').hidden = true; });
  // An open stream that has gone quiet says so rather than "live".
  setInterval(() => {
    const quiet = Math.round((Date.now() - state.lastEvent) / 1000);
    if (state.lastEvent && quiet >= 5) {
      setStatus(`no event for ${quiet} s`, false);
    }
  }, 1000);
  connect();
}

start();
