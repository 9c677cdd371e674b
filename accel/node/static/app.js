// accel node dashboard: renders the cards the daemon computes (accel/node/view.py)
// and keeps them current from the server-sent event stream at /events; no reloads.
"use strict";

const cards = new Map();   // key "model@version" -> card
let rankingRows = [];

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}
// The same figures as the CLI (accel/units.py): binary units, ETA as m:ss or h:mm:ss.
function fmtRate(bps) { return fmtBytes(bps || 0) + "/s"; }
function fmtEta(s) {
  if (s === null || s === undefined || !isFinite(s)) return "-";
  s = Math.max(0, Math.round(s));
  const two = (n) => String(n).padStart(2, "0");
  if (s < 3600) return Math.floor(s / 60) + ":" + two(s % 60);
  return Math.floor(s / 3600) + ":" + two(Math.floor((s % 3600) / 60)) + ":" + two(s % 60);
}
function pct(done, total) { return total ? Math.min(100, (100 * done) / total) : 0; }

function toast(text, isError) {
  const t = $("#toast");
  t.textContent = text;
  t.style.background = isError ? "#d64545" : "#1d2433";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

async function post(path, body) {
  const resp = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = data.error || {};
    toast((err.message || "request failed") + (err.hint ? " — " + err.hint : ""), true);
    throw new Error(err.message || String(resp.status));
  }
  return data;
}

function bar(state, done, total, inflight) {
  // done counts every byte received (the figure printed beside the bar): the verified
  // part in the solid fill, the part still in flight (not yet checked) in a pale tail,
  // so the whole bar is as long as the percentage says.
  const tail = Math.max(0, Math.min(pct(done, total), pct(inflight || 0, total)));
  return el("div", { class: "bar " + (state || "") },
    el("div", { class: "fill", style: "width:" + (pct(done, total) - tail).toFixed(1) + "%" }),
    tail > 0 ? el("div", { class: "inflight", style: "width:" + tail.toFixed(1) + "%" }) : null);
}

// cards whose "N files done" list a person opened: kept open across re-renders
const openRest = new Set();

function renderCard(c) {
  const id = { model_id: c.model_id, version: c.version };
  const st = c.state || "unknown";
  const act = (name) => () => post("/api/" + name, id).catch(() => {});
  const inflight = st === "downloading" || st === "queued" || st === "verifying";
  const prioInput = el("input", { class: "prio", type: "number", value: c.priority ?? 0,
    title: "priority (higher first)", "data-role": "priority", "aria-label": "priority" });
  const prio = el("label", { class: "prio-label" }, "Priority ", prioInput);
  const figures = c.total
    ? `${fmtBytes(c.done)} / ${fmtBytes(c.total)} · ${pct(c.done, c.total).toFixed(0)}%` +
      (st === "downloading" ? ` · ${fmtRate(c.speed_bps)} · ETA ${fmtEta(c.eta_s)}` : "")
    : "";
  const card = el("div", { class: "card", "data-key": c.key, "data-state": st },
    el("div", { class: "head" },
      el("span", { class: "name" }, c.model_id),
      el("span", { class: "ver" }, "@" + (c.version ?? "default")),
      el("span", { class: "badge " + st, "data-role": "state" }, st),
      el("span", { class: "actions" },
        inflight ? el("button", { "data-action": "pause", onclick: act("pause") }, "Pause") : null,
        st === "paused" ? el("button", { class: "primary", "data-action": "resume", onclick: act("resume") }, "Resume") : null,
        st === "error" ? el("button", { class: "primary", "data-action": "retry", onclick: act("retry") }, "Retry") : null,
        inflight || st === "paused" ? prio : null,
        inflight || st === "paused" ? el("button", { "data-action": "priority", onclick: () =>
          post("/api/priority", { ...id, priority: parseInt(prioInput.value || "0", 10) })
            .then(() => toast("priority of " + c.model_id + " set to " + prioInput.value)).catch(() => {}) }, "Set") : null,
        st === "ready" || st === "error" || st === "paused"
          ? el("button", { "data-action": "remove", onclick: () => {
              if (confirm("Remove " + c.key + " from this node?")) act("remove")(); } }, "Remove") : null)),
    bar(st, c.done, c.total, c.inflight),
    el("div", { class: "figures", "data-role": "figures" }, figures));
  if (st === "ready" && c.path) card.append(el("div", { class: "path-ready" }, "ready at " + c.path));
  if (c.update) {
    // A staged update: the version above stays usable until the new content is swapped in.
    const u = c.update;
    const ust = u.state || "unknown";
    card.append(el("div", { class: "update", "data-role": "update", "data-state": ust },
      el("span", { class: "badge " + ust }, "update " + ust),
      bar(ust, u.done, u.total, u.inflight),
      el("span", { class: "figures" }, u.total
        ? `${fmtBytes(u.done)} / ${fmtBytes(u.total)}` +
          (ust === "downloading" ? ` · ${fmtRate(u.speed_bps)} · ETA ${fmtEta(u.eta_s)}` : "")
        : ""),
      u.error ? el("div", { class: "errbox" }, el("div", { class: "title" }, u.error.title),
        el("div", {}, u.error.advice)) : null));
  }
  if (c.error) {
    card.append(el("div", { class: "errbox", "data-role": "error" },
      el("div", { class: "title" }, c.error.title),
      el("div", {}, c.error.advice),
      c.error.detail ? el("div", { class: "detail" }, c.error.detail) : null));
  }
  if (c.files && c.files.length && st !== "ready") {
    // The files in flight, each with its bar; the others folded into one line
    // ("118 files done, 2 waiting") that opens on a click and stays open.
    const row = (grid, f) => grid.append(el("span", { class: "path", title: f.path }, f.path),
      bar(f.state || st, f.done, f.total, f.inflight),
      el("span", { class: "figures" }, `${fmtBytes(f.done)} / ${fmtBytes(f.total)}` +
        (f.speed_bps ? " · " + fmtRate(f.speed_bps) : "")));
    const active = c.files.filter((f) => f.state === "downloading");
    const rest = c.files.filter((f) => f.state !== "downloading");
    if (active.length) {
      const grid = el("div", { class: "files", "data-role": "files-active" });
      for (const f of active) row(grid, f);
      card.append(grid);
    }
    if (rest.length) {
      const nDone = rest.filter((f) => f.state === "done").length;
      const label = `${nDone} file${nDone === 1 ? "" : "s"} done` +
        (rest.length > nDone ? `, ${rest.length - nDone} waiting` : "");
      const det = el("details", { class: "files-rest", "data-role": "files-rest" },
        el("summary", {}, label));
      if (openRest.has(c.key)) det.open = true;
      det.addEventListener("toggle", () => {
        if (det.open) openRest.add(c.key); else openRest.delete(c.key);
      });
      const grid = el("div", { class: "files" });
      for (const f of rest) row(grid, f);
      det.append(grid);
      card.append(det);
    }
  }
  return card;
}

function renderModels() {
  const box = $("#models");
  const focused = document.activeElement && document.activeElement.dataset.role === "priority";
  if (focused) return; // do not steal the priority input from a person typing in it
  box.replaceChildren(...[...cards.values()]
    .sort((a, b) => a.key.localeCompare(b.key)).map(renderCard));
  $("#empty").hidden = cards.size > 0;
  renderTotal();
  renderRanking();
}

function renderTotal() {
  const active = [...cards.values()].filter((c) => ["queued", "downloading", "verifying"].includes(c.state));
  const done = active.reduce((s, c) => s + (c.done || 0), 0);
  const total = active.reduce((s, c) => s + (c.total || 0), 0);
  const speed = active.reduce((s, c) => s + (c.speed_bps || 0), 0);
  $("#total-fill").style.width = (active.length ? pct(done, total) : 0).toFixed(1) + "%";
  $("#total-text").textContent = active.length
    ? `${active.length} active · ${fmtBytes(done)} / ${fmtBytes(total)} · ${fmtRate(speed)} · ETA ${fmtEta(speed ? (total - done) / speed : null)}`
    : `idle · ${[...cards.values()].filter((c) => c.state === "ready").length} ready`;
}

function localState(modelId) {
  const order = ["ready", "verifying", "downloading", "queued", "paused", "error"];
  let best = null;
  for (const c of cards.values()) {
    if (c.model_id !== modelId) continue;
    if (best === null || order.indexOf(c.state) < order.indexOf(best)) best = c.state;
  }
  return best;
}

function renderRanking() {
  const body = $("#ranking tbody");
  body.replaceChildren(...rankingRows.map((r) => {
    const here = localState(r.model_id) || r.local_state;
    const present = here && here !== "not_installed";
    return el("tr", { "data-model": r.model_id },
      el("td", {}, r.rank ?? "–"),
      el("td", {}, el("div", {}, r.name), el("div", { class: "muted" }, r.model_id)),
      el("td", {}, (r.task || "") + (r.languages && r.languages.length ? " · " + r.languages.join(", ") : "")),
      el("td", {}, fmtBytes(r.size_bytes)),
      el("td", {}, r.request_count),
      el("td", {}, present ? el("span", { class: "badge " + here }, here) : ""),
      el("td", {}, el("button", { class: "primary", "data-action": "install", disabled: present,
        onclick: () => post("/api/install", { model_id: r.model_id, version: null, priority: 0 })
          .then(() => toast("queued " + r.model_id)).catch(() => {}) }, "Install")));
  }));
}

async function loadRanking() {
  try {
    const resp = await fetch("/api/ranking?limit=20");
    const data = await resp.json();
    if (!resp.ok) throw new Error((data.error && data.error.message) || resp.status);
    rankingRows = data;
    $("#ranking-error").hidden = true;
    renderRanking();
  } catch (e) {
    $("#ranking-error").textContent = "Cannot load the hub's ranking: " + e.message;
    $("#ranking-error").hidden = false;
  }
}

function setCards(list) {
  cards.clear();
  for (const c of list || []) cards.set(c.key, c);
  renderModels();
}

function addReport(r) {
  const ul = $("#reports");
  if (ul.querySelector(".muted")) ul.replaceChildren();
  ul.prepend(el("li", {}, `${new Date(r.timestamp).toLocaleTimeString()} · job ${r.job_id}: ` +
    `${r.model_id}@${r.version ?? "default"} ${r.reason.replace("_", " ")}` +
    (r.install_queued ? " — install queued" : "")));
}

function connect() {
  const es = new EventSource("/events");
  const conn = $("#conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn on"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; };
  es.addEventListener("snapshot", (e) => setCards(JSON.parse(e.data).cards));
  es.addEventListener("cards", (e) => setCards(JSON.parse(e.data).cards));
  const onCard = (e) => {
    const d = JSON.parse(e.data);
    if (!d.card) return;
    if (e.type === "removed") cards.delete(d.card.key); else cards.set(d.card.key, d.card);
    renderModels();
    if (e.type === "ready") toast(`${d.card.model_id}@${d.card.version} is ready`);
  };
  for (const name of ["progress", "ready", "failed", "removed", "queued", "paused", "resumed",
    "state", "verifying", "started"]) es.addEventListener(name, onCard);
  es.addEventListener("model_not_available", (e) => addReport(JSON.parse(e.data)));
  es.addEventListener("warning", (e) => toast("warning: " + JSON.parse(e.data).message, true));
  es.addEventListener("preseed", (e) => {
    const d = JSON.parse(e.data);
    if (d.started && d.started.length) toast("pre-seeding " + d.started.join(", "));
    loadRanking();
  });
  es.addEventListener("shutdown", () => { conn.textContent = "node stopped"; conn.className = "conn off"; });
}

async function init() {
  const resp = await fetch("/api/state");
  const st = await resp.json();
  $("#node-id").textContent = st.node_id;
  $("#hub-url").textContent = st.hub_url;
  $("#models-dir").textContent = st.models_dir;
  setCards(st.cards);
  connect();
  loadRanking();
  setInterval(loadRanking, 15000);
  $("#refresh-ranking").addEventListener("click", loadRanking);
}

init();
