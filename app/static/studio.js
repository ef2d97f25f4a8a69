// Face studio page: pick a job, drop files, set options, run it against this server's API.
// Plain browser JavaScript, no dependencies, no build step. Slow jobs are sent with `Prefer: respond-async` and
// followed through the job's server-sent events (read with fetch, so that an API key header can be sent).
"use strict";

const KEY_STORE = "faceStudio.apiKey";
const TERMINAL = ["succeeded", "failed", "canceled"];
const DEFAULT = ["", "server default"];
const BACKEND = { name: "backend", label: "Backend", type: "select", choices: [DEFAULT, "auto", "builtin", "neural"],
  help: "builtin needs no download; neural needs its weights" };
const FORMAT = { name: "format", label: "Output format", type: "select", choices: [DEFAULT, "png", "jpeg", "webp"] };
const UPSCALE = { name: "upscale", label: "Upscale", type: "number", def: 1, min: 1, max: 4, step: 1,
  help: "output size factor" };
const FIDELITY = { name: "codeformer_fidelity", label: "CodeFormer fidelity", type: "number", def: 0.5, min: 0, max: 1,
  step: 0.05, help: "0 = quality, 1 = fidelity" };
const MODE = { name: "mode", label: "Mode", type: "select", def: "one_to_one",
  choices: [["one_to_one", "one to one (best faces)"], ["one_to_many", "one to many (every target face)"],
    ["sorted", "sorted (left to right)"], ["similarity", "similarity (most alike)"]] };
const QUALITY = { name: "quality", label: "Quality (CRF)", type: "number", min: 0, max: 51, step: 1,
  help: "H.264 CRF, lower is better; empty = server default" };

const JOBS = [
  { id: "swap", label: "Face swap", endpoint: "/faceswap", ready: "faceswap", async: "optional",
    help: "Put the face of the source picture onto the face(s) of the target picture.",
    files: [
      { name: "source_image", label: "Source face", hint: "the face to use (several files: their identity is averaged)",
        accept: "image/*", multiple: true, required: true },
      { name: "target_image", label: "Target picture", hint: "the picture whose faces are replaced", accept: "image/*",
        required: true, before: true },
    ],
    options: [MODE,
      { name: "direction", label: "Direction (sorted)", type: "select", def: "left_to_right",
        choices: [["left_to_right", "left to right"], ["right_to_left", "right to left"]] },
      { name: "face_refinement_steps", label: "Refinement passes", type: "number", def: 1, min: 1, max: 5, step: 1 },
      BACKEND, UPSCALE,
      { name: "use_codeformer", label: "Restore with CodeFormer", type: "checkbox" },
      FIDELITY,
      { name: "background_enhance", label: "Enhance background", type: "checkbox" },
      { name: "face_upsample", label: "Upsample faces", type: "checkbox" },
      FORMAT] },
  { id: "video", label: "Video swap", endpoint: "/faceswap/video", ready: "faceswap", async: "always",
    help: "Swap a face into every frame of a video (MP4, MOV, MKV, WebM, AVI). Runs as a job.",
    files: [
      { name: "source_image", label: "Source face", hint: "the face to use", accept: "image/*", multiple: true,
        required: true },
      { name: "target_video", label: "Target video", hint: "the video whose faces are replaced",
        accept: "video/*,.mkv,.avi,.mov", required: true },
    ],
    options: [MODE, BACKEND,
      { name: "start", label: "Start (s)", type: "number", min: 0, step: 0.1, help: "trim: first second kept" },
      { name: "end", label: "End (s)", type: "number", min: 0, step: 0.1, help: "trim: where the output stops" },
      { name: "smoothing", label: "Smoothing", type: "number", def: 0.5, min: 0, max: 1, step: 0.05,
        help: "key-point smoothing in time" },
      { name: "mouth_mask", label: "Keep the target's mouth", type: "checkbox" },
      { name: "audio", label: "Audio", type: "select", def: "keep", choices: [["keep", "keep"], ["drop", "drop"]] },
      QUALITY] },
  { id: "enhance", label: "Enhance", endpoint: "/enhance", ready: "enhance", async: "optional",
    help: "Restore the faces of a picture and optionally upscale it.",
    files: [{ name: "image", label: "Picture", hint: "the picture to restore", accept: "image/*", required: true,
      before: true }],
    options: [
      { name: "enhancer", label: "Restorer", type: "select", def: "auto",
        choices: [["auto", "auto"], ["gfpgan", "GFPGAN"], ["codeformer", "CodeFormer"], ["builtin", "builtin"]] },
      UPSCALE,
      { name: "blend", label: "Blend (%)", type: "number", def: 80, min: 0, max: 100, step: 5,
        help: "restored face over the original" },
      FIDELITY,
      { name: "background_enhance", label: "Enhance background", type: "checkbox" },
      { name: "face_upsample", label: "Upsample faces", type: "checkbox" },
      { name: "occlusion_mask", label: "Keep occluders (hands, hair)", type: "checkbox" },
      BACKEND, FORMAT] },
  { id: "lipsync", label: "Lip sync", endpoint: "/lipsync", ready: "lipsync", async: "always",
    help: "Make the face of a video (or a still portrait) speak an audio track. Runs as a job.",
    files: [
      { name: "video", imageName: "image", label: "Face video or portrait", hint: "a video, or a still picture",
        accept: "video/*,image/*,.mkv,.avi,.mov", required: true },
      { name: "audio", label: "Audio", hint: "WAV, MP3, AAC/M4A, Ogg, FLAC or a video's track",
        accept: "audio/*,video/*,.m4a,.opus,.flac", required: true },
    ],
    options: [
      { name: "duration", label: "Length follows", type: "select", def: "audio",
        choices: [["audio", "the audio"], ["video", "the video"]] },
      { name: "loop", label: "When audio is longer", type: "select", def: "pingpong",
        choices: [["pingpong", "ping-pong"], ["repeat", "repeat"], ["freeze", "freeze"]] },
      BACKEND,
      { name: "fps", label: "Frame rate (still image)", type: "number", min: 1, max: 60, step: 1,
        help: "empty = 25" },
      { name: "pads", label: "Pads (top, bottom, left, right)", type: "text", def: "0,10,0,0" },
      { name: "smoothing", label: "Smoothing", type: "number", def: 0.5, min: 0, max: 1, step: 0.05 },
      { name: "enhance", label: "Restore the mouth", type: "checkbox" },
      QUALITY] },
  { id: "genderswap", label: "Gender swap", endpoint: "/genderswap", ready: "genderswap", async: "always",
    help: "Repaint face and hair as the other gender (Stable Diffusion). Runs as a job.",
    files: [{ name: "image", label: "Portrait", hint: "a picture with a face", accept: "image/*", required: true,
      before: true }],
    options: [
      { name: "target_gender", label: "Target gender", type: "select", def: "auto",
        choices: [["auto", "auto (the other one)"], ["female", "female"], ["male", "male"]] },
      { name: "method", label: "Method", type: "select", def: "inpaint",
        choices: [["inpaint", "inpaint (face and hair)"], ["img2img", "img2img (whole picture)"]] },
      { name: "strength", label: "Strength", type: "number", def: 0.6, min: 0.05, max: 1, step: 0.05 },
      { name: "steps", label: "Steps", type: "number", def: 30, min: 1, max: 100, step: 1 },
      { name: "guidance", label: "Guidance", type: "number", def: 12, min: 0, max: 30, step: 0.5 },
      { name: "seed", label: "Seed", type: "number", def: -1, min: -1, step: 1, help: "-1 = random" },
      { name: "faces", label: "Faces", type: "select", def: "largest", choices: [["largest", "largest"], ["all", "all"]] },
      { name: "prompt_extra", label: "Extra prompt", type: "text" },
      FORMAT] },
  { id: "analyze", label: "Analyze", endpoint: "/analyze", ready: "analyze", async: "never",
    help: "Find the faces of a picture: boxes, key points and 68 landmarks, drawn over it.",
    files: [{ name: "image", label: "Picture", hint: "the picture to analyze", accept: "image/*", required: true }],
    options: [BACKEND] },
];

// Response headers worth showing next to a result.
const META_HEADERS = [
  ["X-Face-Backend", "backend"], ["X-Faces-Swapped", "faces swapped"], ["X-Faces-Enhanced", "faces enhanced"],
  ["X-Face-Enhancer", "restorer"], ["X-Upscaler", "upscaler"], ["X-Frames", "frames"],
  ["X-Faces-Swapped-Frames", "frames swapped"], ["X-Lipsync-Frames", "frames synced"], ["X-Audio", "audio"],
  ["X-Seed", "seed"], ["X-Target-Gender", "target"], ["X-Genderswap-Mask", "mask"],
];

const $ = (sel) => document.querySelector(sel);
const state = { job: JOBS[0], files: new Map(), urls: [], busy: false, cancelUrl: null, abort: null, ready: null,
  preferJob: false };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  return url;
}

function releaseUrls() {
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
}

function authHeaders() {
  const key = $("#api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function humanSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// ---- errors ---------------------------------------------------------------------------------------------------------

class ApiProblem extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function problemOf(resp) {
  let body = null;
  const text = await resp.text();
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  const err = body && body.error;
  if (err && typeof err === "object") return new ApiProblem(resp.status, err.code, err.message, err.field);
  return new ApiProblem(resp.status, `http_${resp.status}`, text.slice(0, 300) || resp.statusText, null);
}

function fieldLabel(field) {
  for (const f of state.job.files) if (f.name === field || f.imageName === field) return f.label;
  for (const o of state.job.options) if (o.name === field) return o.label;
  return null;
}

function showError(e) {
  const box = $("#error");
  const problem = e instanceof ApiProblem ? e
    : new ApiProblem(0, "network", `the server could not be reached (${e && e.message ? e.message : e})`, null);
  $("#error-title").textContent = problem.status ? `${problem.status} · ${problem.code}` : problem.code;
  let message = problem.message || "";
  if (problem.status === 401) message += " — enter the API key at the top right.";
  if (problem.status === 429) message += " — wait a moment and run it again.";
  $("#error-message").textContent = message;
  const label = problem.field ? fieldLabel(problem.field) : null;
  $("#error-field").textContent = problem.field ? `field: ${problem.field}${label ? ` (${label})` : ""}` : "";
  box.hidden = false;
  document.querySelectorAll(".bad").forEach((n) => n.classList.remove("bad"));
  if (problem.field) {
    const target = document.querySelector(`[data-field="${CSS.escape(problem.field)}"]`);
    if (target) target.classList.add("bad");
  }
}

function clearError() {
  $("#error").hidden = true;
  document.querySelectorAll(".bad").forEach((n) => n.classList.remove("bad"));
}

// ---- job picker, drop zones, options --------------------------------------------------------------------------------

function fileKey(spec) {
  return `${state.job.id}:${spec.name}`;
}

function renderThumbs(spec, holder) {
  holder.replaceChildren();
  for (const file of state.files.get(fileKey(spec)) || []) {
    let media;
    if (file.type.startsWith("image/")) media = el("img", { alt: "" });
    else if (file.type.startsWith("video/")) media = el("video", { muted: true, preload: "metadata" });
    else media = el("span", { class: "icon", text: file.type.startsWith("audio/") ? "♪" : "▣" });
    if (media.tagName !== "SPAN") {
      media.src = objectUrl(file);
      media.addEventListener("error", () => media.replaceWith(el("span", { class: "icon", text: "?" })));
    }
    holder.append(el("figure", { class: "thumb" }, media,
      el("figcaption", { text: `${file.name} · ${humanSize(file.size)}` })));
  }
  holder.closest(".drop").classList.toggle("filled", holder.childElementCount > 0);
}

function setFiles(spec, files, holder) {
  const list = Array.from(files);
  state.files.set(fileKey(spec), spec.multiple ? list : list.slice(0, 1));
  renderThumbs(spec, holder);
  clearError();
}

function renderDrops() {
  const drops = $("#drops");
  drops.replaceChildren();
  for (const spec of state.job.files) {
    const input = el("input", { type: "file", id: `file-${spec.name}`, accept: spec.accept, multiple: spec.multiple });
    const thumbs = el("div", { class: "thumbs" });
    const zone = el("label", { class: "drop", "data-field": spec.name, for: `file-${spec.name}` }, input,
      el("span", { class: "drop-title", text: spec.label + (spec.multiple ? " (one or more)" : "") }),
      el("span", { class: "drop-hint", text: `${spec.hint} — drop here or click to choose` }), thumbs);
    if (spec.imageName) zone.setAttribute("data-alt-field", spec.imageName);
    input.addEventListener("change", () => setFiles(spec, input.files, thumbs));
    zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("over");
      if (ev.dataTransfer && ev.dataTransfer.files.length) setFiles(spec, ev.dataTransfer.files, thumbs);
    });
    drops.append(zone);
    renderThumbs(spec, thumbs);
  }
}

function renderOptions() {
  const grid = $("#options");
  const toggles = $("#toggles");
  grid.replaceChildren();
  toggles.replaceChildren();
  for (const opt of state.job.options) {
    const id = `opt-${opt.name}`;
    let input;
    if (opt.type === "select") {
      input = el("select", { id });
      for (const c of opt.choices) {
        const [value, label] = Array.isArray(c) ? c : [c, c];
        input.append(el("option", { value, text: label, selected: value === (opt.def ?? "") }));
      }
    } else if (opt.type === "checkbox") {
      input = el("input", { id, type: "checkbox" });
    } else {
      input = el("input", { id, type: opt.type, value: opt.def ?? "", min: opt.min, max: opt.max, step: opt.step,
        placeholder: opt.def === undefined ? "default" : null, spellcheck: "false" });
    }
    const field = opt.type === "checkbox"
      ? el("label", { class: "opt check", "data-field": opt.name }, input, el("span", { text: opt.label }))
      : el("label", { class: "opt", "data-field": opt.name }, el("span", { text: opt.label }), input);
    if (opt.help) field.append(el("small", { text: opt.help }));
    (opt.type === "checkbox" ? toggles : grid).append(field);
  }
  $("#options-box").hidden = state.job.options.length === 0;
}

function renderAsyncBox() {
  const box = $("#as-job");
  const mode = state.job.async;
  $("#async-box").hidden = mode === "never";
  box.disabled = mode === "always";
  box.checked = mode === "always" || (mode === "optional" && state.preferJob);
  $("#async-box").title = mode === "always" ? "this job is slow: it always runs as a job" : "";
}

function readinessText(jobName) {
  if (!state.ready) return null;
  const info = state.ready.jobs && state.ready.jobs[jobName];
  if (!info) return ["off", "not enabled on this server (FACEAPI_ENABLED_JOBS)"];
  if (info.ready) return ["ok", `ready: ${info.backends.join(", ")}`
    + (info.command ? ` (neural: ${info.command})` : "")];
  return ["warn", info.detail || (info.command ? `needs weights: ${info.command}` : "not ready")];
}

function renderJobs() {
  const nav = $("#jobs");
  nav.replaceChildren();
  for (const job of JOBS) {
    const r = readinessText(job.ready);
    const tab = el("button", { type: "button", role: "tab", id: `job-${job.id}`, class: job === state.job ? "on" : "",
      "aria-selected": job === state.job ? "true" : "false", title: r ? r[1] : "" },
    el("span", { text: job.label }));
    if (r) tab.append(el("i", { class: `dot ${r[0]}` }));
    tab.addEventListener("click", () => pickJob(job));
    nav.append(tab);
  }
}

function pickJob(job) {
  if (state.busy) return;
  state.job = job;
  history.replaceState(null, "", `#${job.id}`);
  const r = readinessText(job.ready);
  $("#job-help").textContent = job.help + (r && r[0] !== "ok" ? ` — ${r[1]}` : "");
  renderJobs();
  renderDrops();
  renderOptions();
  renderAsyncBox();
  clearError();
  $("#result").hidden = true;
}

async function checkServer() {
  const status = $("#server-status");
  try {
    const resp = await fetch("/readyz", { cache: "no-store" });
    state.ready = await resp.json();
    status.textContent = state.ready.ready ? "server ready" : (state.ready.loading ? "loading models…" : "partly ready");
    status.className = `status ${state.ready.ready ? "ok" : "warn"}`;
    if (state.ready.loading) setTimeout(checkServer, 3000);
  } catch {
    status.textContent = "server unreachable";
    status.className = "status bad";
  }
  pickJob(state.job);
}

// ---- running ------------------------------------------------------------------------------------------------------

function buildForm(job) {
  const form = new FormData();
  for (const spec of job.files) {
    const files = state.files.get(fileKey(spec)) || [];
    if (spec.required && files.length === 0) {
      throw new ApiProblem(0, "missing_file", `drop a file in “${spec.label}” first`, spec.name);
    }
    for (const f of files) {
      const name = spec.imageName && f.type.startsWith("image/") ? spec.imageName : spec.name;
      form.append(name, f, f.name);
    }
  }
  for (const opt of job.options) {
    const input = document.getElementById(`opt-${opt.name}`);
    if (opt.type === "checkbox") {
      if (input.checked) form.append(opt.name, "true");
    } else if (input.value.trim() !== "") {
      form.append(opt.name, input.value.trim());
    }
  }
  return form;
}

function setBusy(busy, label) {
  state.busy = busy;
  const button = $("#run");
  button.disabled = busy;
  button.textContent = busy ? "Working…" : "Run";
  document.body.classList.toggle("busy", busy);
  if (busy) {
    $("#progress-box").hidden = false;
    $("#progress-label").textContent = label;
    $("#progress-eta").textContent = "";
    $("#progress-bar").style.width = "100%";
    $("#progress-bar").classList.add("indeterminate");
  } else {
    $("#progress-box").hidden = true;
    $("#cancel").hidden = true;
    state.cancelUrl = null;
  }
}

function showProgress(job) {
  const p = job.progress || {};
  const bar = $("#progress-bar");
  let label;
  if (job.state === "queued") {
    label = job.queue_position ? `queued: ${job.queue_position} job(s) ahead` : "queued";
  } else if (job.state === "running") {
    label = p.total ? `running: ${p.done} / ${p.total} ${p.unit}` : `running: ${p.done} ${p.unit || ""}`;
  } else {
    label = job.state;
  }
  if (job.cancel_requested && !TERMINAL.includes(job.state)) label += " (canceling…)";
  $("#progress-label").textContent = label;
  const fraction = job.state === "succeeded" ? 1 : p.fraction;
  if (typeof fraction === "number") {
    bar.classList.remove("indeterminate");
    bar.style.width = `${Math.round(fraction * 100)}%`;
    bar.setAttribute("data-fraction", fraction.toFixed(3));
  }
  $("#progress-eta").textContent = typeof p.eta_seconds === "number" && job.state === "running"
    ? `about ${Math.max(1, Math.round(p.eta_seconds))} s left` : "";
}

// The job's server-sent events, read from a fetch stream (EventSource cannot send the API key header). Returns the
// final job, or null if the stream broke off before the end (then the caller polls).
async function followEvents(url, signal) {
  const resp = await fetch(url, { headers: { ...authHeaders(), Accept: "text/event-stream" }, signal });
  if (!resp.ok) throw await problemOf(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return null;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length === 0) continue;
      const body = JSON.parse(data.join("\n"));
      if (event === "gone") throw new ApiProblem(404, body.error.code, body.error.message, null);
      showProgress(body);
      if (TERMINAL.includes(event)) return body;
    }
  }
}

async function pollJob(url, signal) {
  for (;;) {
    const resp = await fetch(url, { headers: authHeaders(), signal, cache: "no-store" });
    if (!resp.ok) throw await problemOf(resp);
    const job = await resp.json();
    showProgress(job);
    if (TERMINAL.includes(job.state)) return job;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function runAsJob(submitted, signal) {
  showProgress(submitted);
  state.cancelUrl = submitted.urls.cancel;
  $("#cancel").hidden = false;
  let job = null;
  try {
    job = await followEvents(submitted.urls.events, signal);
  } catch (e) {
    if (e instanceof ApiProblem) throw e;  // an API error; a broken stream falls back to polling
  }
  if (job === null) job = await pollJob(submitted.urls.self, signal);
  if (job.state !== "succeeded") {
    const err = job.error || { code: job.state, message: `the job ${job.state}`, field: null };
    throw new ApiProblem(job.state === "canceled" ? 499 : 500, err.code, err.message, err.field);
  }
  $("#cancel").hidden = true;
  $("#progress-label").textContent = "downloading the result…";
  const resp = await fetch(job.urls.result, { headers: authHeaders(), signal });
  if (!resp.ok) throw await problemOf(resp);
  return resp;
}

async function run(ev) {
  ev.preventDefault();
  if (state.busy) return;
  const job = state.job;
  clearError();
  let form;
  try {
    form = buildForm(job);
  } catch (e) {
    showError(e);
    return;
  }
  const asJob = job.async === "always" || (job.async === "optional" && $("#as-job").checked);
  const headers = authHeaders();
  if (asJob) headers.Prefer = "respond-async";
  const started = performance.now();
  state.abort = new AbortController();
  setBusy(true, asJob ? "uploading…" : "uploading and processing…");
  $("#result").hidden = true;
  releaseUrls();
  renderDrops();  // thumbnails get fresh URLs
  try {
    let resp = await fetch(job.endpoint, { method: "POST", body: form, headers, signal: state.abort.signal });
    if (!resp.ok) throw await problemOf(resp);
    if (resp.status === 202) resp = await runAsJob(await resp.json(), state.abort.signal);
    const seconds = (performance.now() - started) / 1000;
    if (job.id === "analyze") await showAnalysis(await resp.json(), seconds);
    else await showMedia(job, await resp.blob(), resp.headers, seconds);
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
  } finally {
    setBusy(false);
  }
}

async function cancelJob() {
  if (!state.cancelUrl) return;
  $("#cancel").disabled = true;
  try {
    const resp = await fetch(state.cancelUrl, { method: "POST", headers: authHeaders() });
    if (!resp.ok) showError(await problemOf(resp));
  } finally {
    $("#cancel").disabled = false;
  }
}

// ---- results ------------------------------------------------------------------------------------------------------

function setMeta(items) {
  const list = $("#result-meta");
  list.replaceChildren(...items.filter(Boolean).map(([k, v]) => el("li", {}, el("b", { text: k }), ` ${v}`)));
}

function extensionOf(type) {
  return { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4" }[type] || "bin";
}

function loaded(img) {
  return img.complete && img.naturalWidth ? Promise.resolve() : new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the result could not be displayed"));
  });
}

async function showMedia(job, blob, headers, seconds) {
  const url = objectUrl(blob);
  const download = $("#download");
  download.href = url;
  download.download = `${job.id}-result.${extensionOf(blob.type)}`;
  $("#analysis").hidden = true;
  const meta = META_HEADERS.filter(([h]) => headers.get(h) !== null).map(([h, label]) => [label, headers.get(h)]);
  const video = $("#result-video");
  const compare = $("#compare");
  if (blob.type.startsWith("video/")) {
    compare.hidden = true;
    $("#view-modes").hidden = true;
    video.src = url;
    video.hidden = false;
    setMeta([...meta, ["size", humanSize(blob.size)], ["time", `${seconds.toFixed(1)} s`]]);
  } else {
    video.hidden = true;
    video.removeAttribute("src");
    const after = $("#result-img");
    const before = $("#before-img");
    const spec = job.files.find((f) => f.before);
    const original = spec && (state.files.get(fileKey(spec)) || [])[0];
    after.src = url;
    compare.classList.toggle("single", !original);
    if (original) before.src = objectUrl(original);
    else before.removeAttribute("src");
    $("#view-modes").hidden = !original;
    compare.hidden = false;
    await loaded(after);
    setMeta([...meta, ["size", `${after.naturalWidth}×${after.naturalHeight}, ${humanSize(blob.size)}`],
      ["time", `${seconds.toFixed(1)} s`]]);
  }
  $("#result").hidden = false;
  $("#result").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function showAnalysis(body, seconds) {
  const spec = state.job.files[0];
  const file = (state.files.get(fileKey(spec)) || [])[0];
  let bitmap = null;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    // A format the browser cannot draw (e.g. TIFF): the boxes go on a blank canvas of the server's size.
  }
  const canvas = $("#overlay");
  canvas.width = bitmap ? bitmap.width : body.width;
  canvas.height = bitmap ? bitmap.height : body.height;
  const g = canvas.getContext("2d");
  if (bitmap) g.drawImage(bitmap, 0, 0);
  else {
    g.fillStyle = "#334155";
    g.fillRect(0, 0, canvas.width, canvas.height);
  }
  // The server may have applied EXIF orientation or scaled; map its coordinates onto the drawn picture.
  const sx = canvas.width / (body.width || canvas.width);
  const sy = canvas.height / (body.height || canvas.height);
  const unit = Math.max(1.5, Math.min(canvas.width, canvas.height) / 300);
  g.font = `${Math.round(unit * 7)}px system-ui, sans-serif`;
  g.textBaseline = "bottom";
  body.faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.bbox;
    g.lineWidth = unit * 1.4;
    g.strokeStyle = "#22d3ee";
    g.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    const label = `#${i + 1} ${face.score.toFixed(2)}${face.gender ? ` ${face.gender}` : ""}`
      + `${face.age != null ? ` ${face.age}` : ""}`;
    const w = g.measureText(label).width + unit * 4;
    g.fillStyle = "rgba(8, 47, 73, 0.85)";
    g.fillRect(x1 * sx, y1 * sy - unit * 9, w, unit * 9);
    g.fillStyle = "#e0f2fe";
    g.fillText(label, x1 * sx + unit * 2, y1 * sy - unit);
    g.fillStyle = "#facc15";
    for (const [x, y] of face.landmarks || []) {
      g.beginPath();
      g.arc(x * sx, y * sy, unit * 0.9, 0, Math.PI * 2);
      g.fill();
    }
    g.fillStyle = "#f43f5e";
    for (const [x, y] of face.kps || []) {
      g.beginPath();
      g.arc(x * sx, y * sy, unit * 1.8, 0, Math.PI * 2);
      g.fill();
    }
  });
  const table = $("#faces-table");
  table.replaceChildren(el("tr", {}, ...["#", "box (x1, y1, x2, y2)", "score", "gender", "age", "landmarks"]
    .map((h) => el("th", { text: h }))));
  body.faces.forEach((face, i) => table.append(el("tr", {},
    ...[`${i + 1}`, face.bbox.map((v) => Math.round(v)).join(", "), face.score.toFixed(3), face.gender || "–",
      face.age ?? "–", face.landmarks ? `${face.landmarks.length}` : "–"].map((t) => el("td", { text: `${t}` })))));
  $("#analysis-json").textContent = JSON.stringify(body, null, 2);
  $("#compare").hidden = true;
  $("#result-video").hidden = true;
  $("#view-modes").hidden = true;
  const json = new Blob([JSON.stringify(body, null, 2)], { type: "application/json" });
  $("#download").href = objectUrl(json);
  $("#download").download = "analysis.json";
  setMeta([["backend", body.backend], ["faces", `${body.faces.length}`], ["size", `${body.width}×${body.height}`],
    ["time", `${seconds.toFixed(1)} s`]]);
  $("#analysis").hidden = false;
  $("#result").hidden = false;
  canvas.setAttribute("data-faces", `${body.faces.length}`);
}

// ---- wiring -------------------------------------------------------------------------------------------------------

function init() {
  const key = $("#api-key");
  key.value = localStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => {
    const v = key.value.trim();
    if (v) localStorage.setItem(KEY_STORE, v);
    else localStorage.removeItem(KEY_STORE);
  });
  $("#job-form").addEventListener("submit", run);
  $("#cancel").addEventListener("click", cancelJob);
  $("#as-job").addEventListener("change", (ev) => {
    if (state.job.async === "optional") state.preferJob = ev.target.checked;
  });
  const compare = $("#compare");
  $("#split").addEventListener("input", (ev) => compare.style.setProperty("--split", `${ev.target.value}%`));
  for (const b of document.querySelectorAll("#view-modes button")) {
    b.addEventListener("click", () => {
      document.querySelectorAll("#view-modes button").forEach((x) => x.classList.toggle("on", x === b));
      compare.classList.toggle("slider", b.dataset.view === "slider");
      compare.classList.toggle("side", b.dataset.view === "side");
    });
  }
  // A file dropped outside a drop zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
  const wanted = JOBS.find((j) => `#${j.id}` === location.hash);
  if (wanted) state.job = wanted;
  pickJob(state.job);
  checkServer();
}

init();
