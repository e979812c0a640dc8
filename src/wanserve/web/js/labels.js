// Words for the API's names. A name without an entry here is shown as the API spells it, so a new task, stage
// or parameter appears on the page without a change to this file.

const TASKS = {
  t2v: "Text to video",
  t2i: "Text to image",
  i2v: "Image to video",
  flf2v: "First + last frame to video",
  ti2v: "Text (+ image) to video",
  v2v: "Video to video",
  vace: "VACE: control video, mask, references",
  animate: "Animate a character",
  upscale: "Upscale a video",
};

// Short labels; what a parameter does comes from the API (`/v1/models`: the parameter table's help text).
const PARAMETERS = {
  guidance_scale_2: "Guidance, low-noise expert",
  boundary_ratio: "Expert boundary",
  flow_shift: "Flow shift",
  solver: "Solver",
  fps: "Frames per second",
  crf: "Video quality (CRF)",
  strength: "Strength",
  max_sequence_length: "Prompt tokens",
  animate_mode: "Animate mode",
};

const MEDIA = {
  image: "First frame (image)",
  last_image: "Last frame (image)",
  video: "Video",
  mask: "Mask (image or video)",
  reference_images: "Reference images",
  pose_video: "Pose video",
  face_video: "Face video",
  background_video: "Background video",
};
const MEDIA_BY_TASK = {
  animate: { image: "Character (reference image)" },
  v2v: { video: "Input video" },
  vace: { video: "Control video" },
  upscale: { video: "Video to upscale" },
};

const STAGES = {
  loading: "Loading model",
  encoding_text: "Encoding prompt",
  encoding_image: "Encoding image",
  denoising: "Denoising",
  decoding: "Decoding",
  writing: "Writing",
};

const STATUSES = {
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
  expired: "Expired",
};

export const taskLabel = (task) => TASKS[task] || task;
export const labelOf = (name) => PARAMETERS[name] || name;
export const mediaLabelOf = (name, task) => (MEDIA_BY_TASK[task] || {})[name] || MEDIA[name] || name;
export const stageLabel = (stage) => STAGES[stage] || stage;
export const statusLabel = (status) => STATUSES[status] || status;

/** "12 s", "3 min 5 s", "1 h 2 min". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
