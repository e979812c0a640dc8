// The queue and history: the server's job list, newest first, with live progress for the active jobs (server-sent
// events), and the actions a job allows (open, download, cancel, delete, run again).

import { ApiError, apiKey, followEvents, mediaUrl, request } from "./api.js";
import { duration, stageLabel, statusLabel, taskLabel } from "./labels.js";

const PAGE = 20;
const MAX_STREAMS = 3; // a browser opens about 6 connections per server; leave room for the page's requests
const POLL_MS = 4000; // while a waiting job has no stream of its own, its queue position is re-read this often
const ACTIVE = new Set(["queued", "running"]);
const FINAL = new Set(["succeeded", "failed", "cancelled", "expired"]);

export class JobList {
  /** `handlers`: `{onOpen(job), onRerun(job), onError(error or text), announce(text), outputOf(job)}`. */
  constructor(list, summary, more, handlers) {
    Object.assign(this, { list, summary, more, handlers });
    this.jobs = new Map();
    this.cards = new Map();
    this.streams = new Map();
    this.limit = PAGE;
    this.count = 0;
    this.pending = new Map(); // job id -> a re-read of the job is in flight / wanted again
    this.pollTimer = null;
    more.addEventListener("click", () => {
      this.limit += PAGE;
      this.refresh();
    });
  }

  async refresh() {
    try {
      const page = await request(`/v1/jobs?limit=${this.limit}`);
      this.count = page.count;
      const ids = new Set(page.data.map((job) => job.id));
      for (const id of [...this.cards.keys()]) if (!ids.has(id)) this.#remove(id);
      page.data.forEach((job, index) => this.upsert(job, index));
      this.#summarize();
      this.#syncStreams();
    } catch (error) {
      this.handlers.onError(error);
    }
  }

  /** Shows `job` (new or changed); `index` places a new card (default: on top). */
  upsert(job, index = 0) {
    const known = this.jobs.get(job.id);
    const stale = known && known.status === job.status && known.steps === job.steps && job.step < known.step;
    if (stale) {
      // A read that left the server before the last event arrived after it: progress never goes back.
      job = { ...job, step: known.step, steps: known.steps, stage: known.stage, progress: known.progress };
    }
    this.jobs.set(job.id, job);
    let card = this.cards.get(job.id);
    if (!card) {
      card = this.#newCard(job);
      this.cards.set(job.id, card);
      this.list.insertBefore(card.root, this.list.children[index] || null);
    }
    this.#update(card, job, known);
    this.#summarize();
    this.#syncStreams();
  }

  #summarize() {
    const jobs = [...this.jobs.values()];
    const running = jobs.filter((j) => j.status === "running").length;
    const queued = jobs.filter((j) => j.status === "queued").length;
    const parts = [`${running} running`, `${queued} waiting`, `${this.count} job${this.count === 1 ? "" : "s"} in all`];
    this.summary.textContent = this.count ? parts.join(" · ") : "No jobs yet: the jobs you start appear here.";
    this.more.hidden = this.jobs.size >= this.count;
  }

  #newCard(job) {
    const root = document.createElement("li");
    root.className = "job";
    root.id = `job-${job.id}`;
    root.tabIndex = -1;
    root.innerHTML = `
      <div class="thumb" aria-hidden="true"></div>
      <div class="job-body">
        <p class="job-title"></p>
        <p class="job-meta"></p>
        <p class="job-state"><span class="badge"></span><span class="tag" hidden>random weights</span><span class="job-progress-text"></span></p>
        <progress max="100" value="0"></progress>
        <p class="job-error" hidden></p>
        <div class="job-actions"></div>
      </div>`;
    const $ = (selector) => root.querySelector(selector);
    const card = {
      root,
      thumb: $(".thumb"),
      title: $(".job-title"),
      meta: $(".job-meta"),
      badge: $(".badge"),
      tag: $(".tag"),
      text: $(".job-progress-text"),
      bar: $("progress"),
      error: $(".job-error"),
      actions: $(".job-actions"),
      state: null,
      thumbLoaded: false,
    };
    card.title.id = `job-title-${job.id}`;
    card.text.id = `job-progress-${job.id}`;
    card.bar.setAttribute("aria-labelledby", card.title.id);
    card.bar.setAttribute("aria-describedby", card.text.id); // "Denoising · step 3/10 · 30% · ETA 12 s"
    return card;
  }

  #update(card, job, known) {
    const p = job.params || {};
    const name = job.params?.prompt ? job.params.prompt : `${taskLabel(job.kind)} job`;
    card.root.dataset.status = job.status;
    card.title.textContent = name;
    card.title.title = name;
    const size = p.width && p.height ? `${p.width}×${p.height}` : "";
    const frames = p.num_frames > 1 ? `${p.num_frames} frames` : "";
    const seed = p.seed !== undefined && p.seed !== null ? `seed ${p.seed}` : "";
    const when = new Date(job.created_at).toLocaleString();
    card.meta.textContent = [job.model, taskLabel(job.kind), size, frames, seed, when].filter(Boolean).join(" · ");
    card.badge.textContent = statusLabel(job.status);
    card.tag.hidden = !job.random_weights;
    card.badge.className = `badge badge-${job.status}`;
    card.text.textContent = progressText(job);
    card.bar.value = Math.round((job.progress || 0) * 100);
    card.bar.hidden = job.status !== "running";
    card.error.hidden = !job.error;
    card.error.textContent = errorText(job);
    if (job.thumbnail_url && !card.thumbLoaded) this.#thumbnail(card, job);
    if (!job.thumbnail_url) card.thumb.textContent = statusIcon(job.status);
    const state = `${job.status} ${Boolean(job.content_url)}`; // the actions a job allows follow from these
    if (card.state !== state) this.#actions(card, job);
    card.state = state;
    if (known && known.status !== job.status && FINAL.has(job.status)) {
      this.handlers.announce(`Job "${name}": ${statusLabel(job.status).toLowerCase()}.`);
      if (job.status === "failed") this.handlers.onError(`Job "${name}" failed: ${errorText(job)}`);
    }
  }

  async #thumbnail(card, job) {
    card.thumbLoaded = true;
    try {
      const img = document.createElement("img");
      img.alt = "";
      img.src = await mediaUrl(job.thumbnail_url);
      card.thumb.replaceChildren(img);
    } catch {
      card.thumbLoaded = false; // expired or gone: keep the icon
    }
  }

  #actions(card, job) {
    const focused = card.actions.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    const name = card.title.textContent;
    const buttons = [];
    const add = (action, text, handler, className = "") => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = text;
      button.dataset.action = action;
      button.className = className;
      button.setAttribute("aria-label", `${text}: ${name}`);
      button.addEventListener("click", handler);
      buttons.push(button);
    };
    if (job.content_url) {
      const text = this.handlers.outputOf(job) === "image" ? "View" : "Play";
      add("open", text, () => this.handlers.onOpen(this.jobs.get(job.id)), "primary");
    }
    if (!job.content_url) add("details", "Details", () => this.handlers.onOpen(this.jobs.get(job.id)));
    if (job.content_url) {
      const link = downloadLink(this.jobs.get(job.id), this.handlers.outputOf(job));
      link.dataset.action = "download";
      link.setAttribute("aria-label", `Download: ${name}`);
      buttons.push(link);
    }
    if (ACTIVE.has(job.status)) add("cancel", "Cancel", () => this.cancel(job.id));
    add("rerun", "Run again", () => this.handlers.onRerun(this.jobs.get(job.id)));
    if (job.status !== "running") add("delete", "Delete", () => this.delete(job.id), "danger");
    card.actions.replaceChildren(...buttons);
    if (focused) (buttons.find((b) => b.dataset.action === focused) || card.root).focus();
  }

  async cancel(id) {
    try {
      this.upsert(await request(`/v1/jobs/${id}/cancel`, { method: "POST" }));
      this.handlers.announce("Cancelling the job.");
    } catch (error) {
      this.handlers.onError(error);
    }
  }

  async delete(id) {
    const job = this.jobs.get(id);
    if (!window.confirm(`Delete the job "${job?.params?.prompt || id}" and its files?`)) return;
    try {
      await request(`/v1/jobs/${id}`, { method: "DELETE" });
      this.#remove(id);
      this.count = Math.max(0, this.count - 1);
      this.#summarize();
      this.handlers.announce("Job deleted.");
      document.getElementById("jobs-heading").focus();
    } catch (error) {
      this.handlers.onError(error);
    }
  }

  #remove(id) {
    this.streams.get(id)?.abort();
    this.streams.delete(id);
    this.cards.get(id)?.root.remove();
    this.cards.delete(id);
    this.jobs.delete(id);
  }

  /** Streams the events of the first few active jobs; polls while other active jobs have no stream. */
  #syncStreams() {
    const active = [...this.jobs.values()]
      .filter((job) => ACTIVE.has(job.status))
      .sort((a, b) => (a.queue_position ?? 0) - (b.queue_position ?? 0));
    for (const job of active) {
      if (this.streams.size >= MAX_STREAMS) break;
      if (!this.streams.has(job.id)) this.#follow(job.id);
    }
    const unfollowed = active.some((job) => !this.streams.has(job.id));
    if (unfollowed && !this.pollTimer) {
      this.pollTimer = setTimeout(() => {
        this.pollTimer = null;
        this.refresh();
      }, POLL_MS);
    }
  }

  #follow(id) {
    const controller = new AbortController();
    this.streams.set(id, controller);
    const onEvent = ({ data }) => {
      const job = this.jobs.get(id);
      if (!job) return;
      const changed = { ...job, ...data, error: data.error ?? job.error };
      if (changed.status !== "queued") changed.queue_position = null;
      this.upsert(changed);
      this.#reread(id); // eta_s, queue_position and the content URLs are on the job, not in the event
    };
    followEvents(id, onEvent, controller.signal)
      .catch((error) => {
        if (!(error instanceof ApiError && error.status === 404)) this.handlers.onError(error);
      })
      .finally(() => {
        if (this.streams.get(id) === controller) this.streams.delete(id);
        if (!controller.signal.aborted) this.refresh(); // a job ended: the others' queue positions moved
      });
  }

  /** Re-reads a job, at most one request in flight per job (a change meanwhile asks for one more). */
  async #reread(id) {
    if (this.pending.has(id)) {
      this.pending.set(id, true);
      return;
    }
    this.pending.set(id, false);
    try {
      const job = await request(`/v1/jobs/${id}`);
      if (this.jobs.has(id)) this.upsert(job);
    } catch {
      // deleted meanwhile, or a dropped connection: the next event or refresh fixes it
    } finally {
      const again = this.pending.get(id);
      this.pending.delete(id);
      if (again) this.#reread(id);
    }
  }
}

function progressText(job) {
  if (job.status === "queued") {
    const position = job.queue_position ? `position ${job.queue_position} in the queue` : "waiting";
    return job.eta_s !== null && job.eta_s !== undefined ? `${position} · done in ~${duration(job.eta_s)}` : position;
  }
  if (job.status === "running") {
    const parts = [job.stage ? stageLabel(job.stage) : "Starting"];
    if (job.steps) parts.push(`step ${job.step}/${job.steps}`);
    parts.push(`${Math.round((job.progress || 0) * 100)}%`);
    if (job.eta_s !== null && job.eta_s !== undefined) parts.push(`ETA ${duration(job.eta_s)}`);
    return parts.join(" · ");
  }
  if (job.status === "succeeded" && job.started_at && job.finished_at) {
    return `took ${duration((new Date(job.finished_at) - new Date(job.started_at)) / 1000)}`;
  }
  return "";
}

function errorText(job) {
  if (!job.error) return "";
  const message = job.error.message || job.error.type;
  return job.error.type === job.status ? message : `${job.error.type}: ${message}`; // "cancelled: cancelled ..." once
}

function statusIcon(status) {
  return { queued: "…", failed: "!", cancelled: "×", expired: "–" }[status] || ""; // running: a CSS spinner
}

/** A download link; with an API key the file is fetched with it when the link is first used. */
export function downloadLink(job, output) {
  const link = document.createElement("a");
  link.className = "button";
  link.textContent = "Download";
  link.href = job.content_url;
  link.download = ""; // the server's Content-Disposition names the file
  link.addEventListener("click", async (event) => {
    if (link.href.startsWith("blob:") || !apiKey()) return;
    event.preventDefault();
    link.href = await mediaUrl(job.content_url);
    link.download = `${job.id}.${output === "image" ? "png" : "mp4"}`;
    link.click();
  });
  return link;
}
