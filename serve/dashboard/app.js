// The dashboard: jobs live from the event stream, job details with the operator timeline,
// pipelines, payloads, exports (with resend) and the volume viewer. Hash routes:
// #/jobs, #/jobs/<id>, #/pipelines, #/payloads, #/exports, #/viewer/<job>[/<volume>].

import { events, getBlob, getJson, postJson, signIn } from "./api.js";
import { el } from "./dom.js";
import { showViewer } from "./viewer.js";

const main = document.getElementById("main");
const jobs = new Map(); // job id -> job record, kept current by the event stream
let stream = null;
let route = [];

const badge = (text) => el("span", { class: `badge ${text}` }, text);
const short = (id) => (id ? id.slice(0, 8) : "");
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const seconds = (s) => (s === null || s === undefined ? "" : `${s.toFixed(1)} s`);

function table(headings, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows),
  );
}

function showError(error) {
  main.replaceChildren(el("p", { class: "error" }, String(error.message || error)));
}

// -- jobs ------------------------------------------------------------------------------

function jobState(job) {
  return job.state === "Stopped" ? badge(job.status) : badge(job.state);
}

function jobRow(job) {
  return el(
    "tr",
    { class: "clickable", "data-job": job.job_id, onclick: () => (location.hash = `#/jobs/${job.job_id}`) },
    el("td", { class: "mono" }, short(job.job_id)),
    el("td", {}, job.name),
    el("td", {}, job.pipeline),
    el("td", {}, job.priority),
    el("td", { class: "state" }, jobState(job)),
    el("td", {}, when(job.created_at)),
    el("td", {}, seconds(job.duration)),
  );
}

function renderJobs() {
  const sorted = [...jobs.values()].sort((a, b) => b.created_at - a.created_at);
  main.replaceChildren(
    el("h1", {}, "Jobs"),
    sorted.length
      ? table(["Job", "Name", "Pipeline", "Priority", "State", "Created", "Duration"], sorted.map(jobRow))
      : el("p", { class: "muted" }, "No jobs yet."),
  );
}

async function loadJobs() {
  const listed = await getJson("/api/v1/jobs");
  jobs.clear();
  for (const job of listed) jobs.set(job.job_id, job);
}

// -- job detail ------------------------------------------------------------------------

function operatorTimeline(job, operators) {
  const start = Math.min(...operators.filter((o) => o.started_at).map((o) => o.started_at), job.started_at || Infinity);
  const end = Math.max(...operators.map((o) => o.ended_at || Date.now() / 1000), start + 1);
  return operators.map((op) => {
    const bar = el("div", { class: "timeline" });
    if (op.started_at) {
      const left = ((op.started_at - start) / (end - start)) * 100;
      const width = (((op.ended_at || Date.now() / 1000) - op.started_at) / (end - start)) * 100;
      bar.append(el("span", { style: `left:${left}%;width:${Math.max(width, 0.5)}%` }));
    }
    const log = el("button", { onclick: () => showLog(job.job_id, op.name) }, "log");
    return el(
      "tr",
      { "data-operator": op.name },
      el("td", {}, op.name),
      el("td", {}, op.state === "Stopped" ? badge(op.status) : badge(op.state)),
      el("td", { class: "mono" }, op.node_ip || ""),
      el("td", {}, (op.gpu_ids || []).join(", ")),
      el("td", {}, seconds(op.duration)),
      el("td", {}, op.attempts),
      el("td", {}, bar),
      el("td", {}, op.message || ""),
      el("td", {}, log),
    );
  });
}

async function showLog(jobId, operator) {
  const logs = await getJson(`/api/v1/jobs/${jobId}/logs?operator=${encodeURIComponent(operator)}`);
  const text = Object.entries(logs).map(([name, body]) => `== ${name} ==\n${body}`).join("\n");
  document.getElementById("log").replaceChildren(el("h2", {}, `Log of ${operator}`), el("pre", { class: "log" }, text || "(empty)"));
}

async function download(jobId, path) {
  const blob = await getBlob(`/api/v1/jobs/${jobId}/results/${path.split("/").map(encodeURIComponent).join("/")}`);
  const link = el("a", { href: URL.createObjectURL(blob), download: path.split("/").pop() });
  link.click();
  URL.revokeObjectURL(link.href);
}

function exportRows(exports, refresh) {
  return exports.map((e) =>
    el(
      "tr",
      { "data-export": e.export_id },
      el("td", { class: "mono" }, short(e.export_id)),
      el("td", { class: "mono" }, short(e.job_id)),
      el("td", {}, e.destination),
      el("td", {}, badge(e.state)),
      el("td", {}, `${e.sent}/${e.files.length}`),
      el("td", {}, e.attempts),
      el("td", {}, e.reason || ""),
      el(
        "td",
        {},
        e.state === "Failed"
          ? el("button", { onclick: async () => { await postJson(`/api/v1/exports/${e.export_id}/resend`); refresh(); } }, "Resend")
          : "",
      ),
    ),
  );
}

async function renderJob(jobId) {
  const job = await getJson(`/api/v1/jobs/${jobId}`);
  if (route[0] !== "jobs" || route[1] !== jobId) return;
  const results = job.results || [];
  main.replaceChildren(
    el("h1", {}, `Job ${job.name} `, jobState(job)),
    fields(job),
    el("p", {}, el("button", { class: "primary", onclick: () => (location.hash = `#/viewer/${job.job_id}`) }, "Open viewer")),
    el("h2", {}, "Operators"),
    table(["Operator", "State", "Node", "GPU", "Duration", "Attempts", "Timeline", "Message", ""], operatorTimeline(job, job.operators)),
    el("div", { id: "log" }),
    el("h2", {}, "Results"),
    results.length
      ? table(["File", "Size", ""], results.map((r) => el("tr", {}, el("td", { class: "mono" }, r.path), el("td", {}, r.size), el("td", {}, el("button", { onclick: () => download(job.job_id, r.path) }, "download")))))
      : el("p", { class: "muted" }, "No results yet."),
    el("h2", {}, "Exports"),
    job.exports.length
      ? table(["Export", "Job", "Destination", "State", "Sent", "Attempts", "Reason", ""], exportRows(job.exports, () => renderJob(jobId)))
      : el("p", { class: "muted" }, "No exports."),
  );
}

function fields(job) {
  const pairs = [
    ["Job id", el("span", { class: "mono" }, job.job_id)],
    ["Pipeline", job.pipeline],
    ["Payload", el("span", { class: "mono" }, job.payload_id)],
    ["Priority", job.priority],
    ["Created", when(job.created_at)],
    ["Duration", seconds(job.duration)],
    ["Reason", job.reason || ""],
    ["Run", job.run],
    ["Evictions", (job.evictions || []).map((e) => `${when(e.at)}: run ${e.run} by ${short(e.by)} (${e.priority})${e.requeued ? ", requeued" : ""}`).join("; ") || "none"],
  ];
  return el("dl", { class: "fields" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

// -- lists -----------------------------------------------------------------------------

async function renderPipelines() {
  const pipelines = await getJson("/api/v1/pipelines");
  main.replaceChildren(
    el("h1", {}, "Pipelines"),
    table(["Name", "Version", "Description", "Updated"], pipelines.map((p) => el("tr", {}, el("td", {}, p.name), el("td", {}, p.version), el("td", {}, p.description || ""), el("td", {}, when(p.updated_at))))),
  );
}

async function renderPayloads() {
  const payloads = await getJson("/api/v1/payloads");
  main.replaceChildren(
    el("h1", {}, "Payloads"),
    table(["Payload", "Name", "Files", "Bytes", "Source", "Created"], payloads.map((p) => el("tr", {}, el("td", { class: "mono" }, short(p.payload_id)), el("td", {}, p.name || ""), el("td", {}, p.files), el("td", {}, p.bytes), el("td", {}, p.source || ""), el("td", {}, when(p.created_at))))),
  );
}

async function renderExports() {
  const exports = await getJson("/api/v1/exports");
  if (route[0] !== "exports") return;
  main.replaceChildren(
    el("h1", {}, "Exports"),
    exports.length
      ? table(["Export", "Job", "Destination", "State", "Sent", "Attempts", "Reason", ""], exportRows(exports, renderExports))
      : el("p", { class: "muted" }, "No exports yet."),
  );
}

// -- live updates ----------------------------------------------------------------------

function onEvent(message) {
  const event = JSON.parse(message.data);
  if (event.kind === "job") {
    const known = jobs.get(event.job_id);
    if (known) {
      Object.assign(known, { state: event.state, status: event.status });
      if (event.state === "Stopped") getJson(`/api/v1/jobs/${event.job_id}`).then((job) => { jobs.set(job.job_id, job); refreshRow(job.job_id); });
    } else {
      getJson(`/api/v1/jobs/${event.job_id}`).then((job) => { jobs.set(job.job_id, job); if (route[0] === "jobs" && !route[1]) renderJobs(); });
    }
    refreshRow(event.job_id);
  }
  if (route[0] === "jobs" && route[1] === event.job_id) renderJob(event.job_id);
  if (route[0] === "exports" && event.kind === "export") renderExports();
}

function refreshRow(jobId) {
  if (route[0] !== "jobs" || route[1]) return;
  const row = main.querySelector(`tr[data-job="${jobId}"]`);
  const job = jobs.get(jobId);
  if (row && job) row.replaceWith(jobRow(job));
  else if (job) renderJobs();
}

function connect() {
  stream = events();
  const live = document.getElementById("live");
  stream.addEventListener("ready", async () => {
    live.textContent = "live";
    live.classList.add("on");
    await loadJobs();
    if (route[0] === "jobs" && !route[1]) renderJobs();
  });
  stream.addEventListener("reset", async () => {
    await loadJobs();
    if (route[0] === "jobs" && !route[1]) renderJobs();
  });
  for (const kind of ["job", "operator", "export"]) stream.addEventListener(kind, onEvent);
  stream.addEventListener("error", () => {
    live.textContent = "reconnecting";
    live.classList.remove("on");
  });
}

// -- routing ---------------------------------------------------------------------------

async function navigate() {
  route = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  if (!route.length) route = ["jobs"];
  for (const link of document.querySelectorAll("nav a[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === route[0]);
  }
  try {
    if (route[0] === "jobs" && route[1]) await renderJob(route[1]);
    else if (route[0] === "jobs") renderJobs();
    else if (route[0] === "pipelines") await renderPipelines();
    else if (route[0] === "payloads") await renderPayloads();
    else if (route[0] === "exports") await renderExports();
    else if (route[0] === "viewer") await showViewer(main, route[1], route[2]);
    else main.replaceChildren(el("p", {}, "Not found."));
  } catch (error) {
    showError(error);
  }
}

async function start() {
  const health = await fetch("/api/v1/health").then((r) => r.json()).catch(() => ({}));
  const ray = document.getElementById("ray-dashboard");
  ray.href = health.ray_dashboard || `${location.protocol}//${location.hostname}:8265`;
  await signIn(health.token_required);
  window.addEventListener("hashchange", navigate);
  await navigate();
  connect();
}

start().catch(showError);
