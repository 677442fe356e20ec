// The class dashboard: polls the read-only JSON API and redraws in place.
// Plain DOM and hand-drawn SVG, no libraries, no network beyond this coordinator.
"use strict";

const API = "/api/v1";
const POLL_MS = 3000;
const MAX_POINTS = 400; // chart points; longer histories are averaged into buckets
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const view = {
  runId: null,
  history: [],
  samples: [],
  latestSample: undefined,
  followLatest: true,
  playing: null,
  hashApplied: false,
  perIteration: 1,
};

// Errors are shown on the page (and collected for the browser test), never swallowed.
function reportError(message) {
  const box = $("page-errors");
  const item = document.createElement("p");
  item.textContent = message;
  box.appendChild(item);
  while (box.childElementCount > 20) box.firstElementChild.remove();
}
window.addEventListener("error", (e) => reportError(String(e.message)));
window.addEventListener("unhandledrejection", (e) => reportError(String(e.reason)));

async function getJSON(path) {
  const response = await fetch(API + path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// --- formatting ------------------------------------------------------------------------

const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
function fmtInt(n) { return integer.format(n); }
function fmtRate(x) {
  if (x >= 100) return integer.format(x);
  return x.toFixed(x >= 10 ? 1 : 2);
}
function fmtDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(r).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
}
function fmtAgo(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return `${Math.max(0, Math.round(seconds))} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}
function fmtBytes(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)} kB`;
  return `${Math.round(n)} B`;
}
function setText(id, text) { $(id).textContent = text; }

// --- status ----------------------------------------------------------------------------

const STATE_LABELS = {
  running: "running", paused: "paused", finished: "finished", stopped: "stopped",
  no_run: "no run",
};
const MODE_LABELS = {
  synchronous: "mode: synchronous (D step, then G against the new D)",
  local_steps: "mode: local steps (DiLoCo)",
  async_local_steps: "mode: asynchronous local steps (no barrier)",
};

// A synchronous iteration publishes two versions (D phase, G phase); the API counts versions.
const iterationsOf = (s) => Math.floor(s.iteration / (s.versions_per_iteration || 1));

function banner(status) {
  const box = $("banner");
  const lines = {
    no_run: ["No training run is active.",
      "The instructor starts one with gan-coordinator run start. " +
      "Workers that are already running wait and join in automatically."],
    paused: ["Training is paused.",
      "The instructor paused the run; workers wait, nothing is lost."],
    finished: ["Training finished.",
      `The class trained ${fmtInt(iterationsOf(status))} iterations. ` +
      "Drag the slider under the samples to replay how the faces appeared."],
    stopped: ["This run was stopped.",
      `The instructor stopped it at iteration ${fmtInt(iterationsOf(status))}.`],
  }[status.state];
  let content = lines;
  const problem = status.run && status.run.problem;
  if (problem) {
    content = ["Training is stuck.",
      `The coordinator cannot advance the run: ${problem}. ` +
      "The instructor finds the details in the coordinator's log."];
  }
  if (!content && status.state === "running" && status.workers.active === 0) {
    content = ["Waiting for workers.", "The run is ready: start a worker to begin training."];
  }
  box.hidden = !content;
  box.dataset.state = problem ? "stuck" : status.state;
  if (content) {
    box.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = content[0];
    box.append(strong, content[1]);
  }
}

function renderStatus(s) {
  const badge = $("state");
  badge.dataset.state = s.state;
  badge.className = "badge";
  badge.textContent = STATE_LABELS[s.state] || s.state;
  setText("run-label", s.run ? `run ${s.run.run_id}` : "");
  setText("mode", s.result_kind ? MODE_LABELS[s.result_kind] || `mode: ${s.result_kind}` : "");
  setText("updated", `updated ${new Date().toLocaleTimeString("en-GB")}`);
  banner(s);

  const hasRun = s.state !== "no_run";
  view.perIteration = s.versions_per_iteration || 1;
  setText("t-iteration", hasRun ? fmtInt(iterationsOf(s)) : "–");
  setText("t-iteration-sub", s.max_iterations ? `of ${fmtInt(s.max_iterations)}`
    : (hasRun ? `${s.results_waiting} result${s.results_waiting === 1 ? "" : "s"} waiting` : ""));
  setText("t-epoch", hasRun ? `${s.epoch + 1}${s.max_epochs ? " / " + s.max_epochs : ""}` : "–");
  $("t-epoch-bar").style.width = `${(100 * s.epoch_progress).toFixed(1)}%`;
  setText("t-epoch-sub", hasRun ? `${Math.round(100 * s.epoch_progress)}% of ` +
    `${fmtInt(s.images_per_epoch)} images` : "");
  setText("t-images", hasRun ? fmtInt(s.images_processed) : "–");
  setText("t-images-sub", hasRun ? `${s.units.done} of ${s.units.pending + s.units.leased +
    s.units.done} units this epoch` : "");
  setText("t-workers", fmtInt(s.workers.total));
  setText("t-active", s.workers.active);
  setText("t-idle", s.workers.idle);
  setText("t-offline", s.workers.offline);
  setText("t-rate", hasRun ? fmtRate(s.throughput.images_per_second) : "–");
  const win = s.throughput.window_seconds;
  setText("t-rate-sub", hasRun ? `over the last ${win < 90 ? Math.round(win) + " s"
    : Math.round(win / 60) + " min"}` : "");
  setText("t-gflops", hasRun ? fmtRate(s.throughput.gflops) : "–");
  // Mode: synchronous phases, or H local steps per unit and the outer steps so far.
  const local = s.result_kind === "local_steps" || s.result_kind === "async_local_steps";
  setText("t-mode", !hasRun ? "–" : local ? `H = ${s.inner_steps}` : "sync");
  // Asynchronous: how many versions old the last fold's oldest result was.
  const last = view.history.length ? view.history[view.history.length - 1] : null;
  const stale = s.result_kind === "async_local_steps" && last
    ? ` · last fold ${last.staleness} version${last.staleness === 1 ? "" : "s"} stale` : "";
  setText("t-mode-sub", !hasRun ? "" : (local
    ? `local steps · ${fmtInt(s.outer_steps)} outer step${s.outer_steps === 1 ? "" : "s"}`
    : "D phase, then G phase") + ` · ${s.result_dtype}${stale}`);
  const perImage = s.result_bytes_per_image;
  setText("t-bytes", hasRun && perImage !== null ? fmtBytes(perImage) : "–");
  setText("t-bytes-sub", hasRun ? (perImage !== null ? "received per trained image"
    : "after the first result") : "");
  setText("t-elapsed", hasRun ? fmtDuration(s.elapsed_seconds) : "–");
  setText("t-elapsed-sub", s.started_at ? `since ${new Date(s.started_at).toLocaleTimeString("en-GB")}` : "");
}

// --- leaderboard and cluster -----------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function renderBoard(rows) {
  const body = $("leaderboard").querySelector("tbody");
  body.replaceChildren();
  for (const w of rows) {
    const tr = document.createElement("tr");
    tr.dataset.workerId = w.worker_id;
    cell(tr, w.rank, w.rank === 1 ? "rank top" : "rank");
    cell(tr, w.name, "name").title = w.name;
    cell(tr, w.hardware, "hw hide-s").title = w.hardware;
    cell(tr, fmtInt(w.total_work_units), "num");
    const speed = w.images_per_second == null ? "" : `${fmtInt(w.images_per_second)} img/s`;
    cell(tr, w.inner_steps == null ? "–" : fmtInt(w.inner_steps), "num hide-s").title = speed;
    cell(tr, w.flagged ? "withheld" : fmtInt(w.total_images), "num").title = w.flag_reason || "";
    cell(tr, fmtAgo(w.seconds_since_seen), "hide-s");
    cell(tr, w.status, `status ${w.status}`);
    body.appendChild(tr);
  }
  $("board-empty").hidden = rows.length > 0;
  const active = rows.filter((w) => w.status === "active").length;
  setText("board-label", rows.length
    ? `${rows.length} worker${rows.length === 1 ? "" : "s"}, ${active} active` : "");
}

function renderCluster(c) {
  setText("c-cores", fmtInt(c.cpu_cores));
  setText("c-ram", fmtInt(c.ram_gb));
  setText("c-gpus", fmtInt(c.gpus));
  setText("c-vram", fmtInt(c.gpu_vram_gb));
  const list = $("c-devices");
  list.replaceChildren();
  for (const d of c.devices) {
    const li = document.createElement("li");
    li.textContent = `${d.workers} × ${d.device}`;
    list.appendChild(li);
  }
}

// --- charts ----------------------------------------------------------------------------

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function bucketed(points) {
  if (points.length <= MAX_POINTS) return points;
  const size = points.length / MAX_POINTS, out = [];
  for (let b = 0; b < MAX_POINTS; b++) {
    const chunk = points.slice(Math.floor(b * size), Math.floor((b + 1) * size));
    const x = chunk.reduce((a, p) => a + p[0], 0) / chunk.length;
    const y = chunk.reduce((a, p) => a + p[1], 0) / chunk.length;
    out.push([x, y]);
  }
  return out;
}

function niceStep(span, count) {
  const raw = span / count, mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

function fmtTick(v, step) {
  const digits = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
  return v.toFixed(digits);
}

// series: [{name, color, points: [[x, y], ...]}]; opts: {yMin, yMax, empty}
function lineChart(el, series, opts) {
  // One SVG unit = one CSS pixel at any width, so labels stay readable on a phone.
  const H = Number(el.dataset.height), W = Math.max(280, Math.round(el.clientWidth || 640));
  const left = 46, right = 12, top = 26, bottom = 22;
  el.setAttribute("viewBox", `0 0 ${W} ${H}`);
  el.replaceChildren();
  const all = series.flatMap((s) => s.points);
  el.dataset.points = String(all.length);
  if (all.length === 0) {
    el.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "none" },
      opts.empty || "no data yet"));
    return;
  }
  let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  let y0 = opts.yMin ?? Math.min(...all.map((p) => p[1]));
  let y1 = opts.yMax ?? Math.max(...all.map((p) => p[1]));
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const yStep = niceStep(y1 - y0, 4);
  if (opts.yMin === undefined) y0 = Math.floor(y0 / yStep) * yStep;
  if (opts.yMax === undefined) y1 = Math.ceil(y1 / yStep) * yStep;
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * (W - left - right);
  const sy = (y) => top + (1 - (y - y0) / (y1 - y0)) * (H - top - bottom);

  for (let y = y0; y <= y1 + yStep / 2; y += yStep) {
    el.appendChild(svg("line", { x1: left, x2: W - right, y1: sy(y), y2: sy(y), class: "grid" }));
    el.appendChild(svg("text", { x: left - 6, y: sy(y) + 4, "text-anchor": "end",
      class: "axis-label" }, fmtTick(y, yStep)));
  }
  const xStep = Math.max(1, niceStep(x1 - x0, 5));
  for (let x = Math.ceil(x0 / xStep) * xStep; x <= x1; x += xStep) {
    el.appendChild(svg("text", { x: sx(x), y: H - 4, "text-anchor": "middle",
      class: "axis-label" }, fmtInt(x)));
  }
  let legendX = left;
  for (const s of series) {
    const pts = bucketed(s.points);
    if (pts.length) {
      const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
      el.appendChild(svg("path", { d: d.join(""), stroke: s.color, class: "series",
        "data-series": s.name, "data-points": String(pts.length) }));
      if (pts.length === 1) {
        el.appendChild(svg("circle", { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 4,
          fill: s.color }));
      }
    }
    el.appendChild(svg("rect", { x: legendX, y: 7, width: 14, height: 4, fill: s.color }));
    el.appendChild(svg("text", { x: legendX + 19, y: 14, class: "legend" }, s.name));
    legendX += 26 + 8.2 * s.name.length;
  }
}

const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function renderCharts() {
  const h = view.history;
  // x: training iterations (a synchronous phase is half of one); a phase has only its losses.
  const per = view.perIteration || 1;
  const at = (key) => h.filter((e) => e[key] !== null).map((e) => [(e.iteration + 1) / per, e[key]]);
  const empty = view.runId === null ? "no run yet" : "waiting for the first step";
  lineChart($("loss-chart"), [
    { name: "G loss", color: cssVar("--g"), points: at("g_loss") },
    { name: "D loss", color: cssVar("--d"), points: at("d_loss") },
  ], { yMin: 0, empty });
  lineChart($("acc-chart"), [
    { name: "D accuracy on real", color: cssVar("--real"), points: at("d_real_accuracy") },
    { name: "D accuracy on fake", color: cssVar("--fake"), points: at("d_fake_accuracy") },
  ], { yMin: 0, yMax: 1, empty });
  const rates = [];
  for (let i = 1; i < h.length; i++) {
    const dt = (Date.parse(h[i].created_at) - Date.parse(h[i - 1].created_at)) / 1000;
    if (dt > 0) rates.push([(h[i].iteration + 1) / per, h[i].num_images / dt]);
  }
  lineChart($("rate-chart"), [{ name: "images / s", color: cssVar("--real"), points: rates }],
    { yMin: 0, empty: h.length ? "after the second step" : empty });
  setText("curve-label", h.length ? `${fmtInt(h.length)} step${h.length === 1 ? "" : "s"}` : "");
}

// --- samples and replay ----------------------------------------------------------------

function showSample(index) {
  const iteration = view.samples[index];
  if (iteration === undefined) return;
  const img = $("sample");
  const src = `${API}/samples/${iteration}.png?run_id=${view.runId}`;
  if (img.getAttribute("src") !== src) {
    img.dataset.loaded = "false";
    img.dataset.iteration = String(iteration);
    img.src = src;
  }
  $("slider").value = String(index);
  setText("slider-label", `iteration ${fmtInt(iteration)}`);
  setText("sample-label", index === view.samples.length - 1 ? "latest" : "replay");
}

function renderSamples() {
  const n = view.samples.length;
  const slider = $("slider");
  slider.max = String(Math.max(0, n - 1));
  slider.disabled = n < 2;
  $("play").disabled = n < 2;
  $("sample").hidden = n === 0;
  $("sample-empty").hidden = n > 0;
  if (n === 0) { setText("slider-label", ""); setText("sample-label", ""); return; }
  if (!view.hashApplied) {
    // A link like /#iteration=120 opens the replay at that grid (for slides and chats).
    view.hashApplied = true;
    const wanted = /iteration=(\d+)/.exec(window.location.hash);
    const index = wanted ? view.samples.indexOf(Number(wanted[1])) : -1;
    if (index >= 0 && index < n - 1) {
      view.followLatest = false;
      showSample(index);
      return;
    }
  }
  if (view.followLatest && view.playing === null) showSample(n - 1);
}

function stopReplay() {
  if (view.playing !== null) clearInterval(view.playing);
  view.playing = null;
  $("play").textContent = "▶ replay";
}

function startReplay() {
  if (view.playing !== null) { stopReplay(); return; }
  let index = 0;
  $("play").textContent = "■ stop";
  const frameMs = Math.max(60, Math.min(400, 8000 / view.samples.length));
  view.playing = setInterval(() => {
    showSample(index);
    index += 1;
    if (index >= view.samples.length) { stopReplay(); view.followLatest = true; }
  }, frameMs);
}

function setupReplay() {
  $("sample").addEventListener("load", (e) => {
    e.target.dataset.loaded = e.target.naturalWidth > 0 ? "true" : "false";
  });
  $("sample").addEventListener("error", (e) => {
    reportError(`sample image did not load: ${e.target.getAttribute("src")}`);
  });
  $("slider").addEventListener("input", (e) => {
    stopReplay();
    const index = Number(e.target.value);
    view.followLatest = index === view.samples.length - 1;
    showSample(index);
  });
  $("play").addEventListener("click", startReplay);
}

// --- polling ---------------------------------------------------------------------------

async function refreshRun(status) {
  const runId = status.run ? status.run.run_id : null;
  if (runId !== view.runId) {
    view.runId = runId;
    view.history = [];
    view.samples = [];
    view.latestSample = undefined;
    view.followLatest = true;
    stopReplay();
  }
  if (runId === null) return;
  const since = view.history.length ? view.history[view.history.length - 1].iteration + 1 : 0;
  if (since < status.iteration) {
    const fresh = await getJSON(`/history?run_id=${runId}&since=${since}`);
    view.history.push(...fresh);
  }
  if (status.latest_sample_iteration !== view.latestSample) {
    view.samples = await getJSON(`/samples?run_id=${runId}`);
    view.latestSample = status.latest_sample_iteration;
  }
}

async function poll() {
  try {
    const [status, board, cluster] = await Promise.all([
      getJSON("/status"), getJSON("/leaderboard"), getJSON("/cluster"),
    ]);
    renderStatus(status);
    renderBoard(board);
    renderCluster(cluster);
    await refreshRun(status);
    renderCharts();
    renderSamples();
    document.body.dataset.ready = "true";
  } catch (err) {
    // The coordinator restarting or the Wi-Fi dropping: say so, keep the last picture.
    const badge = $("state");
    badge.dataset.state = "offline";
    badge.textContent = "reconnecting…";
    setText("updated", String(err.message || err));
    reportError(String(err.message || err));
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

setupReplay();
poll();
