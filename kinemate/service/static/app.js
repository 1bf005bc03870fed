// kinemate web page: plain JS, no build step. Talks to the JSON API with the key in a header;
// media (pose preview, result) are fetched with the key and shown through blob URLs, so the
// key never appears in a URL.
"use strict";
const $ = (id) => document.getElementById(id);
const API = "/api/v1";
let currentJob = null;
let pollTimer = null;
const blobUrls = {};

function key() { return $("api-key").value.trim(); }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + key() }, options.headers || {});
  const res = await fetch(API + path, Object.assign({}, options, { headers }));
  if (!res.ok) {
    let detail = res.status + " " + res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    const err = new Error(detail);
    err.status = res.status;
    throw err;
  }
  return res;
}

function showError(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

function setBlob(name, element, blob, attr = "src") {
  if (blobUrls[name]) URL.revokeObjectURL(blobUrls[name]);
  blobUrls[name] = URL.createObjectURL(blob);
  element[attr] = blobUrls[name];
  return blobUrls[name];
}

// -- key ---------------------------------------------------------------------------------
const saved = localStorage.getItem("kinemate.key");
if (saved) { $("api-key").value = saved; $("remember").checked = true; }
function storeKey() {
  if ($("remember").checked && key()) localStorage.setItem("kinemate.key", key());
  else localStorage.removeItem("kinemate.key");
}
$("remember").addEventListener("change", storeKey);
$("api-key").addEventListener("change", () => { storeKey(); refreshJobs(); });

// -- local previews of the chosen files --------------------------------------------------
$("reference").addEventListener("change", () => {
  const f = $("reference").files[0];
  const img = $("reference-preview");
  if (f) { setBlob("ref", img, f); img.hidden = false; } else { img.hidden = true; }
});
$("driving").addEventListener("change", () => {
  const f = $("driving").files[0];
  const vid = $("driving-preview");
  if (f && !f.name.toLowerCase().endsWith(".json")) {
    setBlob("drv", vid, f); vid.hidden = false; vid.play().catch(() => {});
  } else { vid.hidden = true; }
});

// -- submit ------------------------------------------------------------------------------
$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError($("error"), "");
  if (!key()) return showError($("error"), "Enter your API key first.");
  const ref = $("reference").files[0], drv = $("driving").files[0];
  if (!ref || !drv) return showError($("error"), "Choose a photo and a driving video.");
  const form = new FormData();
  form.append("reference", ref, ref.name);
  form.append("driving", drv, drv.name);
  for (const name of ["steps", "guidance", "seed", "control", "size", "fit"]) {
    const v = $(name).value.trim();
    if (v !== "") form.append(name, v);
  }
  form.append("watermark", $("watermark").checked ? "true" : "false");
  form.append("retarget", $("retarget").checked ? "true" : "false");
  $("submit").disabled = true;
  try {
    const res = await api("/jobs", { method: "POST", body: form });
    const job = await res.json();
    storeKey();
    openJob(job);
    refreshJobs();
  } catch (err) {
    showError($("error"), err.message);
  } finally {
    $("submit").disabled = false;
  }
});

// -- one job -----------------------------------------------------------------------------
function openJob(job) {
  currentJob = job.id;
  $("job-card").hidden = false;
  $("job-id").textContent = job.id.slice(0, 12);
  $("result").hidden = true;
  $("pose-preview").hidden = true;
  $("pose-caption").textContent = "pose preview…";
  $("download-grid").hidden = true;
  showError($("job-error"), "");
  loadPreview(job.id);
  render(job);
  if (pollTimer) clearTimeout(pollTimer);
  poll(job.id);
}

async function loadPreview(id) {
  try {
    const res = await api(`/jobs/${id}/preview`);
    if (currentJob !== id) return;
    setBlob("preview", $("pose-preview"), await res.blob());
    $("pose-preview").hidden = false;
    const kind = res.headers.get("X-Kinemate-Control");
    $("pose-caption").textContent = kind === "pose"
      ? "pose of the first frame, fitted to your photo (what the model sees)"
      : "DensePose map of the first frame (what the model sees)";
  } catch (err) {
    $("pose-caption").textContent = "no preview: " + err.message;
  }
}

function render(job) {
  $("state").textContent = job.state;
  $("state").className = "state-" + job.state;
  const p = job.progress || {};
  const active = job.state === "queued" || job.state === "running";
  $("stage").textContent = active && p.stage ? `(${p.stage})` : "";
  const frac = job.state === "succeeded" ? 1 : (typeof p.fraction === "number" ? p.fraction : 0);
  $("progress").value = frac;
  const parts = [];
  if (p.total_steps) parts.push(`step ${p.step || 0} / ${p.total_steps}`);
  if (p.total_frames) parts.push(`frames ${p.frames || 0} / ${p.total_frames}`);
  parts.push(Math.round(frac * 100) + " %");
  if (job.attempts > 1) parts.push(`attempt ${job.attempts}`);
  $("progress-text").textContent = parts.join(" · ");
  $("cancel").disabled = !active;
  $("delete").disabled = active;
  if (job.error) showError($("job-error"), job.error);
}

async function poll(id) {
  if (currentJob !== id) return;
  let job;
  try {
    job = await (await api(`/jobs/${id}`)).json();
  } catch (err) {
    showError($("job-error"), err.message);
    return;
  }
  if (currentJob !== id) return;
  render(job);
  if (job.state === "queued" || job.state === "running") {
    pollTimer = setTimeout(() => poll(id), 500);
  } else {
    refreshJobs();
    if (job.state === "succeeded") showResult(job);
  }
}

async function showResult(job) {
  try {
    const blob = await (await api(`/jobs/${job.id}/result`)).blob();
    const video = $("result-video");
    const url = setBlob("result", video, blob);
    $("download").href = url;
    $("download").download = `kinemate-${job.id.slice(0, 8)}.mp4`;
    $("result").hidden = false;
    video.play().catch(() => {});
    if (job.links && job.links.grid) {
      const grid = await (await api(`/jobs/${job.id}/grid`)).blob();
      setBlob("grid", $("download-grid"), grid, "href");
      $("download-grid").download = `kinemate-${job.id.slice(0, 8)}-grid.mp4`;
      $("download-grid").hidden = false;
    }
  } catch (err) {
    showError($("job-error"), err.message);
  }
}

$("cancel").addEventListener("click", async () => {
  if (!currentJob) return;
  try { render(await (await api(`/jobs/${currentJob}/cancel`, { method: "POST" })).json()); }
  catch (err) { showError($("job-error"), err.message); }
});

$("delete").addEventListener("click", async () => {
  if (!currentJob) return;
  try {
    await api(`/jobs/${currentJob}`, { method: "DELETE" });
    currentJob = null;
    $("job-card").hidden = true;
    refreshJobs();
  } catch (err) { showError($("job-error"), err.message); }
});

// -- job list ----------------------------------------------------------------------------
async function refreshJobs() {
  const body = $("jobs").querySelector("tbody");
  if (!key()) { body.innerHTML = ""; return; }
  let jobs;
  try { jobs = (await (await api("/jobs?limit=20")).json()).jobs; }
  catch (err) { body.innerHTML = ""; return; }
  body.replaceChildren(...jobs.map((job) => {
    const tr = document.createElement("tr");
    tr.className = "clickable";
    const cells = [job.id.slice(0, 12), job.state,
      `${job.inputs.reference.name || "photo"} + ${job.inputs.driving.name || "driving"}`,
      new Date(job.created_at * 1000).toLocaleString()];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;  // names come from users: never innerHTML
      tr.appendChild(td);
    }
    tr.children[1].className = "state-" + job.state;
    tr.addEventListener("click", () => openJob(job));
    return tr;
  }));
}
$("refresh").addEventListener("click", refreshJobs);

// -- server health -----------------------------------------------------------------------
fetch(API + "/health").then((r) => r.json()).then((h) => {
  const w = h.worker || {};
  $("health").textContent = `server ${h.version}, worker ${w.state}` +
    (w.model ? ` (${w.model}, ${w.control_kind} control)` : "") + (w.error ? `: ${w.error}` : "");
}).catch(() => { $("health").textContent = "server unreachable"; });
refreshJobs();
