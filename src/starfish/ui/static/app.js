// The Starfish job viewer: two pages (jobs, one job) over the read-only JSON API.
// Everything from the database goes into the page as text nodes (textContent), never as
// HTML: a record holding <script> shows those characters.
"use strict";

const main = document.getElementById("main");
let generation = 0; // bumped on every route change: a stale poll stops itself

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "onclick" || key === "onchange" || key === "onkeydown") node[key] = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.json();
}

const num = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
const usd = (x) => (x === null || x === undefined ? "-" : "$" + Number(x).toFixed(x < 1 ? 4 : 2));
function when(t) {
  if (!t) return "-";
  const d = new Date(t * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function duration(s) {
  if (s === null || s === undefined) return "-";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}
const badge = (status) => el("span", { class: "status " + status, "data-testid": "status" }, status);
function bar(done, total) {
  const share = total ? Math.min(1, done / total) : 0;
  return el("span", { class: "bar", title: `${num(done)} of ${num(total)}` },
    el("span", { style: { width: `${(share * 100).toFixed(1)}%` } }));
}

// jobs page ------------------------------------------------------------------------------
async function jobsPage(gen) {
  const table = el("table", { id: "jobs" });
  const head = el("tr", {}, ...["job", "name", "status", "progress", "completed", "failed", "dead", "cost", "started", "duration"].map((h) => el("th", {}, h)));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  table.append(body);
  main.replaceChildren(el("h1", {}, "Jobs"), table);
  while (gen === generation) {
    let jobs;
    try {
      jobs = await api("/api/jobs");
    } catch (e) {
      main.replaceChildren(el("p", { class: "error" }, String(e)));
      return;
    }
    if (gen !== generation) return;
    body.replaceChildren(...jobs.map(jobRow));
    if (!jobs.length) body.append(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "no jobs stored yet")));
    const running = jobs.some((j) => j.status === "running");
    await sleep(running ? 1000 : 5000); // at most one request a second
  }
}

function jobRow(j) {
  const row = el("tr", { class: "job", "data-job": j.job_id },
    el("td", { title: j.job_id }, j.job_id.slice(0, 8)),
    el("td", {}, j.name || "-"),
    el("td", {}, badge(j.status)),
    el("td", {}, bar(j.done, j.num_inputs), " ", el("span", { class: "muted", "data-testid": "done" }, `${num(j.done)} / ${num(j.num_inputs)}`)),
    el("td", { class: "num", "data-testid": "completed" }, num(j.counts.completed)),
    el("td", { class: "num" }, num(j.counts.failed)),
    el("td", { class: "num" }, num(j.counts.dead)),
    el("td", { class: "num" }, usd(j.cost_usd)),
    el("td", {}, when(j.created_at)),
    el("td", {}, duration(j.duration)));
  row.onclick = () => { location.hash = "#/job/" + encodeURIComponent(j.job_id); };
  return row;
}

// job page -------------------------------------------------------------------------------
async function jobPage(gen, jobId) {
  const summary = el("div", { id: "summary" });
  const charts = el("div", { id: "charts" });
  const quality = el("div", { id: "quality" });
  const records = el("div", { id: "records" });
  main.replaceChildren(summary, charts, quality, records);
  let first = true;
  while (gen === generation) {
    let job;
    try {
      job = await api("/api/jobs/" + encodeURIComponent(jobId));
    } catch (e) {
      main.replaceChildren(el("p", { class: "error" }, String(e)));
      return;
    }
    if (gen !== generation) return;
    renderSummary(summary, job);
    if (first) {
      first = false;
      recordsTable(records, job, gen);
      loadQuality(quality, job.job_id);
    }
    loadChart(charts, job);
    if (job.status !== "running") return;
    await sleep(1000);
  }
}

function renderSummary(box, job) {
  const c = job.counts;
  const cards = el("div", { class: "cards" },
    card("status", badge(job.status)),
    card("inputs", num(job.num_inputs)),
    card("done", num(job.done)),
    ...["completed", "failed", "filtered", "duplicate", "dead"].map((k) => card(k, num(c[k]), k)),
    job.waiting ? card("waiting", num(job.waiting), "waiting") : null,
    card("cost", usd(job.cost_usd)),
    card("started", when(job.created_at)),
    card("duration", duration(job.duration)));
  const parts = [
    el("h1", {}, `${job.name || "job"} `, el("span", { class: "muted" }, job.job_id)),
    el("p", {}, bar(job.done, job.num_inputs), " ", `${num(job.done)} of ${num(job.num_inputs)} inputs done`),
    cards,
    el("p", { id: "stop-reason" }, el("b", {}, "stop reason: "), job.stop_reason || "-"),
  ];
  if (job.llm) {
    const m = job.llm;
    parts.push(el("h2", {}, "Model"), el("div", { class: "cards" },
      card("requests", num(m.requests)), card("cache hits", num(m.cache_hits)),
      card("prompt tokens", num(m.prompt_tokens)), card("completion tokens", num(m.completion_tokens)),
      card("rate limited", num(m.rate_limited)), card("retries", num(m.retries)),
      card("re-asks", num(m.reasks)), card("cost", usd(m.cost_usd))));
  }
  if (job.dead_by_error && job.dead_by_error.length) {
    const t = el("table", { id: "dead" }, el("tr", {}, el("th", {}, "error type"), el("th", {}, "dead inputs"), el("th", {}, "example (input #)"), el("th", {}, "example")));
    for (const d of job.dead_by_error) {
      t.append(el("tr", {}, el("td", {}, d.error_type), el("td", { class: "num" }, num(d.count)), el("td", { class: "num" }, d.example_index), el("td", { class: "preview" }, d.example)));
    }
    parts.push(el("h2", {}, "Dead-letter queue by error type"), t);
  } else if (c.dead) {
    parts.push(el("h2", {}, "Dead-letter queue"), el("p", {}, `${num(c.dead)} dead inputs (their attempts were filtered or duplicate, not failed)`));
  }
  if (job.batches !== null && job.batches !== undefined) {
    parts.push(el("h2", {}, "Batches"), el("pre", {}, JSON.stringify(job.batches, null, 2)));
  }
  parts.push(el("h2", {}, "Config"), el("pre", { id: "config" }, JSON.stringify(job.config || {}, null, 2)));
  box.replaceChildren(...parts);
}

function card(label, value, id) {
  return el("div", { class: "card", "data-testid": id ? "count-" + id : "card" }, el("b", {}, value), el("span", {}, label));
}

async function loadChart(box, job) {
  if (!job.llm) { box.replaceChildren(); return; }
  let data;
  try { data = await api(`/api/jobs/${encodeURIComponent(job.job_id)}/chart`); } catch (e) { return; }
  const pts = data.points;
  if (!pts.length) { box.replaceChildren(); return; }
  // Each answer is kept with its cost; answers kept by an older version have none, and then
  // the job's total is spread by tokens.
  const priced = pts.every((p) => p[3] !== null && p[3] !== undefined);
  const totalTokens = pts.reduce((s, p) => s + p[2], 0) || 1;
  let cum = 0;
  const cost = pts.map((p) => {
    if (priced) { cum += p[3]; return cum; }
    cum += p[2]; return job.cost_usd ? (job.cost_usd * cum) / totalTokens : 0;
  });
  box.replaceChildren(el("h2", {}, "Over time"),
    el("div", { class: "cards" },
      lineChart("requests/s", pts.map((p) => [p[0], p[1]])),
      lineChart("tokens/s", pts.map((p) => [p[0], p[2]])),
      lineChart(priced ? "cost" : "cost (total spread by tokens)", pts.map((p, i) => [p[0], cost[i]]))));
}

function lineChart(title, points) {
  const W = 340, H = 120, P = 24;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1);
  const ymax = Math.max(...points.map((p) => p[1]), 1e-9);
  const xy = points.map((p) => [P + ((p[0] - t0) / (t1 - t0)) * (W - 2 * P), H - P - (p[1] / ymax) * (H - 2 * P)]);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", xy.map((q) => q.map((v) => v.toFixed(1)).join(",")).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2f6fde");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  const label = (x, y, text) => { const n = document.createElementNS(ns, "text"); n.setAttribute("x", x); n.setAttribute("y", y); n.textContent = text; svg.append(n); };
  label(P, 12, `${title} · max ${ymax < 1 ? ymax.toFixed(4) : num(Math.round(ymax))}`);
  label(P, H - 6, `${duration(t1 - t0)}`);
  return svg;
}

async function loadQuality(box, jobId) {
  let q;
  try { q = await api(`/api/jobs/${encodeURIComponent(jobId)}/quality`); } catch (e) { return; }
  if (!q) return;
  const d = q.duplicates;
  const parts = [el("h2", {}, "Quality"), el("div", { class: "cards" },
    card("exact duplicates", num(d.exact)), card("near duplicates", num(d.near)), card("semantic duplicates", num(d.semantic)),
    card("judged", num(q.judged)), card("mean score", q.mean_score === null ? "-" : q.mean_score),
    card("under min score", num(q.under_min_score)))];
  const hist = Object.entries(q.score_histogram);
  if (hist.length) {
    const top = Math.max(...hist.map((h) => h[1]));
    parts.push(el("div", { class: "hist", id: "histogram" }, ...hist.map(([score, n]) =>
      el("div", { style: { height: `${Math.max(2, (n / top) * 70)}px` }, title: `${score}: ${num(n)}` }, el("span", {}, score)))));
  }
  box.replaceChildren(...parts);
}

// records table: keyset paging, status filter, text search --------------------------------
function recordsTable(box, job, gen) {
  const status = el("select", { id: "status-filter" }, ...["completed", "filtered", "duplicate", "failed", "dead"].map((s) => el("option", { value: s }, s)));
  const search = el("input", { id: "search", type: "search", placeholder: "search text" });
  const from = el("input", { id: "from-index", type: "number", min: "0", placeholder: "from input #", class: "narrow" });
  const prev = el("button", { id: "prev" }, "‹ previous");
  const next = el("button", { id: "next" }, "next ›");
  const note = el("span", { class: "muted", id: "page-note" });
  const table = el("table", { id: "records-table" });
  const detail = el("pre", { id: "record-json", hidden: "" });
  let cursors = ["-1"], nextCursor = null;
  box.replaceChildren(el("h2", {}, "Records"), el("div", { class: "controls" }, status, search, from, prev, next, note), detail, table);

  async function load() {
    const after = cursors[cursors.length - 1];
    const params = new URLSearchParams({ status: status.value, after, limit: "50" });
    if (search.value) params.set("q", search.value);
    let page;
    try { page = await api(`/api/jobs/${encodeURIComponent(job.job_id)}/records?${params}`); } catch (e) { note.textContent = String(e); return; }
    if (gen !== generation) return;
    const isInput = status.value === "completed" || status.value === "dead";
    const header = el("tr", {}, el("th", {}, "input #"), el("th", {}, isInput ? "attempts" : "attempt"),
      el("th", {}, status.value === "completed" ? "records" : "error type"), el("th", {}, "JSON"));
    const rows = page.rows.map((r) => {
      const tr = el("tr", { class: "rec" }, el("td", { class: "num" }, r.index), el("td", { class: "num" }, r.attempts),
        el("td", {}, status.value === "completed" ? num(r.records) : r.error_type || "-"), el("td", { class: "preview" }, r.preview));
      // A dead input's own row holds no record: show its last failure.
      tr.onclick = () => (r.attempt_id ? showRecord("failed", r.attempt_id) : showRecord(status.value, r.key));
      return tr;
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no records here")));
    table.replaceChildren(el("thead", {}, header), el("tbody", {}, ...rows));
    nextCursor = page.next;
    next.disabled = nextCursor === null;
    prev.disabled = cursors.length <= 1;
    note.textContent = page.rows.length < 50 && page.next !== null
      ? `looked up to input #${num(page.scanned_to)}: "next" looks further`
      : `page ${cursors.length}`;
  }

  async function showRecord(kind, key) {
    const found = await api(`/api/jobs/${encodeURIComponent(job.job_id)}/records/${kind}/${key}`);
    detail.textContent = found.json; // text, never HTML
    detail.hidden = false;
  }

  const restart = () => {
    const start = from.value === "" ? -1 : Math.max(-1, parseInt(from.value, 10) - 1);
    cursors = [status.value === "completed" || status.value === "dead" ? String(start) : `${start}.-1`];
    detail.hidden = true;
    load();
  };
  status.onchange = restart;
  from.onchange = restart;
  let timer = null;
  search.oninput = () => { clearTimeout(timer); timer = setTimeout(restart, 300); };
  next.onclick = () => { if (nextCursor !== null) { cursors.push(nextCursor); load(); } };
  prev.onclick = () => { if (cursors.length > 1) { cursors.pop(); load(); } };
  load();
}

// routing ----------------------------------------------------------------------------------
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function route() {
  generation += 1;
  const gen = generation;
  const match = location.hash.match(/^#\/job\/(.+)$/);
  if (match) jobPage(gen, decodeURIComponent(match[1]));
  else jobsPage(gen);
}
window.addEventListener("hashchange", route);
route();
