// salt_ws dashboard: the engine's public API, consumed from plain JavaScript.
//
// - POST /login sets the HttpOnly `session_id` cookie; the websockets below send it by
//   themselves, so the token never appears in a URL, in storage or in this script.
// - /formatted_events?delta=1: a snapshot of {minions, jobs}, then RFC 6902 patches with a
//   contiguous `seq`; an engine without delta mode sends complete tables (saltnado), which
//   work too.
// - /all_events?envelope=1: {"id": "<epoch>:<seq>", "tag", "data"}; after a drop the page
//   reconnects with ?since=<last id> (and its ?tag= filters), so nothing is missed or shown
//   twice; a `salt_ws/stream/gap` notice says what could not be replayed.
//
// Every field of every event may come from a hostile minion: nothing here builds HTML from
// strings (textContent only; the page's CSP also requires Trusted Types), object keys are
// set with defineProperty, and what is kept in the page is bounded.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const TAIL_MAX_EVENTS = 1000; // events kept in the tail
  const TAIL_MAX_BYTES = 4 * 1024 * 1024; // ... and their encoded bytes
  const DOWN_MAX = 10000; // minions that went down, kept to be shown as down
  const CELL = 160; // characters of a table cell
  const SUMMARY = 300; // characters of an event's one-line summary
  const DETAIL = 200000; // characters of a return or event shown in the detail view
  const BACKOFF_MIN = 500; // ms before the first reconnect
  const BACKOFF_MAX = 15000;
  const READY = "websocket client ready";
  const NOTICE = "salt_ws/stream/";

  const own = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);
  const isObj = (v) => v !== null && typeof v === "object";

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function clip(value, n = CELL) {
    const text = value === null || value === undefined ? "" : String(value);
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  function pretty(value, n = DETAIL) {
    let text;
    try {
      text = JSON.stringify(value, null, 2);
    } catch (err) {
      text = String(value);
    }
    if (text === undefined) text = String(value);
    return text.length > n ? text.slice(0, n) + `\n… (${text.length - n} more characters)` : text;
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  function stamp(value) {
    if (typeof value !== "string" || !value) return "";
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? clip(value, 40) : date.toLocaleString([], { hour12: false });
  }

  function shortStamp(value) {
    // a table cell: the time of day for today, else the date too
    if (typeof value !== "string" || !value) return "";
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return clip(value, 20);
    const today = new Date();
    if (date.toDateString() === today.toDateString()) return clock(date);
    return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${clock(date).slice(0, 5)}`;
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
    return `${Math.floor(s / 86400)}d ago`;
  }

  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    return { status: response.status, body, headers: response.headers };
  }

  async function postJSON(path, data) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(data || {}),
    });
    const body = await response.json().catch(() => ({}));
    return { status: response.status, body, headers: response.headers };
  }

  // -- globs (salt-run state.event / fnmatch: `*` crosses `/`) and ids --------------------

  // Python's fnmatch.translate (3.11), which the engine's tag filters use, ported: the
  // same ranges, negations and unclosed `[`; `*` crosses `/`. Interior `*fixed` pieces
  // are atomic, as in Python (emulated by a lookahead and a back-reference), so no tag,
  // however long or hostile, makes the match backtrack exponentially.
  const STAR = {};

  function escapeRe(c) {
    return c.replace(/[\\^$.*+?()[\]{}|/-]/g, "\\$&");
  }

  function bracket(pat, i, j) {
    // pat[i..j) is the inside of a [...] (j: the closing `]`); its regex, or null: never
    let stuff = pat.slice(i, j);
    const esc = (t) => t.replace(/\\/g, "\\\\").replace(/-/g, "\\-").replace(/\]/g, "\\]");
    if (!stuff.includes("-")) {
      stuff = stuff.replace(/\\/g, "\\\\").replace(/\]/g, "\\]");
    } else {
      const chunks = [];
      let k = pat[i] === "!" ? i + 2 : i + 1;
      for (;;) {
        k = pat.indexOf("-", k);
        if (k < 0 || k >= j) break;
        chunks.push(pat.slice(i, k));
        i = k + 1;
        k += 3;
      }
      const chunk = pat.slice(i, j);
      if (chunk) chunks.push(chunk);
      else chunks[chunks.length - 1] += "-";
      for (let m = chunks.length - 1; m > 0; m--) {
        const prev = chunks[m - 1];
        if (prev[prev.length - 1] > chunks[m][0]) {
          chunks[m - 1] = prev.slice(0, -1) + chunks[m].slice(1);
          chunks.splice(m, 1);
        }
      }
      stuff = chunks.map(esc).join("-");
    }
    if (!stuff) return "(?!)";
    if (stuff === "!") return "[\\s\\S]";
    if (stuff[0] === "!") stuff = "^" + stuff.slice(1);
    else if (stuff[0] === "^" || stuff[0] === "[") stuff = "\\" + stuff;
    return `[${stuff}]`;
  }

  function globRegex(glob) {
    const parts = [];
    let i = 0;
    const n = glob.length;
    while (i < n) {
      const c = glob[i++];
      if (c === "*") {
        if (parts[parts.length - 1] !== STAR) parts.push(STAR);
      } else if (c === "?") parts.push("[\\s\\S]");
      else if (c === "[") {
        let j = i;
        if (j < n && glob[j] === "!") j++;
        if (j < n && glob[j] === "]") j++;
        while (j < n && glob[j] !== "]") j++;
        if (j >= n) parts.push("\\[");
        else {
          parts.push(bracket(glob, i, j));
          i = j + 1;
        }
      } else parts.push(escapeRe(c));
    }
    let re = "";
    let group = 0;
    let k = 0;
    while (k < parts.length && parts[k] !== STAR) re += parts[k++];
    while (k < parts.length) {
      k++; // a STAR
      let fixed = "";
      while (k < parts.length && parts[k] !== STAR) fixed += parts[k++];
      if (k >= parts.length) {
        re += "[\\s\\S]*" + fixed;
      } else {
        group += 1;
        re += `(?=([\\s\\S]*?${fixed}))\\${group}`;
      }
    }
    try {
      return new RegExp(`^(?:${re})$`);
    } catch (err) {
      return /(?!)/; // (not reached for any glob Python accepts)
    }
  }

  function parseId(id) {
    if (typeof id !== "string") return null;
    const at = id.lastIndexOf(":");
    if (at <= 0) return null;
    const seq = Number(id.slice(at + 1));
    return Number.isSafeInteger(seq) ? { epoch: id.slice(0, at), seq } : null;
  }

  // -- JSON Patch (RFC 6902: add, remove, replace; RFC 6901 pointers) ---------------------

  function pointer(path) {
    if (path === "") return [];
    if (typeof path !== "string" || path[0] !== "/") throw new Error(`bad JSON pointer ${path}`);
    return path.slice(1).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  }

  function setKey(obj, key, value) {
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  }

  function arrayIndex(key, length, adding) {
    if (adding && key === "-") return length;
    if (!/^(0|[1-9][0-9]*)$/.test(key)) throw new Error(`bad array index ${key}`);
    const index = Number(key);
    if (index > length || (!adding && index === length)) throw new Error(`index ${key} out of range`);
    return index;
  }

  function lookup(doc, parts) {
    // the value at `parts`; throws when there is none
    let node = doc;
    for (const part of parts) {
      if (Array.isArray(node)) node = node[arrayIndex(part, node.length, false)];
      else if (isObj(node) && own(node, part)) node = node[part];
      else throw new Error(`nothing at /${parts.join("/")}`);
    }
    return node;
  }

  function deepEqual(a, b) {
    if (a === b) return true;
    if (!isObj(a) || !isObj(b) || Array.isArray(a) !== Array.isArray(b)) return false;
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => own(b, k) && deepEqual(a[k], b[k]));
  }

  function patchAdd(doc, parts, value) {
    if (!parts.length) return value;
    const parent = lookup(doc, parts.slice(0, -1));
    const key = parts[parts.length - 1];
    if (Array.isArray(parent)) parent.splice(arrayIndex(key, parent.length, true), 0, value);
    else if (isObj(parent)) setKey(parent, key, value);
    else throw new Error("add into a scalar");
    return doc;
  }

  function patchRemove(doc, parts) {
    if (!parts.length) throw new Error("cannot remove the whole document");
    const parent = lookup(doc, parts.slice(0, -1));
    const key = parts[parts.length - 1];
    if (Array.isArray(parent)) return parent.splice(arrayIndex(key, parent.length, false), 1)[0];
    if (!isObj(parent) || !own(parent, key)) throw new Error(`nothing at /${parts.join("/")}`);
    const value = parent[key];
    delete parent[key];
    return value;
  }

  function applyPatch(doc, ops) {
    // RFC 6902, every operation (the engine's deltas use add, remove and replace)
    if (!Array.isArray(ops)) throw new Error("patch is not a list");
    for (const op of ops) {
      if (!isObj(op)) throw new Error("patch operation is not an object");
      const parts = pointer(op.path);
      switch (op.op) {
        case "add":
          doc = patchAdd(doc, parts, op.value);
          break;
        case "remove":
          patchRemove(doc, parts);
          break;
        case "replace":
          if (!parts.length) doc = op.value;
          else {
            patchRemove(doc, parts);
            doc = patchAdd(doc, parts, op.value);
          }
          break;
        case "move": {
          const from = pointer(op.from);
          if (op.from === op.path) break;
          if (op.path.startsWith(`${op.from}/`)) throw new Error("cannot move a value into itself");
          doc = patchAdd(doc, parts, patchRemove(doc, from));
          break;
        }
        case "copy":
          doc = patchAdd(doc, parts, structuredClone(lookup(doc, pointer(op.from))));
          break;
        case "test":
          if (!deepEqual(lookup(doc, parts), op.value)) throw new Error(`test failed at ${op.path}`);
          break;
        default:
          throw new Error(`unknown patch operation ${op.op}`);
      }
    }
    return doc;
  }

  // for tests and the browser console: the page's pure helpers (no state, no token)
  window.saltWsDashboard = Object.freeze({ applyPatch, globRegex, parseId });

  // -- a websocket that reconnects with back-off ------------------------------------------

  class Stream {
    constructor(name, handlers) {
      this.name = name;
      this.h = handlers; // url(), opened(), message(m, size), state(kind, text), ended(reason)
      this.ws = null;
      this.attempt = 0;
      this.timer = null;
      this.stopped = true;
    }

    start() {
      this.stopped = false;
      this.attempt = 0;
      this.connect();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      const ws = this.ws;
      this.ws = null;
      if (ws) {
        ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null;
        try {
          ws.close(1000, "page closed the stream");
        } catch (err) {
          /* already closed */
        }
      }
    }

    restart(why) {
      // a stream the page cannot follow any more (a patch out of sequence): start afresh
      this.stop();
      this.stopped = false;
      this.h.state("warn", `restarting (${why})`);
      this.schedule(true);
    }

    send(obj) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN && this.ready) this.ws.send(JSON.stringify(obj));
    }

    connect() {
      if (this.stopped) return;
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(`${scheme}//${location.host}${this.h.url()}`);
      this.ws = ws;
      this.ready = false;
      ws.onopen = () => {
        ws.send(READY);
        this.ready = true;
        this.h.opened(this.attempt > 0);
      };
      ws.onmessage = (event) => {
        if (ws !== this.ws) return;
        this.attempt = 0;
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (err) {
          return;
        }
        if (isObj(message)) this.h.message(message, event.data.length);
      };
      ws.onerror = () => {}; // onclose follows, with the code
      ws.onclose = (event) => this.closed(ws, event);
    }

    closed(ws, event) {
      if (ws !== this.ws || this.stopped) return;
      this.ws = null;
      if (event.code === 4401) {
        this.h.ended(event.reason || "token invalid");
        return;
      }
      const why = event.code === 1001 ? "the master is shutting down" : event.code === 4001 ? "too slow" : `closed (${event.code})`;
      this.h.state("warn", `disconnected: ${why}`);
      this.schedule(false);
    }

    schedule(now) {
      clearTimeout(this.timer);
      const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.attempt);
      const delay = now ? 0 : Math.round(base * (0.75 + Math.random() * 0.5));
      this.attempt += 1;
      if (!now) this.h.state("warn", `reconnecting in ${Math.max(1, Math.round(delay / 1000))}s (attempt ${this.attempt})`);
      this.timer = setTimeout(() => this.recheck(), delay);
    }

    async recheck() {
      // Before reconnecting: is the session still valid? (A refused upgrade tells the
      // page nothing; /dashboard/session tells an ended session from an unreachable engine.)
      if (this.stopped) return;
      this.h.state("warn", `reconnecting (attempt ${this.attempt})`);
      let answer;
      try {
        answer = await getJSON("/dashboard/session");
      } catch (err) {
        this.schedule(false);
        return;
      }
      if (this.stopped) return;
      if (answer.status === 200 && !answer.body.user) {
        this.h.ended("session ended");
        return;
      }
      if (answer.status !== 200) {
        this.schedule(false);
        return;
      }
      this.connect();
    }
  }

  // -- a virtual list: only the rows in view are in the DOM -------------------------------

  class VirtualList {
    constructor(box, renderRow, empty) {
      this.box = box;
      this.renderRow = renderRow; // (item, index) -> element with a data-key
      this.empty = empty;
      this.items = [];
      this.space = el("div", { class: "vspace" });
      box.replaceChildren(this.space);
      this.pending = false;
      box.addEventListener("scroll", () => this.schedule(), { passive: true });
      new ResizeObserver(() => this.schedule()).observe(box);
    }

    set(items) {
      this.items = items;
      this.schedule();
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.draw();
      });
    }

    rowHeight() {
      return parseFloat(getComputedStyle(this.box).getPropertyValue("--row-h")) || 30;
    }

    draw() {
      const height = this.rowHeight();
      const count = this.items.length;
      const focused = this.box.contains(document.activeElement) ? document.activeElement.dataset.key : undefined;
      this.space.style.height = `${Math.max(count * height, count ? 0 : height * 2)}px`;
      if (!count) {
        this.space.replaceChildren(el("div", { class: "empty", text: this.empty }));
        return;
      }
      const top = this.box.scrollTop;
      const first = Math.max(0, Math.floor(top / height) - 4);
      const last = Math.min(count, Math.ceil((top + this.box.clientHeight) / height) + 4);
      const rows = [];
      for (let i = first; i < last; i++) {
        const row = this.renderRow(this.items[i], i);
        row.classList.add("vrow");
        row.style.transform = `translateY(${i * height}px)`;
        rows.push(row);
      }
      this.space.replaceChildren(...rows);
      if (focused !== undefined) {
        const again = rows.find((row) => row.dataset.key === focused);
        if (again) again.focus({ preventScroll: true });
      }
    }

    moveFocus(delta) {
      // arrow keys: the next row, scrolled into view and drawn if needed
      const current = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : undefined;
      let index = this.items.findIndex((item) => item.key === current);
      index = Math.min(this.items.length - 1, Math.max(0, index + delta));
      if (index < 0) return;
      const height = this.rowHeight();
      const y = index * height;
      if (y < this.box.scrollTop) this.box.scrollTop = y;
      else if (y + height > this.box.scrollTop + this.box.clientHeight) this.box.scrollTop = y + height - this.box.clientHeight;
      this.draw();
      const row = [...this.space.children].find((r) => r.dataset.key === this.items[index].key);
      if (row) row.focus();
    }
  }

  // -- state -----------------------------------------------------------------------------

  const doc = { minions: {}, jobs: {} }; // the formatted view as the engine sends it
  let master = null; // with include_master
  const minions = new Map(); // id -> {id, entry, up, seen, down}
  const tail = {
    events: [], // {key, id, tag, data, size, at}
    bytes: 0,
    paused: false,
    missedWhilePaused: 0,
    received: 0,
    duplicates: 0,
    filters: [],
    regexes: [],
    cursor: null, // the last id received: where a reconnect resumes
    pendingSubscribes: 0,
    envelope: null, // null: unknown yet; false: an engine without envelopes (no resume)
  };
  let tablesSeq = null; // delta mode: the last patch's seq
  let openJob = null; // jid of the job shown in the detail view
  let session = null;

  // -- connection state pills ------------------------------------------------------------

  function pill(id, label) {
    const node = $(id);
    return (kind, text) => {
      node.dataset.state = kind;
      node.textContent = `${label}: ${text}`;
      node.title = node.textContent;
    };
  }
  const tablesState = pill("conn-tables", "Tables");
  const eventsState = pill("conn-events", "Events");

  // -- minions ---------------------------------------------------------------------------

  function grain(entry, name) {
    const grains = isObj(entry) && isObj(entry.grains) ? entry.grains : {};
    return own(grains, name) ? grains[name] : undefined;
  }

  function ipv4(entry) {
    const value = grain(entry, "ipv4");
    const list = Array.isArray(value) ? value.filter((ip) => typeof ip === "string") : typeof value === "string" ? [value] : [];
    const outside = list.filter((ip) => !ip.startsWith("127."));
    return (outside.length ? outside : list).join(", ");
  }

  function syncMinions(now) {
    const table = isObj(doc.minions) ? doc.minions : {};
    for (const [mid, entry] of Object.entries(table)) {
      const known = minions.get(mid);
      if (known) {
        known.entry = entry;
        known.up = true;
        known.seen = now;
      } else {
        minions.set(mid, { id: mid, entry, up: true, seen: now });
      }
    }
    let down = 0;
    for (const minion of minions.values()) {
      if (!own(table, minion.id) && minion.up) {
        minion.up = false;
        minion.down = now;
      }
      if (!minion.up) down += 1;
    }
    if (down > DOWN_MAX) {
      const oldest = [...minions.values()].filter((m) => !m.up).sort((a, b) => a.down - b.down);
      for (const minion of oldest.slice(0, down - DOWN_MAX)) minions.delete(minion.id);
    }
    for (const minion of minions.values()) {
      const entry = minion.entry;
      minion.os = [grain(entry, "os"), grain(entry, "osrelease")].filter((v) => typeof v === "string" || typeof v === "number").join(" ");
      minion.kernel = typeof grain(entry, "kernel") === "string" ? grain(entry, "kernel") : "";
      minion.ip = ipv4(entry);
      const via = [];
      if (isObj(entry) && typeof entry.syndic === "string") via.push(`syndic ${entry.syndic}`);
      const from = isObj(entry) && typeof entry.master === "string" ? entry.master : master;
      if (typeof from === "string" && from) via.push(`master ${from}`);
      minion.via = via.join(" · ");
      minion.hay = [minion.id, minion.up ? "up" : "down", minion.os, minion.kernel, minion.ip, minion.via].join(" ").toLowerCase();
      minion.key = minion.id;
    }
  }

  function renderMinionRow(minion) {
    const seen = minion.up ? "now" : ago(Date.now() - minion.down);
    return el(
      "div",
      { class: `minion-row${minion.up ? "" : " down"}`, role: "listitem", "data-key": minion.id, "data-minion": minion.id, "data-state": minion.up ? "up" : "down" },
      el("span", { class: "c-id mono", text: clip(minion.id), title: minion.id }),
      el("span", { class: "c-state" }, el("span", { class: `badge ${minion.up ? "up" : "down"}`, text: minion.up ? "up" : "down" })),
      el("span", { class: "c-os", text: clip(minion.os), title: minion.os }),
      el("span", { class: "c-kernel", text: clip(minion.kernel) }),
      el("span", { class: "c-ip mono", text: clip(minion.ip), title: minion.ip }),
      el("span", { class: "c-via", text: clip(minion.via), title: minion.via }),
      el("span", { class: "c-seen", text: seen, title: minion.up ? "in the engine's table now" : `down since ${clock(new Date(minion.down))}` })
    );
  }

  let minionList;
  function drawMinions() {
    const query = $("minion-search").value.trim().toLowerCase();
    const all = [...minions.values()];
    const shown = query ? all.filter((m) => m.hay.includes(query)) : all;
    shown.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const up = all.filter((m) => m.up).length;
    $("minions-count").textContent = `${all.length} · ${up} up${query ? ` · ${shown.length} shown` : ""}`;
    minionList.set(shown);
  }

  // -- jobs ------------------------------------------------------------------------------

  function minionStatus(ret) {
    if (!isObj(ret)) return "pending";
    const answered = (ret.retcode !== null && ret.retcode !== undefined) || (ret.return !== null && ret.return !== undefined);
    if (ret.success === true) return "ok";
    if (ret.success === false) return answered ? "failed" : "missing"; // missing: no return within job_timeout
    if (answered) return ret.retcode === 0 || ret.retcode === undefined ? "ok" : "failed";
    return "pending";
  }

  function jobSummary(job) {
    const counts = { total: 0, returned: 0, ok: 0, failed: 0, missing: 0, pending: 0 };
    const entries = isObj(job.minions) ? job.minions : {};
    for (const ret of Object.values(entries)) {
      const status = minionStatus(ret);
      counts.total += 1;
      counts[status] += 1;
      if (status === "ok" || status === "failed") counts.returned += 1;
    }
    return counts;
  }

  function target(job) {
    const tgt = job.tgt;
    const text = Array.isArray(tgt) ? tgt.join(",") : typeof tgt === "string" ? tgt : tgt === undefined ? "" : JSON.stringify(tgt);
    return job.tgt_type && job.tgt_type !== "glob" ? `${text} (${job.tgt_type})` : text;
  }

  function jobList() {
    const jobs = isObj(doc.jobs) ? doc.jobs : {};
    const list = [];
    for (const [jid, job] of Object.entries(jobs)) {
      if (!isObj(job)) continue;
      list.push({ key: jid, jid, job, counts: jobSummary(job) });
    }
    // most recent first: jids are dated (YYYYmmddHHMMSSffffff); start_time breaks ties
    list.sort((a, b) => (a.jid.length !== b.jid.length ? b.jid.length - a.jid.length : a.jid < b.jid ? 1 : a.jid > b.jid ? -1 : 0));
    return list;
  }

  function renderJobRow(item) {
    const { jid, job, counts } = item;
    const state = typeof job.state === "string" ? job.state : "unknown";
    const parts = [`${counts.returned}/${counts.total}`];
    const returned = el("span", { class: "c-ret" }, parts[0]);
    if (counts.failed) returned.append(" ", el("span", { class: "badge failed", text: `${counts.failed} failed` }));
    if (counts.missing) returned.append(" ", el("span", { class: "badge missing", text: `${counts.missing} missing` }));
    if (!counts.failed && !counts.missing && counts.ok && state === "complete") returned.append(" ", el("span", { class: "badge ok", text: `${counts.ok} ok` }));
    const row = el(
      "button",
      {
        type: "button",
        class: `job-row${counts.failed || counts.missing ? " failed" : ""}`,
        role: "listitem",
        "data-key": jid,
        "data-jid": jid,
        "data-state": state,
        "aria-label": `job ${jid} ${clip(job.fun, 80)} ${state}, ${counts.returned} of ${counts.total} returned, ${counts.failed} failed`,
      },
      el("span", { class: "c-jid mono", text: clip(jid) }),
      el("span", { class: "c-fun mono", text: clip(job.fun), title: typeof job.fun === "string" ? job.fun : "" }),
      el("span", { class: "c-tgt", text: clip(target(job)), title: target(job) }),
      el("span", { class: "c-user", text: clip(job.user) }),
      el("span", { class: "c-start", text: shortStamp(job.start_time), title: stamp(job.start_time) }),
      el("span", { class: "c-state" }, el("span", { class: `badge ${state === "complete" ? "complete" : "running"}`, text: clip(state, 20) })),
      returned
    );
    row.addEventListener("click", () => showJob(jid));
    return row;
  }

  let jobView;
  function drawJobs() {
    const list = jobList();
    const running = list.filter((item) => item.job.state !== "complete").length;
    $("jobs-count").textContent = `${list.length} · ${running} running`;
    jobView.set(list);
    if (openJob !== null) showJob(openJob, true);
  }

  function showJob(jid, refresh) {
    const dialog = $("detail");
    if (refresh && !dialog.open) return;
    const job = isObj(doc.jobs) && own(doc.jobs, jid) ? doc.jobs[jid] : null;
    openJob = jid;
    $("detail-title").textContent = job ? `Job ${jid} · ${clip(job.fun, 80)}` : `Job ${jid} (no longer in the view)`;
    const body = [];
    if (job) {
      const counts = jobSummary(job);
      const meta = el("dl", { class: "meta" });
      const rows = [
        ["function", job.fun],
        ["target", target(job)],
        ["user", job.user],
        ["started", stamp(job.start_time)],
        ["ended", stamp(job.end_time)],
        ["state", job.state],
        ["minions", `${counts.returned}/${counts.total} returned · ${counts.ok} succeeded · ${counts.failed} failed · ${counts.missing} missing · ${counts.pending} pending`],
      ];
      for (const [name, value] of rows) meta.append(el("dt", { text: name }), el("dd", { text: clip(value, 2000) }));
      body.push(meta);
      const entries = isObj(job.minions) ? Object.entries(job.minions) : [];
      entries.sort((a, b) => (a[0] < b[0] ? -1 : 1));
      for (const [mid, ret] of entries) {
        const status = minionStatus(ret);
        const retcode = isObj(ret) && ret.retcode !== undefined && ret.retcode !== null ? `retcode ${clip(ret.retcode, 20)}` : "no retcode";
        const head = el(
          "h3",
          {},
          el("span", { class: "mono", text: clip(mid) }),
          el("span", { class: `badge ${status}`, text: status }),
          el("span", { class: "retcode", text: retcode })
        );
        if (isObj(ret) && typeof ret.error === "string") head.append(el("span", { text: clip(ret.error, 300) }));
        const section = el("section", { class: `ret ${status}`, "data-minion": mid, "data-status": status }, head);
        if (isObj(ret) && ret.return !== null && ret.return !== undefined) section.append(el("pre", { text: pretty(ret.return) }));
        body.push(section);
      }
    }
    $("detail-body").replaceChildren(...body);
    if (!dialog.open) dialog.showModal();
  }

  function showEvent(item) {
    openJob = null;
    $("detail-title").textContent = `${clip(item.tag, 300)}`;
    const meta = el("dl", { class: "meta" });
    meta.append(el("dt", { text: "id" }), el("dd", { text: item.id || "(none: engine without envelopes)" }));
    meta.append(el("dt", { text: "received" }), el("dd", { text: item.at.toLocaleString([], { hour12: false }) }));
    $("detail-body").replaceChildren(meta, el("pre", { text: pretty(item.data) }));
    const dialog = $("detail");
    if (!dialog.open) dialog.showModal();
  }

  // -- tables stream ---------------------------------------------------------------------

  let tablesFrame = false;
  function tablesChanged() {
    if (tablesFrame) return;
    tablesFrame = true;
    requestAnimationFrame(() => {
      tablesFrame = false;
      syncMinions(Date.now());
      drawMinions();
      drawJobs();
    });
  }

  const tables = new Stream("tables", {
    url: () => "/formatted_events?delta=1",
    opened: () => {
      tablesSeq = null; // a fresh snapshot (or fresh tables) follows
      tablesState("ok", "connected");
    },
    message: (m) => {
      if (typeof m.master === "string") master = m.master;
      try {
        if (own(m, "snapshot")) {
          const snap = isObj(m.snapshot) ? m.snapshot : {};
          doc.minions = isObj(snap.minions) ? snap.minions : {};
          doc.jobs = isObj(snap.jobs) ? snap.jobs : {};
          tablesSeq = Number.isSafeInteger(m.seq) ? m.seq : null;
          tablesState("ok", "connected (live patches)");
        } else if (own(m, "patch")) {
          if (tablesSeq === null || m.seq !== tablesSeq + 1) {
            tables.restart(`patch ${m.seq} after ${tablesSeq}`);
            return;
          }
          const patched = applyPatch(doc, m.patch);
          if (patched !== doc) {
            doc.minions = isObj(patched) && isObj(patched.minions) ? patched.minions : {};
            doc.jobs = isObj(patched) && isObj(patched.jobs) ? patched.jobs : {};
          }
          tablesSeq = m.seq;
        } else {
          if (own(m, "minions") && isObj(m.minions)) doc.minions = m.minions;
          if (own(m, "jobs") && isObj(m.jobs)) doc.jobs = m.jobs;
          if (tablesSeq === null) tablesState("ok", "connected (full tables)");
        }
      } catch (err) {
        tables.restart("a patch did not apply");
        return;
      }
      tablesChanged();
    },
    state: tablesState,
    ended: (reason) => sessionEnded(reason),
  });

  // -- event tail stream -----------------------------------------------------------------

  function tailUrl() {
    const params = new URLSearchParams({ envelope: "1" });
    if (tail.cursor) params.set("since", tail.cursor);
    for (const glob of tail.filters) params.append("tag", glob);
    return `/all_events?${params}`;
  }

  function matches(tag) {
    return !tail.regexes.length || tail.regexes.some((re) => re.test(tag));
  }

  let resumedFrom = null; // the cursor this connection resumed from
  let firstMessage = false; // the next message is the first of this connection

  function gapText(data) {
    const since = parseId(data.since);
    const from = parseId(data.resumed_from);
    const reason = typeof data.reason === "string" ? clip(data.reason, 60) : "gap";
    if (since && from && since.epoch === from.epoch && from.seq > since.seq) {
      const missed = from.seq - since.seq - 1;
      return `gap: ${missed} event${missed === 1 ? "" : "s"} missed (${reason})`;
    }
    return `gap: events missed, how many unknown (${reason})`;
  }

  function tailMessage(m, size) {
    const first = firstMessage;
    firstMessage = false;
    const tag = typeof m.tag === "string" ? m.tag : "";
    const data = own(m, "data") ? m.data : undefined;
    if (tail.envelope === null) tail.envelope = typeof m.id === "string";
    if (!tail.envelope) eventsState("ok", "connected (this engine has no envelopes: no resume)");
    const id = parseId(m.id);
    // Engine notices. A minion can put any tag on the bus, and such an event reaches an
    // administrator like any other: a gap is taken only as the first message after a
    // resume, a `subscribed` only while a subscribe is unanswered. Ids are the engine's.
    if (tag === `${NOTICE}gap` && first && resumedFrom && isObj(data)) {
      eventsState("bad", gapText(data));
      return;
    }
    if (tag === `${NOTICE}tick` && id) {
      if (!tail.cursor || newer(id)) tail.cursor = m.id;
      return;
    }
    if (tag === `${NOTICE}subscribed` && tail.pendingSubscribes > 0) {
      tail.pendingSubscribes -= 1;
      const tags = isObj(data) && Array.isArray(data.tags) ? data.tags.map((t) => clip(t, 100)) : [];
      if (!tail.pendingSubscribes) serverFilter(tags);
      return;
    }
    if (id) {
      if (tail.cursor && !newer(id)) {
        tail.duplicates += 1; // replayed twice: never shown twice
        return;
      }
      tail.cursor = m.id;
    }
    if (tag.startsWith("salt_ws/bus/")) eventsState(tag.endsWith("/restored") ? "warn" : "bad", `bus ${clip(tag.slice(12), 20)}: events may be missing`);
    tail.received += 1;
    const item = { key: m.id || `n${tail.received}`, id: m.id, tag, data, size, at: new Date() };
    tail.events.push(item);
    tail.bytes += size;
    while (tail.events.length > TAIL_MAX_EVENTS || tail.bytes > TAIL_MAX_BYTES) tail.bytes -= tail.events.shift().size;
    if (tail.paused) tail.missedWhilePaused += 1;
    else drawTail();
    countTail();
  }

  function newer(id) {
    const last = parseId(tail.cursor);
    return !last || last.epoch !== id.epoch || id.seq > last.seq;
  }

  function renderTailRow(item) {
    let summary;
    try {
      summary = JSON.stringify(item.data);
    } catch (err) {
      summary = String(item.data);
    }
    const row = el(
      "button",
      { type: "button", class: "trow", role: "listitem", "data-key": item.key, "data-tag": item.tag },
      el("span", { class: "ttime", text: clock(item.at) }),
      el("span", { class: "ttag", text: clip(item.tag, 300), title: item.tag }),
      el("span", { class: "tdata", text: clip(summary, SUMMARY) })
    );
    row.addEventListener("click", () => showEvent(item));
    return row;
  }

  let tailList;
  function drawTail() {
    const shown = [];
    for (let i = tail.events.length - 1; i >= 0; i--) if (matches(tail.events[i].tag)) shown.push(tail.events[i]);
    tailList.set(shown);
  }

  function serverFilter(tags) {
    $("tail-server").textContent = tags.length ? `server filter: ${tags.join(" ")}` : "server filter: none (every event)";
  }

  function countTail() {
    const paused = tail.paused ? ` · paused: ${tail.missedWhilePaused} new` : "";
    $("tail-count").textContent = `${tail.received} received${paused}`;
  }

  const events = new Stream("events", {
    url: tailUrl,
    opened: () => {
      resumedFrom = tail.cursor;
      firstMessage = true;
      tail.pendingSubscribes = 0;
      serverFilter(tail.filters); // as asked in the URL (?tag=)
      eventsState("ok", resumedFrom ? `resumed from ${resumedFrom}` : "connected");
    },
    message: tailMessage,
    state: eventsState,
    ended: (reason) => sessionEnded(reason),
  });

  function setFilters(text) {
    const globs = [...new Set(text.split(/[\s,]+/).filter(Boolean))].slice(0, 32);
    const old = tail.filters;
    if (globs.length === old.length && globs.every((g, i) => g === old[i])) return;
    tail.filters = globs;
    tail.regexes = globs.map(globRegex);
    // subscribe first, then unsubscribe: in between the server sends the union, never all
    const add = globs.filter((g) => !old.includes(g));
    const drop = old.filter((g) => !globs.includes(g));
    if (add.length) {
      tail.pendingSubscribes += 1;
      events.send({ subscribe: add });
    }
    if (drop.length) {
      tail.pendingSubscribes += 1;
      events.send({ unsubscribe: drop });
    }
    drawTail();
  }

  // -- session ---------------------------------------------------------------------------

  function showLogin(message, kind) {
    $("dash-view").hidden = true;
    $("who").hidden = true;
    $("login-view").hidden = false;
    const note = $("login-message");
    note.textContent = message || "";
    note.dataset.kind = kind || "error";
    tablesState("idle", "not connected");
    eventsState("idle", "not connected");
    $("username").focus();
  }

  function startDashboard(who) {
    session = who;
    $("login-view").hidden = true;
    $("dash-view").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = `${clip(who.user, 60)} (${clip(who.eauth, 30)})`;
    tablesState("warn", "connecting");
    eventsState("warn", "connecting");
    tables.start();
    events.start();
  }

  function stopDashboard() {
    tables.stop();
    events.stop();
    session = null;
    doc.minions = {};
    doc.jobs = {};
    minions.clear();
    tail.events = [];
    tail.bytes = 0;
    tail.cursor = null;
    tail.envelope = null;
    tail.received = 0;
    tail.missedWhilePaused = 0;
    tail.duplicates = 0;
    tablesSeq = null;
    $("tail-server").textContent = "";
    const dialog = $("detail");
    if (dialog.open) dialog.close();
    drawMinions();
    drawJobs();
    drawTail();
    countTail();
  }

  function sessionEnded(reason) {
    if (!session) return;
    stopDashboard();
    const messages = {
      "token expired": "Your session has expired. Log in again to continue.",
      "token revoked by /logout": "You were logged out (the session was revoked). Log in again to continue.",
      "session ended": "Your session has ended. Log in again to continue.",
    };
    showLogin(messages[reason] || `Your session is no longer valid (${clip(reason, 80)}). Log in again to continue.`);
  }

  async function login(event) {
    event.preventDefault();
    const username = $("username").value;
    const password = $("password").value;
    const eauth = $("eauth").value;
    const note = $("login-message");
    if (!username || !password || !eauth) {
      note.textContent = "Username, password and eauth are required.";
      return;
    }
    $("login-button").disabled = true;
    note.dataset.kind = "info";
    note.textContent = "Logging in…";
    try {
      const answer = await postJSON("/login", { username, password, eauth });
      if (answer.status === 200 && Array.isArray(answer.body.return) && isObj(answer.body.return[0])) {
        const ret = answer.body.return[0];
        $("password").value = "";
        note.textContent = "";
        // the token stays in the HttpOnly cookie; nothing of it is kept here
        startDashboard({ user: ret.user, eauth: ret.eauth, expire: ret.expire });
        return;
      }
      note.dataset.kind = "error";
      const why = typeof answer.body.return === "string" ? answer.body.return : `HTTP ${answer.status}`;
      note.textContent = answer.status === 401 ? "Login failed: wrong username, password or eauth." : `Login failed: ${clip(why, 200)}`;
    } catch (err) {
      note.dataset.kind = "error";
      note.textContent = "The engine cannot be reached. Try again in a moment.";
    } finally {
      $("login-button").disabled = false;
    }
  }

  async function logout() {
    stopDashboard();
    try {
      await postJSON("/logout");
    } catch (err) {
      /* the cookie is cleared by the server; if unreachable, the token expires by itself */
    }
    showLogin("You are logged out.", "info");
  }

  async function loadEauth() {
    const select = $("eauth");
    let names = [];
    try {
      const answer = await getJSON("/dashboard/eauth");
      names = Array.isArray(answer.body.eauth) ? answer.body.eauth.filter((n) => typeof n === "string") : [];
    } catch (err) {
      names = [];
    }
    select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
    if (!names.length) select.append(el("option", { value: "", text: "(no external_auth on this master)" }));
  }

  // -- wiring ----------------------------------------------------------------------------

  function init() {
    minionList = new VirtualList($("minion-list"), renderMinionRow, "No minion connected.");
    jobView = new VirtualList($("job-list"), renderJobRow, "No job yet.");
    tailList = new VirtualList($("tail-list"), renderTailRow, "No event yet.");
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("minion-search").addEventListener("input", drawMinions);
    let filterTimer = null;
    const filter = $("tail-filter");
    filter.addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => setFilters(filter.value), 400);
    });
    filter.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        clearTimeout(filterTimer);
        setFilters(filter.value);
      }
    });
    $("tail-pause").addEventListener("click", () => {
      tail.paused = !tail.paused;
      const button = $("tail-pause");
      button.setAttribute("aria-pressed", String(tail.paused));
      button.textContent = tail.paused ? "Resume" : "Pause";
      if (!tail.paused) {
        tail.missedWhilePaused = 0;
        drawTail();
      }
      countTail();
    });
    for (const [id, list] of [
      ["job-list", () => jobView],
      ["tail-list", () => tailList],
    ]) {
      $(id).addEventListener("keydown", (event) => {
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
          event.preventDefault();
          list().moveFocus(event.key === "ArrowDown" ? 1 : -1);
        }
      });
    }
    $("detail-close").addEventListener("click", () => $("detail").close());
    $("detail").addEventListener("close", () => {
      openJob = null;
    });
    setInterval(() => {
      if (session) minionList.schedule(); // "last seen" of minions that went down
    }, 5000);
    countTail();
    loadEauth();
    getJSON("/dashboard/session")
      .then((answer) => (answer.status === 200 && answer.body.user ? startDashboard(answer.body) : showLogin("")))
      .catch(() => showLogin("The engine cannot be reached. Reload the page to try again."));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
