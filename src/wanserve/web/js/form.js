// The "New job" form, built from `GET /v1/models`: the chosen model's tasks, the task's media inputs and
// parameters with their defaults. A field the API does not list for the task is not shown, so the form follows
// the server's parameter table instead of a copy of it.

import { labelOf, mediaLabelOf, taskLabel } from "./labels.js";

// Parameters with a place of their own in the form; every other parameter goes under "Advanced options".
const MAIN = new Set([
  "prompt", "negative_prompt", "width", "height", "num_frames", "num_inference_steps", "guidance_scale", "seed",
]);
const IMAGE_INPUTS = new Set(["image", "last_image", "reference_images"]);

const $ = (id) => document.getElementById(id);

export class JobForm {
  constructor(element) {
    this.form = element;
    this.models = [];
    this.model = null;
    this.task = null;
    this.defaults = {};
    this.negativeEdited = false;
    this.previews = [];
    this.unavailable = {};
    $("model").addEventListener("change", () => this.selectModel($("model").value));
    $("task").addEventListener("change", () => this.selectTask($("task").value));
    $("size").addEventListener("change", () => this.#sizeChanged());
    $("num_frames").addEventListener("input", () => this.#framesChanged());
    $("seconds").addEventListener("input", () => this.#secondsChanged());
    $("negative_prompt").addEventListener("input", () => (this.negativeEdited = true));
    $("reset-defaults").addEventListener("click", () => {
      this.negativeEdited = false;
      this.selectTask(this.task.task);
    });
    this.form.addEventListener("input", (event) => {
      this.#clearError(event.target);
      if (event.target.name === "fps") this.#framesChanged();
    });
  }

  /** Fills the model list; the server's default model is chosen. */
  setModels(models) {
    this.models = models;
    const select = $("model");
    select.replaceChildren(
      ...models.map((m) => new Option(m.random_weights ? `${m.id} — random weights` : m.id, m.id)),
    );
    const chosen = models.find((m) => m.default) || models[0];
    if (chosen) this.selectModel(chosen.id);
  }

  /** Models no worker can load (from `/health`): `{name: reason}`; their jobs would be refused. */
  setUnavailable(reasons) {
    this.unavailable = reasons;
    if (this.model) this.#note();
  }

  #note() {
    const reason = this.unavailable[this.model.id];
    const notes = [];
    if (reason) notes.push(`Unavailable: ${reason}`);
    if (this.model.random_weights) notes.push("Random weights: its output is noise, for trying the service out.");
    $("model-note").textContent = notes.join(" ");
  }

  modelById(id) {
    return this.models.find((m) => m.id === id) || null;
  }

  selectModel(id, task = null) {
    this.model = this.modelById(id);
    $("model").value = id;
    $("task").replaceChildren(...this.model.tasks.map((t) => new Option(taskLabel(t.task), t.task)));
    this.#note();
    this.selectTask(task && this.model.tasks.some((t) => t.task === task) ? task : this.model.default_task);
  }

  /** Shows the task's inputs and parameters, each set to its default. */
  selectTask(name) {
    this.task = this.model.tasks.find((t) => t.task === name);
    $("task").value = name;
    this.defaults = Object.fromEntries(this.task.parameters.map((p) => [p.name, p.default]));
    const has = (field) => field in this.defaults;
    const negative = $("negative_prompt").value;
    this.#renderMedia();
    this.#renderAdvanced();

    for (const id of ["num_inference_steps", "guidance_scale", "seed", "negative_prompt"]) {
      $(id).closest(".field").hidden = !has(id);
      $(id).value = has(id) && this.defaults[id] !== null ? this.defaults[id] : "";
    }
    if (this.negativeEdited) $("negative_prompt").value = negative;
    $("size-field").hidden = !(has("width") && has("height"));
    this.#sizeOptions(this.defaults.width, this.defaults.height);
    this.#setSize(this.defaults.width, this.defaults.height);
    $("length-field").hidden = !has("num_frames") || this.task.output === "image"; // one frame: nothing to choose
    $("num_frames").value = has("num_frames") ? this.defaults.num_frames : "";
    $("num_frames").step = this.model.frames_multiple;
    $("num_frames").min = 1;
    $("num_frames").max = this.model.max_frames;
    $("seconds").step = "any";
    this.#framesChanged();
    for (const id of ["width", "height"]) {
      $(id).step = this.model.size_multiple;
      $(id).max = this.model.max_side;
    }
    $("prompt").closest(".field").hidden = !has("prompt");
  }

  #renderMedia() {
    for (const url of this.previews) URL.revokeObjectURL(url);
    this.previews = [];
    const inputs = [
      ...this.task.required_inputs.map((name) => [name, true]),
      ...this.task.optional_inputs.map((name) => [name, false]),
    ];
    $("media-fields").replaceChildren(...inputs.map(([name, required]) => this.#mediaField(name, required)));
  }

  #mediaField(name, required) {
    const field = document.createElement("div");
    field.className = "field media-field";
    const label = document.createElement("label");
    label.htmlFor = `input-${name}`;
    label.textContent = `${mediaLabelOf(name, this.task.task)}${required ? "" : " (optional)"}`;
    const input = document.createElement("input");
    input.type = "file";
    input.id = `input-${name}`;
    input.name = name;
    input.accept = name === "mask" ? "image/*,video/*" : IMAGE_INPUTS.has(name) ? "image/*" : "video/*";
    input.multiple = name === "reference_images";
    input.required = required; // announced by screen readers; the server checks it (the form is `novalidate`)
    const preview = document.createElement("div");
    preview.className = "preview";
    preview.setAttribute("aria-live", "polite");
    input.addEventListener("change", () => this.#preview(input, preview));
    field.append(label, input, preview);
    return field;
  }

  #preview(input, preview) {
    preview.replaceChildren();
    for (const file of input.files) {
      const url = URL.createObjectURL(file);
      this.previews.push(url);
      const isVideo = file.type.startsWith("video/");
      const element = document.createElement(isVideo ? "video" : "img");
      element.src = url;
      if (isVideo) {
        Object.assign(element, { muted: true, loop: true, autoplay: true, playsInline: true });
        element.setAttribute("aria-label", `Preview of ${file.name}`);
      } else {
        element.alt = `Preview of ${file.name}`;
      }
      preview.append(element);
    }
  }

  #renderAdvanced() {
    const fields = this.task.parameters.filter((p) => !MAIN.has(p.name)).map((p) => this.#advancedField(p));
    $("advanced-fields").replaceChildren(...fields);
    $("advanced").hidden = fields.length === 0;
  }

  #advancedField(param) {
    const field = document.createElement("div");
    field.className = "field advanced-field";
    const label = document.createElement("label");
    label.htmlFor = param.name;
    label.textContent = labelOf(param.name);
    let control;
    if (param.choices) {
      control = document.createElement("select");
      control.append(...param.choices.map((c) => new Option(c, c)));
    } else {
      control = document.createElement("input");
      control.type = param.type === "string" ? "text" : "number";
      if (param.type !== "string") {
        control.step = param.type === "integer" ? "1" : "any";
        control.inputMode = param.type === "integer" ? "numeric" : "decimal";
      }
    }
    control.id = param.name;
    control.name = param.name;
    control.value = param.default ?? "";
    field.append(label, control);
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.id = `${param.name}-hint`;
    hint.textContent = `${param.description || ""} Default: ${param.default}.`.trim();
    control.setAttribute("aria-describedby", hint.id);
    field.append(hint);
    return field;
  }

  /** The model's trained sizes, and the task's default size marked (added first when it is not a trained one,
   * as for a text-to-image task with its own default). */
  #sizeOptions(width, height) {
    const sizes = this.model.sizes.map((s) => [s.width, s.height]);
    if (width && height && !sizes.some(([w, h]) => w === width && h === height)) sizes.unshift([width, height]);
    $("size").replaceChildren(
      ...sizes.map(([w, h]) => new Option(`${w} × ${h}${w === width && h === height ? " (default)" : ""}`, `${w}x${h}`)),
      new Option("Custom…", "custom"),
    );
  }

  #setSize(width, height) {
    const value = `${width}x${height}`;
    const trained = [...$("size").options].some((o) => o.value === value);
    $("size").value = trained ? value : "custom";
    $("width").value = width ?? "";
    $("height").value = height ?? "";
    $("custom-size").hidden = trained;
  }

  #sizeChanged() {
    const value = $("size").value;
    $("custom-size").hidden = value !== "custom";
    if (value !== "custom") {
      const [w, h] = value.split("x");
      $("width").value = w;
      $("height").value = h;
    }
  }

  #fps() {
    const control = this.form.elements.namedItem("fps");
    const fps = control && control.value ? Number(control.value) : this.model.fps;
    return fps > 0 ? fps : this.model.fps;
  }

  #framesChanged() {
    const frames = $("num_frames").valueAsNumber;
    const fps = this.#fps();
    $("seconds").value = Number.isFinite(frames) ? +((frames - 1) / fps).toFixed(2) : "";
    const k = this.model.frames_multiple;
    $("frames-hint").textContent = `${k}k+1 frames, at most ${this.model.max_frames}, at ${fps} fps.`;
  }

  #secondsChanged() {
    const seconds = $("seconds").valueAsNumber;
    if (!Number.isFinite(seconds)) return;
    const k = this.model.frames_multiple;
    $("num_frames").value = k * Math.round((seconds * this.#fps()) / k) + 1;
  }

  /** The request: `{json}` without files, `{form}` (multipart) with them. Defaults left as they are are omitted,
   * so the job takes the model's defaults (and shows them in its `params`). */
  payload() {
    const values = { model: this.model.id, task: this.task.task };
    for (const param of this.task.parameters) {
      const control = this.form.elements.namedItem(param.name);
      if (!control) continue;
      const value = this.#valueOf(param, control);
      if (value === undefined) continue;
      if (param.name !== "seed" && value === param.default) continue;
      values[param.name] = value;
    }
    const files = [...this.form.querySelectorAll("input[type=file]")].filter((input) => input.files.length);
    if (!files.length) return { json: values };
    const form = new FormData();
    for (const [name, value] of Object.entries(values)) form.append(name, String(value));
    for (const input of files) for (const file of input.files) form.append(input.name, file, file.name);
    return { form };
  }

  #valueOf(param, control) {
    if (param.type === "string") {
      // An empty prompt is omitted; an emptied negative prompt is sent (it differs from the default).
      return param.name === "prompt" && control.value.trim() === "" ? undefined : control.value;
    }
    if (control.value === "") return undefined;
    if (param.type === "boolean") return control.value === "true";
    return Number(control.value);
  }

  /** Fills the form from a job's model, task and resolved parameters ("run again"). Returns the media inputs the
   * job had, which have to be attached again. */
  fillFrom(job) {
    this.negativeEdited = true;
    $("negative_prompt").value = job.params.negative_prompt ?? "";
    this.selectModel(job.model, job.kind);
    for (const param of this.task.parameters) {
      if (!(param.name in job.params) || ["width", "height"].includes(param.name)) continue;
      const control = this.form.elements.namedItem(param.name);
      if (control && job.params[param.name] !== null) control.value = job.params[param.name];
    }
    this.#setSize(job.params.width, job.params.height);
    this.#framesChanged();
    return [...this.task.required_inputs, ...this.task.optional_inputs].filter((name) => {
      const value = job.params[name];
      return Array.isArray(value) ? value.length > 0 : Boolean(value);
    });
  }

  /** Marks the field the server named in an error, and moves the focus there. Returns whether it was found. */
  showFieldError(param, message) {
    if (!param) return false;
    const control =
      this.form.elements.namedItem(param) || this.form.querySelector(`input[type=file][name="${param}"]`);
    if (!control || !(control instanceof HTMLElement) || control.closest("[hidden]")) return false;
    control.setAttribute("aria-invalid", "true");
    const error = document.createElement("p");
    error.className = "field-error";
    error.id = `${control.id}-error`;
    error.textContent = message;
    control.closest(".field").append(error);
    const described = control.getAttribute("aria-describedby");
    control.setAttribute("aria-describedby", described ? `${error.id} ${described}` : error.id);
    const details = control.closest("details");
    if (details) details.open = true;
    control.focus();
    return true;
  }

  clearErrors() {
    for (const control of this.form.querySelectorAll("[aria-invalid=true]")) this.#clearError(control);
  }

  #clearError(control) {
    if (!(control instanceof HTMLElement) || control.getAttribute("aria-invalid") !== "true") return;
    control.removeAttribute("aria-invalid");
    const error = document.getElementById(`${control.id}-error`);
    if (error) error.remove();
    const rest = (control.getAttribute("aria-describedby") || "").split(" ").filter((id) => id !== `${control.id}-error`);
    if (rest.length) control.setAttribute("aria-describedby", rest.join(" "));
    else control.removeAttribute("aria-describedby");
  }
}
