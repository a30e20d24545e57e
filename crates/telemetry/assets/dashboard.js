// Switchboard dashboard: polls the admin listener's metrics (Prometheus
// text, behind the bearer token) and draws them. No dependencies.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90;
const state = { token: null, history: [], last: null };

function tokenFromPage() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const token = hash.get("token");
  if (token) {
    sessionStorage.setItem("switchboard-token", token);
    history.replaceState(null, "", location.pathname);
    return token;
  }
  return sessionStorage.getItem("switchboard-token");
}

// Parses the Prometheus text format into [{name, labels, value}].
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) {
        labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
      }
    }
    samples.push({ name: m[1], labels, value: parseFloat(m[4]) });
  }
  return samples;
}

function sum(samples, name, filter) {
  return samples
    .filter((s) => s.name === name && (!filter || filter(s.labels)))
    .reduce((a, s) => a + s.value, 0);
}

function groupBy(samples, name, keys) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = keys.map((k) => s.labels[k] || "").join("\u0000");
    out.set(key, (out.get(key) || 0) + s.value);
  }
  return out;
}

// histogram_quantile over every series of a histogram, summed by `le`.
function quantile(samples, name, q) {
  const buckets = groupBy(samples, name + "_bucket", ["le"]);
  const sorted = [...buckets.entries()]
    .map(([le, c]) => [le === "+Inf" ? Infinity : parseFloat(le), c])
    .sort((a, b) => a[0] - b[0]);
  if (!sorted.length) return NaN;
  const total = sorted[sorted.length - 1][1];
  if (total === 0) return NaN;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = count - prevCount;
      return inBucket === 0 ? le : prevLe + (le - prevLe) * ((rank - prevCount) / inBucket);
    }
    prevLe = le; prevCount = count;
  }
  return prevLe;
}

function fmtInt(n) { return Number.isFinite(n) ? String(Math.round(n)) : "–"; }
function fmtMs(s) { return Number.isFinite(s) ? (s * 1000).toFixed(2) : "–"; }
function fmtCost(n) { return Number.isFinite(n) ? n.toFixed(6) : "–"; }

function setText(id, text) { document.getElementById(id).textContent = text; }

function fillTable(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell.text;
      if (cell.num) td.className = "n";
      if (cell.key) td.dataset.key = cell.key;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function lineChart(canvas, series, colors, floor) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const all = series.flat().filter(Number.isFinite);
  const max = Math.max(floor, ...all);
  ctx.strokeStyle = "#dde1e8"; ctx.fillStyle = "#6b7385"; ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + (h - pad) * (i / 4);
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((max * (1 - i / 4)).toPrecision(2), 0, y + 4);
  }
  series.forEach((points, i) => {
    ctx.strokeStyle = colors[i]; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach((v, x) => {
      if (!Number.isFinite(v)) return;
      const px = pad + (w - pad) * (x / Math.max(1, HISTORY - 1));
      const py = pad / 2 + (h - pad) * (1 - v / max);
      x === 0 ? ctx.moveTo(px, py) : ctx.lineTo(px, py);
    });
    ctx.stroke();
  });
}

function barChart(canvas, bars) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...bars.map((b) => b.value));
  const rowH = Math.min(28, h / Math.max(1, bars.length));
  ctx.font = "11px sans-serif";
  bars.forEach((bar, i) => {
    const y = i * rowH;
    ctx.fillStyle = "#2f6fed";
    ctx.fillRect(180, y + 4, (w - 240) * (bar.value / max), rowH - 8);
    ctx.fillStyle = "#1d2330";
    ctx.fillText(bar.label.slice(0, 30), 0, y + rowH / 2 + 4);
    ctx.fillText(String(bar.value), w - 55, y + rowH / 2 + 4);
  });
}

function render(samples) {
  const now = Date.now();
  const requests = sum(samples, "switchboard_requests_total");
  const errors = sum(samples, "switchboard_requests_total", (l) => Number(l.status) >= 500);
  setText("total-requests", fmtInt(requests));
  setText("total-errors", fmtInt(errors));
  setText("total-rejections", fmtInt(sum(samples, "switchboard_rejections_total")));
  setText("active-streams", fmtInt(sum(samples, "switchboard_active_streams")));
  setText("tokens-in", fmtInt(sum(samples, "krakend_llm_tokens_in_total")));
  setText("tokens-out", fmtInt(sum(samples, "krakend_llm_tokens_out_total")));
  setText("total-cost", fmtCost(sum(samples, "switchboard_llm_cost_total")));
  setText("generation", fmtInt(sum(samples, "switchboard_config_generation")));
  const p = [0.5, 0.95, 0.99].map((q) => quantile(samples, "switchboard_request_duration_seconds", q));
  setText("p50", fmtMs(p[0])); setText("p95", fmtMs(p[1])); setText("p99", fmtMs(p[2]));

  const rate = state.last ? (requests - state.last.requests) / ((now - state.last.at) / 1000) : 0;
  state.last = { requests, at: now };
  state.history.push({ rate: Math.max(0, rate), p: p.map((s) => s * 1000) });
  if (state.history.length > HISTORY) state.history.shift();
  lineChart(document.getElementById("traffic-chart"), [state.history.map((h) => h.rate)], ["#2f6fed"], 1);
  lineChart(document.getElementById("latency-chart"), [0, 1, 2].map((i) => state.history.map((h) => h.p[i])),
    ["#2f6fed", "#f08c00", "#d9480f"], 0.001);

  const byEndpoint = groupBy(samples, "switchboard_requests_total", ["endpoint"]);
  fillTable("endpoints-table", [...byEndpoint.entries()].sort().map(([endpoint, n]) => [
    { text: endpoint, key: "endpoint" },
    { text: fmtInt(n), num: true, key: "requests" },
    { text: fmtInt(sum(samples, "switchboard_requests_total", (l) => l.endpoint === endpoint && Number(l.status) >= 500)), num: true, key: "5xx" },
    { text: fmtInt(sum(samples, "switchboard_requests_total", (l) => l.endpoint === endpoint && Number(l.status) >= 400 && Number(l.status) < 500)), num: true, key: "4xx" },
  ]));

  const keys = ["provider", "model", "tier"];
  const tin = groupBy(samples, "krakend_llm_tokens_in_total", keys);
  const tout = groupBy(samples, "krakend_llm_tokens_out_total", keys);
  const tcached = groupBy(samples, "switchboard_llm_tokens_cached_total", keys);
  const cost = groupBy(samples, "switchboard_llm_cost_total", keys);
  const rows = [...tin.keys()].sort();
  fillTable("tokens-table", rows.map((k) => {
    const [provider, model, tier] = k.split("\u0000");
    return [
      { text: provider, key: "provider" }, { text: model, key: "model" }, { text: tier, key: "tier" },
      { text: fmtInt(tin.get(k)), num: true, key: "in" },
      { text: fmtInt(tout.get(k) || 0), num: true, key: "out" },
      { text: fmtInt(tcached.get(k) || 0), num: true, key: "cached" },
      { text: cost.has(k) ? fmtCost(cost.get(k)) : "–", num: true, key: "cost" },
    ];
  }));
  barChart(document.getElementById("tokens-chart"), rows.map((k) => ({
    label: k.split("\u0000").join(" / "),
    value: (tin.get(k) || 0) + (tout.get(k) || 0),
  })));

  const quota = groupBy(samples, "switchboard_quota_remaining", ["name"]);
  fillTable("quota-table", [...quota.entries()].sort().map(([name, v]) => [
    { text: name, key: "quota" }, { text: String(v), num: true, key: "remaining" },
  ]));
  const upstream = groupBy(samples, "switchboard_upstream_errors_total", ["provider", "kind"]);
  fillTable("upstream-table", [...upstream.entries()].sort().map(([k, v]) => {
    const [provider, kind] = k.split("\u0000");
    return [{ text: provider }, { text: kind }, { text: fmtInt(v), num: true }];
  }));
}

async function poll() {
  try {
    const response = await fetch("/__dashboard/metrics", {
      headers: { Authorization: "Bearer " + state.token },
      cache: "no-store",
    });
    if (response.status === 401) {
      sessionStorage.removeItem("switchboard-token");
      showLogin("the token was refused");
      return;
    }
    render(parseMetrics(await response.text()));
    const status = document.getElementById("status");
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "muted";
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = "cannot reach the gateway: " + err;
    status.className = "error";
  }
  setTimeout(poll, POLL_MS);
}

function showLogin(message) {
  document.getElementById("board").hidden = true;
  const form = document.getElementById("login");
  form.hidden = false;
  setText("status", message);
  form.onsubmit = (event) => {
    event.preventDefault();
    state.token = document.getElementById("token").value;
    sessionStorage.setItem("switchboard-token", state.token);
    form.hidden = true;
    document.getElementById("board").hidden = false;
    poll();
  };
}

state.token = tokenFromPage();
if (state.token) poll(); else showLogin("enter the dashboard token");
