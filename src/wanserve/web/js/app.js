// The page: loads what the server serves, submits jobs, shows the queue and history, plays results.

import { ApiError, apiKey, mediaUrl, request, setApiKey } from "./api.js";
import { JobForm } from "./form.js";
import { JobList, downloadLink } from "./jobs.js";
import { mediaLabelOf, statusLabel, taskLabel } from "./labels.js";

const $ = (id) => document.getElementById(id);
const HEALTH_POLL_MS = 2000;

const form = new JobForm($("job-form"));
const jobs = new JobList($("jobs"), $("jobs-summary"), $("more"), {
  onOpen: openViewer,
  onRerun: rerun,
  onError: showError,
  announce,
  outputOf,
});

function announce(text) {
  $("announcer").textContent = text;
}

/** Shows an `ApiError` (its message, HTTP status and type), a failed fetch, or a sentence. */
function showError(error) {
  let text = error;
  if (error instanceof ApiError && error.status === 401) {
    text = `This server needs an API key (${error.message}): enter it above.`;
  } else if (error instanceof ApiError) {
    text = `${error.message} (HTTP ${error.status}, ${error.type})`;
  }
  else if (error instanceof Error) text = `Could not reach the server: ${error.message}`;
  $("error-text").textContent = text;
  $("error-banner").hidden = false;
  if (error instanceof ApiError && error.status === 401) showKeyForm();
}

function hideError() {
  $("error-banner").hidden = true;
}

function showInfo(text) {
  $("info-text").textContent = text;
  $("info-banner").hidden = false;
}

function showKeyForm() {
  $("api-key-form").hidden = false;
  $("api-key-button").setAttribute("aria-expanded", "true");
  $("api-key").focus();
}

/** "image" or "video": what the job's model says its task produces. */
function outputOf(job) {
  const model = form.modelById(job.model);
  const task = model && model.tasks.find((t) => t.task === job.kind);
  return task ? task.output : "video";
}

async function loadModels() {
  const listing = await request("/v1/models");
  form.setModels(listing.data);
  const random = listing.data.filter((m) => m.random_weights).map((m) => m.id);
  $("random-banner").hidden = random.length === 0;
  $("random-banner").textContent = random.length
    ? `Random weights: ${random.join(", ")} ${random.length === 1 ? "draws" : "draw"} noise, not real videos. ` +
      "Configure real weights (see the README) to generate real ones."
    : "";
}

async function loadHealth() {
  try {
    const response = await fetch("/health", { headers: apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {} });
    const health = await response.json();
    const state = health.phase || health.status || "unknown";
    const models = (health.models || []).length;
    const parts = [`Server ${state}`, `v${health.version || "?"}`, `${models} model${models === 1 ? "" : "s"}`];
    if (health.devices) parts.push(health.devices.join(", "));
    if (!["ready", "ok", "healthy"].includes(state) && health.detail) parts.push(health.detail);
    $("server-status").textContent = parts.join(" · ");
    $("server-status").dataset.status = state;
    form.setUnavailable(
      Object.fromEntries((health.models || []).filter((m) => m.unavailable_reason).map((m) => [m.name, m.unavailable_reason])),
    );
    if (state === "starting") setTimeout(loadHealth, HEALTH_POLL_MS);
  } catch {
    $("server-status").textContent = "Server status unknown";
  }
}

async function submit(event) {
  event.preventDefault();
  hideError();
  form.clearErrors();
  $("submit-status").textContent = "";
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Submitting…";
  try {
    const job = await request("/v1/jobs", { method: "POST", ...form.payload() });
    jobs.upsert(job);
    const text = `Queued: ${job.params.prompt || taskLabel(job.kind)}.`;
    announce(text);
    $("submit-status").replaceChildren(text, " ", jobLink());
  } catch (error) {
    showError(error);
    if (error instanceof ApiError) form.showFieldError(error.param, error.message);
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
}

function jobLink() {
  const link = document.createElement("a");
  link.href = "#jobs-heading";
  link.textContent = "See the queue";
  link.className = "narrow-only";
  return link;
}

function rerun(job) {
  if (!form.modelById(job.model)) {
    showError(`The model ${job.model} is not served any more; pick another.`);
    return;
  }
  hideError();
  const media = form.fillFrom(job);
  if (media.length) {
    const names = media.map((name) => mediaLabelOf(name, job.kind).toLowerCase()).join(", ");
    showInfo(`Settings copied from the job. Attach the ${names} again: uploaded files are not kept for re-use.`);
  } else {
    showInfo("Settings copied from the job (with its seed): press Generate to run it again.");
  }
  $("create-heading").scrollIntoView({ behavior: "smooth", block: "start" });
  $("prompt").focus({ preventScroll: true });
}

async function openViewer(job) {
  const viewer = $("viewer");
  $("viewer-title").textContent = job.params?.prompt || `${taskLabel(job.kind)} job`;
  const media = $("viewer-media");
  media.replaceChildren();
  if (job.content_url) {
    const isImage = outputOf(job) === "image";
    const element = document.createElement(isImage ? "img" : "video");
    if (isImage) {
      element.alt = `Result of "${job.params?.prompt || job.id}"`;
    } else {
      Object.assign(element, { controls: true, loop: true, playsInline: true, muted: true, autoplay: true });
      element.setAttribute("aria-label", `Video of "${job.params?.prompt || job.id}"`);
    }
    media.append(element);
    mediaUrl(job.content_url).then((url) => (element.src = url), showError);
  } else {
    const note = document.createElement("p");
    note.className = "hint";
    note.textContent = `${statusLabel(job.status)}${job.error ? `: ${job.error.message}` : ""}`;
    media.append(note);
  }
  const actions = [];
  if (job.content_url) actions.push(downloadLink(job, outputOf(job)));
  const again = document.createElement("button");
  again.type = "button";
  again.textContent = "Run again with these settings";
  again.addEventListener("click", () => {
    viewer.close();
    rerun(job);
  });
  actions.push(again);
  $("viewer-actions").replaceChildren(...actions);
  $("viewer-params").replaceChildren(...paramRows(job));
  viewer.showModal();
}

function paramRows(job) {
  const rows = [
    ["Model", job.model],
    ["Task", taskLabel(job.kind)],
    ["Status", statusLabel(job.status)],
    ["Job id", job.id],
  ];
  for (const [name, value] of Object.entries(job.params || {})) {
    if (["model", "task", "prompt"].includes(name)) continue; // shown above
    if (value === null || value === "" || (Array.isArray(value) && !value.length)) continue;
    rows.push([name, Array.isArray(value) ? value.join(", ") : String(value)]);
  }
  return rows.flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    return [dt, dd];
  });
}

function wire() {
  $("job-form").addEventListener("submit", submit);
  $("refresh").addEventListener("click", () => jobs.refresh());
  $("error-close").addEventListener("click", hideError);
  $("info-close").addEventListener("click", () => ($("info-banner").hidden = true));
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("close", () => $("viewer-media").replaceChildren());
  $("api-key-button").addEventListener("click", () => {
    const open = $("api-key-form").hidden;
    $("api-key-form").hidden = !open;
    $("api-key-button").setAttribute("aria-expanded", String(open));
    if (open) $("api-key").focus();
  });
  $("api-key").value = apiKey();
  $("api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("api-key").value.trim());
    $("api-key-form").hidden = true;
    $("api-key-button").setAttribute("aria-expanded", "false");
    start();
  });
}

async function start() {
  hideError();
  try {
    await loadModels();
    loadHealth();
  } catch (error) {
    showError(error);
    return;
  }
  await jobs.refresh();
  document.body.dataset.ready = "true";
}

wire();
start();
