// The Extras tab: upscale one image or many (a folder too) with the registered upscalers or a plain
// resize, optionally blended with a second upscaler and with faces restored — one native `upscale`
// job per image, each followed live, each result shown against its original with a before/after split.
// The SD upscale mode makes one native `sd_upscale` job per image instead: upscaled, then redrawn tile by
// tile with img2img on the workers (the checkpoint, sampler, steps and seed from the Generate tab).
import { api, apiUrl, auth, ApiError } from "../api.js";
import { $, $$, h, icon, render, debounce, dropZone } from "../dom.js";
import { emit } from "../bus.js";
import { catalog, onCatalog } from "../catalog.js";
import { pairSliders, setSelect, fieldElement, markInvalid, clearInvalid } from "../form.js";
import { watchJob } from "../watch.js";
import { compareView } from "../compare.js";
import { openLightbox } from "../lightbox.js";
import { download } from "../images.js";
import { duration, usd, truncate } from "../format.js";
import { showError, toast } from "../toast.js";
import { currentRequest } from "./generate.js";

const STORAGE = "sdfleet.extras";
const MAX_CARDS = 60; // the newest results shown (older ones stay in Queue and Gallery)
const IMAGE_TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp" };
const SETTINGS = [
  "upscaling_resize",
  "upscaling_resize_w",
  "upscaling_resize_h",
  "upscaling_crop",
  "upscaler_1",
  "upscaler_2",
  "extras_upscaler_2_visibility",
  "gfpgan_visibility",
  "codeformer_visibility",
  "codeformer_weight",
  "upscale_first",
  "sd_prompt",
  "sd_negative_prompt",
  "sd_denoising_strength",
  "sd_scale",
  "sd_upscaler",
  "sd_overlap",
  "sd_tile_width",
  "sd_tile_height",
];
// what an SD upscale's tiles take from the Generate tab (the rest is set here)
const FROM_GENERATE = ["model", "vae", "sampler_name", "scheduler", "steps", "cfg_scale", "seed", "subseed", "subseed_strength", "clip_skip", "output_format"];
const FACE_HINT = "sdfleet models add NAME FILE --kind face_restorer";

const form = $("#extras-form");
const results = $("#extras-results");
const chosen = []; // {file, name, url (object URL), width, height}
const cards = [];

const extension = (name) => (/\.([^.]+)$/.exec(name)?.[1] || "").toLowerCase();

/** The image type of a chosen file (by its type, or its extension when the system gives none). */
function imageType(file) {
  if (/^image\/(png|jpeg|webp)$/.test(file.type)) return file.type;
  return file.type && file.type !== "application/octet-stream" ? null : IMAGE_TYPES[extension(file.name)] || null;
}

// ------------------------------------------------------------------ sizes (A1111's Extras rules)

const mode = () => form.elements.resize_mode.value;
const extrasMode = () => form.elements.extras_mode.value;
const sdMode = () => extrasMode() === "sd_upscale";
const num = (name) => (form.elements[name].value === "" ? NaN : Number(form.elements[name].value));

/** What one upscale turns a `w`×`h` image into (UpscaleSpec.output_size): null when the settings are bad. */
export function outputSizeFor(w, hgt, settings = readSettings()) {
  if (settings.upscaler_1.toLowerCase() === "none") return [w, hgt];
  const boxW = settings.upscaling_resize_w;
  const boxH = settings.upscaling_resize_h;
  if (settings.resize_mode === "scale_to" && settings.upscaling_crop) return [boxW, boxH];
  const factor = settings.resize_mode === "scale_to" ? Math.max(boxW / w, boxH / hgt) : settings.upscaling_resize;
  if (!Number.isFinite(factor) || factor <= 0) return null;
  return [Math.max(8, Math.floor(Math.floor(w * factor) / 8) * 8), Math.max(8, Math.floor(Math.floor(hgt * factor) / 8) * 8)];
}

function readSettings() {
  const el = form.elements;
  const settings = {
    resize_mode: mode(),
    upscaling_resize: num("upscaling_resize"),
    upscaling_resize_w: num("upscaling_resize_w"),
    upscaling_resize_h: num("upscaling_resize_h"),
    upscaling_crop: el.upscaling_crop.checked,
    upscaler_1: el.upscaler_1.value || "Lanczos",
    upscaler_2: el.upscaler_2.value || "None",
    extras_upscaler_2_visibility: num("extras_upscaler_2_visibility") || 0,
  };
  // face restoration only when the server can do it (disabled controls are left out: the API's defaults)
  for (const name of ["gfpgan_visibility", "codeformer_visibility", "codeformer_weight"]) {
    if (!el[name].disabled) settings[name] = num(name) || 0;
  }
  if (!el.upscale_first.disabled) settings.upscale_first = el.upscale_first.checked;
  return settings;
}

const sizeText = ([w, hgt]) => `${w}×${hgt}`;

/** The SD upscale mode's settings: {upscaler, scale, overlap, generation: {…the tiles' img2img}}. */
function readSd() {
  const el = form.elements;
  const base = currentRequest({ images: false }).params;
  const generation = {};
  for (const key of FROM_GENERATE) if (base[key] !== undefined && base[key] !== null) generation[key] = base[key];
  Object.assign(generation, {
    prompt: el.sd_prompt.value,
    negative_prompt: el.sd_negative_prompt.value,
    denoising_strength: num("sd_denoising_strength"),
    width: num("sd_tile_width"),
    height: num("sd_tile_height"),
    batch_size: 1,
    n_iter: 1,
  });
  return { upscaler: el.sd_upscaler.value, scale: num("sd_scale"), overlap: num("sd_overlap"), generation };
}

/** What an SD upscale turns a `w`×`h` picture into (SdUpscaleSpec.upscaled_size). */
export function sdOutputSize(w, hgt, scale) {
  if (!Number.isFinite(scale) || scale <= 0) return null;
  return [Math.max(8, Math.floor(Math.floor(w * scale) / 8) * 8), Math.max(8, Math.floor(Math.floor(hgt * scale) / 8) * 8)];
}

/** The tiles covering a picture (SdUpscaleSpec.grid: A1111's split_grid): [columns, rows, tileW, tileH]. */
function sdTiles([w, hgt], tileW, tileH, overlap) {
  const tw = Math.floor(Math.min(tileW, w) / 8) * 8;
  const th = Math.floor(Math.min(tileH, hgt) / 8) * 8;
  const o = Math.max(0, Math.min(overlap, Math.floor(Math.min(tw, th) / 2)));
  const count = (side, span) => (side <= span ? 1 : Math.ceil((side - o) / (span - o)));
  return [count(w, tw), count(hgt, th), tw, th];
}

function outputFor(item) {
  return sdMode() ? sdOutputSize(item.width, item.height, num("sd_scale")) : outputSizeFor(item.width, item.height);
}

function updateSdNote() {
  const base = currentRequest({ images: false }).params;
  $("#extras-sd-base").textContent = [base.model || "the worker's checkpoint", base.sampler_name, `${base.steps} steps`, `CFG ${base.cfg_scale}`, `seed ${base.seed === -1 ? "random" : base.seed}`]
    .filter(Boolean)
    .join(" · ");
  const note = $("#extras-sd-size");
  const first = chosen[0];
  const out = first ? sdOutputSize(first.width, first.height, num("sd_scale")) : null;
  if (!out) {
    note.textContent = first ? "" : `Each image ×${num("sd_scale")}, redrawn in tiles of ${num("sd_tile_width")}×${num("sd_tile_height")}.`;
    return;
  }
  const [cols, rows, tw, th] = sdTiles(out, num("sd_tile_width"), num("sd_tile_height"), num("sd_overlap") || 0);
  note.textContent = `${truncate(first.name, 40)}: ${sizeText([first.width, first.height])} → ${sizeText(out)}, ${cols * rows} tile${cols * rows === 1 ? "" : "s"} of ${tw}×${th} (${cols}×${rows})${chosen.length > 1 ? `, and ${chosen.length - 1} more` : ""}`;
}

function updateSizeNote() {
  const sd = sdMode();
  $("#extras-plain").hidden = sd;
  $("#extras-sd").hidden = !sd;
  $("#extras-size").hidden = sd;
  $("#extras-sd-size").hidden = !sd;
  $("#extras-title").textContent = sd ? "SD upscale" : "Upscale";
  submitLabel();
  if (sd) {
    updateSdNote();
    for (const item of chosen) {
      const size = outputFor(item);
      if (item.sizeLabel) item.sizeLabel.textContent = size ? `${sizeText([item.width, item.height])} → ${sizeText(size)}` : "";
    }
    return;
  }
  const scaleTo = mode() === "scale_to";
  $("#extras-scale-by").hidden = scaleTo;
  $("#extras-scale-to").hidden = !scaleTo;
  const settings = readSettings();
  const note = $("#extras-size");
  const how =
    settings.upscaler_1.toLowerCase() === "none"
      ? "Upscaler 1 is None: each image keeps its size"
      : scaleTo
        ? `Each image ${settings.upscaling_crop ? "to exactly" : "scaled to cover"} ${settings.upscaling_resize_w}×${settings.upscaling_resize_h}`
        : `Each image ×${Number.isFinite(settings.upscaling_resize) ? settings.upscaling_resize : "?"}`;
  const first = chosen[0];
  const out = first ? outputSizeFor(first.width, first.height, settings) : null;
  note.textContent = first && out
    ? `${how} — ${truncate(first.name, 40)}: ${sizeText([first.width, first.height])} → ${sizeText(out)}${chosen.length > 1 ? `, and ${chosen.length - 1} more` : ""}`
    : `${how}.`;
  for (const item of chosen) {
    const size = outputSizeFor(item.width, item.height, settings);
    if (item.sizeLabel) item.sizeLabel.textContent = size ? `${sizeText([item.width, item.height])} → ${sizeText(size)}` : "";
  }
}

// ------------------------------------------------------------------ pickers

function upscalerOptions(select, { allowNone }) {
  const current = select.value;
  const builtIn = catalog.pixelUpscalers.filter((u) => !u.model_name && !u.model_path);
  const nets = catalog.pixelUpscalers.filter((u) => u.model_name || u.model_path);
  const option = (u) =>
    h("option", { value: u.name, title: u.model_name ? `${u.model_name}${u.scale ? `, ×${u.scale} per pass` : ""}` : null },
      u.model_name ? `${u.name} (${u.model_name}${u.scale ? ` ×${u.scale}` : ""})` : u.name);
  render(
    select,
    h("optgroup", { label: "Resize" }, builtIn.filter((u) => allowNone || u.name !== "None").map(option)),
    nets.length
      ? h("optgroup", { label: "Upscaler models" }, nets.map(option))
      : h("optgroup", { label: "Upscaler models" }, h("option", { value: "", disabled: true }, "none registered (sdfleet models add … --kind upscaler)")),
  );
  if (current) setSelect(select, current);
}

function fillPickers() {
  if (!catalog.pixelUpscalers.length) return;
  const el = form.elements;
  const first = !el.upscaler_1.options.length;
  upscalerOptions(el.upscaler_1, { allowNone: true });
  upscalerOptions(el.upscaler_2, { allowNone: true });
  upscalerOptions(el.sd_upscaler, { allowNone: false });
  if (first) {
    restore();
    // a registered net is what people come here for; otherwise Lanczos
    if (!localStorage.getItem(STORAGE)) {
      const net = catalog.pixelUpscalers.find((u) => u.model_name || u.model_path);
      setSelect(el.upscaler_1, net ? net.name : "Lanczos");
      setSelect(el.upscaler_2, "None");
      setSelect(el.sd_upscaler, "Lanczos");
      // tiles the checkpoint's own size (a 64 px demo model redraws 64 px tiles)
      const side = catalog.checkpoints[0]?.resolution;
      if (side) el.sd_tile_width.value = el.sd_tile_height.value = String(side);
    }
  }
  showFaceRestorers();
  updateSizeNote();
}

function showFaceRestorers() {
  const faces = catalog.faceRestorers;
  const families = new Set(faces.map((f) => f.arch));
  const any = families.has(null) || families.has(undefined);
  const gfpgan = any || families.has("gfpgan");
  const codeformer = any || families.has("codeformer");
  const el = form.elements;
  el.gfpgan_visibility.disabled = !gfpgan;
  el.codeformer_visibility.disabled = !codeformer;
  el.codeformer_weight.disabled = !codeformer;
  el.upscale_first.disabled = !gfpgan && !codeformer;
  for (const range of $$("#extras-faces input[type=range]")) {
    range.disabled = document.getElementById(range.dataset.for).disabled;
  }
  $("#extras-faces").classList.toggle("unavailable", !gfpgan && !codeformer);
  const note = $("#extras-faces-note");
  const missing = [!gfpgan && "GFPGAN", !codeformer && "CodeFormer"].filter(Boolean);
  note.hidden = !missing.length;
  note.textContent = !faces.length
    ? `This server has no face restorer (its face-restorers list is empty), so faces are not restored. An admin can register a GFPGAN or CodeFormer model: ${FACE_HINT}.`
    : `No ${missing.join(" or ")} face restorer is registered: ${FACE_HINT}.`;
}

// ------------------------------------------------------------------ the chosen images

function imageSize(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
    img.onerror = () => reject(new Error("the image does not decode"));
    img.src = url;
  });
}

async function addFiles(list) {
  const files = [...list]; // a file input's list is emptied when the input is reset
  const skipped = [];
  const broken = [];
  for (const file of files) {
    const name = file.webkitRelativePath || file.name;
    if (!imageType(file)) {
      skipped.push(name);
      continue;
    }
    if (chosen.some((c) => c.name === name && c.file.size === file.size)) continue;
    const url = URL.createObjectURL(file);
    try {
      const [width, height] = await imageSize(url);
      chosen.push({ file, name, url, width, height, type: imageType(file) });
    } catch {
      URL.revokeObjectURL(url);
      broken.push(name);
    }
  }
  if (skipped.length && files.length > skipped.length) {
    toast(`${skipped.length} file${skipped.length === 1 ? "" : "s"} that are not PNG, JPEG or WebP images: ${truncate(skipped.join(", "), 160)}`, { title: "Skipped" });
  } else if (skipped.length) {
    toast(`${truncate(skipped.join(", "), 160)}: not a PNG, JPEG or WebP image`, { kind: "error", title: "Skipped" });
  }
  if (broken.length) toast(`${truncate(broken.join(", "), 160)}: the image does not decode`, { kind: "error", title: "Skipped" });
  showFiles();
}

function removeAt(i) {
  const [item] = chosen.splice(i, 1);
  // the object URL stays alive: a result card may still show it as its "before"
  if (item && !cards.some((c) => c.source.url === item.url)) URL.revokeObjectURL(item.url);
  showFiles();
}

function showFiles() {
  render(
    $("#extras-files"),
    chosen.map((item, i) => {
      item.sizeLabel = h("span.extras-file-size.muted");
      return h(
        "li",
        h("img", { src: item.url, alt: "", loading: "lazy" }),
        h("div.extras-file-text", h("span.file-name", { title: item.name }, item.name), item.sizeLabel),
        h("button.icon-button.small-icon", { type: "button", title: `Remove ${item.name}`, "aria-label": `Remove ${item.name}`, onclick: () => removeAt(i) }, icon("x")),
      );
    }),
  );
  const n = chosen.length;
  $("#extras-count").textContent = n ? `${n} image${n === 1 ? "" : "s"} chosen` : "";
  $("#extras-clear").hidden = !n;
  submitLabel();
  if (n) clearField($('[data-field="image"]', form));
  updateSizeNote();
}

// ------------------------------------------------------------------ checking and submitting

function submitLabel() {
  const n = chosen.length;
  const verb = sdMode() ? "SD upscale" : "Upscale";
  $("#extras-submit span").textContent = n > 1 ? `${verb} ${n} images` : verb;
}

function clearField(wrapper) {
  if (!wrapper) return;
  wrapper.classList.remove("invalid");
  for (const el of $$(".field-error", wrapper)) el.remove();
}

function showFormError(message) {
  const error = $("#extras-error");
  error.textContent = message;
  error.hidden = !message;
}

function invalid(name, message) {
  const wrapper = fieldElement(form, name);
  if (!wrapper) return false;
  markInvalid(wrapper, message);
  if (wrapper.dataset.field === "image") $("#extras-drop").focus({ preventScroll: true });
  return true;
}

const labelOf = (el) => el.closest(".field")?.querySelector("label, span")?.textContent.trim() || el.name;

/** What the browser can tell before anything is uploaded: [field, message] of the first problem. */
function problem(settings) {
  if (!chosen.length) return ["image", "Choose an image to upscale first (PNG, JPEG or WebP)."];
  const visible = (el) => !el.closest("[hidden]") && !el.disabled;
  for (const el of form.elements) {
    if (el.type !== "number" || !visible(el)) continue;
    // any value in range will do (the arrows' step is only a convenience)
    const value = Number(el.value);
    if (el.value === "" || el.validity.badInput || !Number.isFinite(value)) return [el.name, `${labelOf(el)}: enter a number.`];
    if (value < Number(el.min) || value > Number(el.max)) {
      return [el.name, `${labelOf(el)}: must be between ${el.min} and ${el.max}${el.name === "upscaling_resize" ? " (×1 to ×16)" : ""}.`];
    }
    if (el.step === "1" || el.name === "upscaling_resize_w" || el.name === "upscaling_resize_h") {
      if (!Number.isInteger(value)) return [el.name, `${labelOf(el)}: a whole number of pixels.`];
    }
  }
  if (sdMode()) {
    if (!settings.upscaler) return ["upscaler", "Choose an upscaler."];
    for (const item of chosen) {
      if (!sdOutputSize(item.width, item.height, settings.scale)) return ["scale", `${item.name}: no size to scale it to.`];
    }
    return null;
  }
  if (!settings.upscaler_1) return ["upscaler_1", "Choose an upscaler."];
  for (const item of chosen) {
    const out = outputSizeFor(item.width, item.height, settings);
    if (!out) return [settings.resize_mode === "scale_to" ? "upscaling_resize_w" : "upscaling_resize", `${item.name}: no size to scale it to.`];
  }
  return null;
}

async function uploadInput(item) {
  const headers = { "content-type": item.type, accept: "application/json" };
  if (auth.key) headers.authorization = `Bearer ${auth.key}`;
  let response;
  try {
    response = await fetch(apiUrl("v1/inputs"), { method: "POST", headers, body: item.file });
  } catch {
    throw new ApiError(0, "network_error", "the server cannot be reached — is sdfleet running?");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = data?.error || {};
    if (response.status === 401) window.dispatchEvent(new CustomEvent("sdfleet:auth-required", { detail: new ApiError(401, err.code || "unauthorized", err.message || "unauthorized") }));
    throw new ApiError(response.status, err.code || "upload_failed", `${item.name}: ${err.message || response.statusText || response.status}`, "image");
  }
  return data.ref;
}

/** The job body for one image (its input already uploaded as `ref`). */
function jobBody(settings, item, ref) {
  if (sdMode()) {
    return {
      kind: "sd_upscale",
      params: { image: ref, ...settings, generation: { ...settings.generation } },
      labels: { extras: "1", file: item.name.slice(-200) },
    };
  }
  return {
    kind: "upscale",
    params: { image: ref, ...settings },
    labels: { extras: "1", file: item.name.slice(-200) },
  };
}

export async function submit(event) {
  event?.preventDefault();
  const button = $("#extras-submit");
  const label = $("span", button);
  clearInvalid(form);
  showFormError("");
  const settings = sdMode() ? readSd() : readSettings();
  const found = problem(settings);
  if (found) {
    invalid(...found);
    return;
  }
  button.disabled = true;
  const batch = [...chosen];
  try {
    const refs = [];
    for (const [i, item] of batch.entries()) {
      label.textContent = batch.length > 1 ? `Uploading ${i + 1}/${batch.length}…` : "Uploading…";
      refs.push(await uploadInput(item));
    }
    label.textContent = "Submitting…";
    const body = { jobs: batch.map((item, i) => jobBody(settings, item, refs[i])) };
    const { jobs } = await api("v1/jobs", { method: "POST", body });
    for (let i = jobs.length - 1; i >= 0; i -= 1) addCard(jobs[i], batch[i]); // the first image on top
    emit("job-submitted", jobs[0]); // once: the badge and the quota meter re-read the lists
    // the originals stay as the cards' "before"; the list empties for the next batch
    chosen.length = 0;
    showFiles();
  } catch (err) {
    if (err instanceof ApiError && err.field) {
      const which = /^jobs\.(\d+)\./.exec(err.field);
      const item = which ? batch[Number(which[1])] : null;
      const message = item && batch.length > 1 && !err.message.includes(item.name) ? `${item.name}: ${err.message}` : err.message;
      if (invalid(err.field, message)) return;
    }
    showFormError(err instanceof ApiError ? `${err.code}: ${err.text}` : String(err?.message || err));
  } finally {
    button.disabled = false;
    submitLabel();
  }
}

// ------------------------------------------------------------------ result cards

/** Show a job: new ones on top; `older` ones (from an earlier visit) below what is there. */
function addCard(job, source, { older = false } = {}) {
  const card = new ExtrasCard(job, source);
  $("#extras-empty")?.remove();
  if (older) {
    cards.push(card);
    results.append(card.element);
  } else {
    cards.unshift(card);
    results.prepend(card.element);
  }
  while (cards.length > MAX_CARDS) cards.pop().destroy();
}

let recentShown = false;

/** My latest upscale jobs, from an earlier visit: their results (the originals stayed in that browser tab). */
async function showRecent() {
  if (recentShown) return;
  recentShown = true;
  try {
    const lists = await Promise.all(["upscale", "sd_upscale"].map((kind) => api("v1/jobs", { query: { kind, limit: 4 } })));
    const jobs = lists
      .flatMap((l) => l.jobs)
      .filter((j) => !j.parent_id) // an SD upscale's own upscale step is shown as the SD upscale
      .sort((a, b) => b.created_at - a.created_at)
      .slice(0, 4);
    for (const job of jobs) {
      if (cards.some((c) => c.job.id === job.id)) continue;
      const name = job.labels?.file || (job.kind === "sd_upscale" ? `SD upscale with ${job.params.upscaler}` : `Upscale with ${job.params.upscaler_1}`);
      addCard(job, { name, url: null }, { older: true });
    }
  } catch (err) {
    recentShown = false;
    if (err.status !== 401) showError(err, "Recent upscales");
  }
}

class ExtrasCard {
  constructor(job, source) {
    this.job = job;
    this.source = source;
    const p = job.params;
    const sd = job.kind === "sd_upscale";
    this.expected = (sd ? sdOutputSize(p.input_width, p.input_height, p.scale) : outputSizeFor(p.input_width, p.input_height, p)) || [p.input_width, p.input_height];
    this.bar = h("div.progress-fill");
    this.progress = h("div.progress", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": "Progress" }, this.bar);
    this.status = h("span.run-status", "Queued");
    this.badge = h("span.state-badge.queued", "queued");
    this.cancelButton = h("button.secondary.small", { type: "button", onclick: () => this.cancel() }, icon("stop"), h("span", "Cancel"));
    const placeholder = h(
      "div.tile.placeholder.extras-placeholder",
      { style: { aspectRatio: `${this.expected[0]} / ${this.expected[1]}` } },
      source.url ? h("img.extras-ghost", { src: source.url, alt: "" }) : null,
    );
    placeholder.style.setProperty("--ratio", String(this.expected[0] / this.expected[1]));
    this.body = h("div.extras-body", placeholder);
    this.actions = h("div.extras-actions");
    this.notes = h("div");
    const how = sd ? `×${p.scale}` : p.resize_mode === "scale_to" ? `to ${p.upscaling_resize_w}×${p.upscaling_resize_h}${p.upscaling_crop ? " (crop)" : ""}` : `×${p.upscaling_resize}`;
    const second = !sd && p.extras_upscaler_2_visibility > 0 ? ` + ${p.upscaler_2} ${Math.round(p.extras_upscaler_2_visibility * 100)}%` : "";
    this.element = h(
      "article.run-card.extras-card",
      { dataset: { jobId: job.id, state: job.state } },
      h(
        "header.run-head",
        h(
          "div.run-title",
          h("p.run-prompt", { title: source.name }, source.name),
          h(
            "p.run-meta",
            sd
              ? `SD upscale · ${p.upscaler} · ${how} · denoising ${p.generation?.denoising_strength} · ${p.generation?.width}×${p.generation?.height} tiles · ${p.input_width}×${p.input_height} → ${sizeText(this.expected)}`
              : `${p.upscaler_1}${second} · ${how} · ${p.input_width}×${p.input_height} → ${sizeText(this.expected)}`,
          ),
        ),
        this.badge,
        this.cancelButton,
      ),
      this.progress,
      h("div.run-line", this.status),
      this.notes,
      this.body,
      this.actions,
    );
    this.unwatch = watchJob(job, (live, event) => this.update(live, event));
  }

  async cancel() {
    this.cancelButton.disabled = true;
    this.status.textContent = "Canceling…";
    try {
      await api(`v1/jobs/${encodeURIComponent(this.job.id)}/cancel`, { method: "POST" });
    } catch (err) {
      this.cancelButton.disabled = false;
      showError(err, "Cancel");
    }
  }

  update(live, event) {
    this.live = live;
    this.element.dataset.state = live.state;
    this.badge.className = `state-badge ${live.state}`;
    this.badge.textContent = live.state;
    if (live.state === "queued") {
      this.bar.style.width = "0%";
      this.progress.classList.remove("indeterminate");
      this.status.textContent = live.reason ? `Waiting: ${live.reason}` : "Queued — waiting for a worker";
    } else if (live.state === "running") {
      const fraction = live.total ? live.step / live.total : null;
      this.progress.classList.toggle("indeterminate", fraction === null);
      this.bar.style.width = fraction === null ? "" : `${(fraction * 100).toFixed(1)}%`;
      if (fraction !== null) this.progress.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
      const elapsed = live.startedAt ? Date.now() / 1000 - live.startedAt : null;
      if (!this.cancelButton.disabled) {
        this.status.textContent = [
          live.total ? `Tile ${live.step}/${live.total}` : "Upscaling",
          live.worker ? `on ${live.worker}` : null,
          elapsed !== null && elapsed >= 1 ? duration(elapsed) : null,
        ].filter(Boolean).join(" · ");
      }
    }
    if (event.type === "done") this.finish(live);
  }

  finish(live) {
    this.cancelButton.hidden = true;
    this.progress.classList.remove("indeterminate");
    const job = live.job;
    if (!job) {
      this.status.textContent = live.error?.message || "Could not read the job";
      return;
    }
    this.job = job;
    const output = job.outputs[0];
    if (job.state !== "succeeded" || !output) {
      this.bar.style.width = "0%";
      render(this.body);
      const error = job.error || live.error;
      this.status.textContent = job.state === "canceled" ? "Canceled" : `Failed${error ? `: ${error.message || error.code}` : ""}`;
      this.status.classList.toggle("error", job.state !== "canceled");
      return;
    }
    this.bar.style.width = "100%";
    this.progress.setAttribute("aria-valuenow", "100");
    const took = job.finished_at && job.started_at ? job.finished_at - job.started_at : null;
    const info = job.result?.info || {};
    const [w, hgt] = info.width && info.height ? [info.width, info.height] : this.expected;
    // the original is at hand for what was chosen in this visit: a before/after split; else the result alone
    const compare = this.source.url
      ? compareView({ before: this.source.url, after: output.url, width: w, height: hgt, label: this.source.name })
      : resultOnly(output.url, w, hgt, this.source.name);
    this.compare = compare;
    const size = h("span.extras-out-size", `${w}×${hgt}`);
    compare.afterImg.addEventListener("load", () => {
      size.textContent = `${compare.afterImg.naturalWidth}×${compare.afterImg.naturalHeight}`;
    });
    render(this.body, compare.element);
    const notes = Object.entries(info).filter(([k]) => k.startsWith("note")).map(([, v]) => String(v));
    render(this.notes, notes.length ? h("ul.notes", notes.map((n) => h("li", n))) : null);
    this.status.textContent = "";
    this.status.append(
      "Done · ",
      size,
      ` px (from ${this.job.params.input_width}×${this.job.params.input_height})`,
      took !== null ? ` · in ${duration(took)}` : "",
      live.worker ? ` · on ${live.worker}` : "",
      job.cost_usd ? ` · ${usd(job.cost_usd)}` : "",
    );
    const ext = (output.content_type || "image/png").split("/")[1].replace("jpeg", "jpg");
    const filename = `${this.source.name.replace(/^.*\//, "").replace(/\.[^.]*$/, "") || "image"}-${w}x${hgt}.${ext}`;
    const item = { url: output.url, title: `${this.source.name} · ${w}×${hgt}`, infotext: output.infotext, job, output };
    render(
      this.actions,
      compare.toggle || null,
      h(
        "a.secondary.small.extras-download",
        {
          href: output.url,
          download: filename,
          onclick: (e) => {
            e.preventDefault();
            download(output.url, filename).catch((err) => showError(err, "Download"));
          },
        },
        icon("download"),
        h("span", "Download"),
      ),
      h("button.secondary.small", { type: "button", onclick: () => emit("use-image", { url: output.url }) }, icon("send"), h("span", "Send to img2img")),
      h("button.secondary.small", { type: "button", onclick: () => openLightbox([item], 0) }, icon("expand"), h("span", "Open")),
    );
  }

  destroy() {
    this.unwatch();
    this.element.remove();
    if (this.source.url && !chosen.some((c) => c.url === this.source.url)) URL.revokeObjectURL(this.source.url);
  }
}

/** A result without its original (chosen in an earlier visit): the picture alone, in the same frame. */
function resultOnly(url, width, height, label) {
  const afterImg = h("img.compare-after", { src: url, alt: `${label}, upscaled`, decoding: "async" });
  const element = h("div.compare.result-only", { style: { aspectRatio: `${width} / ${height}` }, title: "The original was chosen in an earlier visit: only the result is shown" }, afterImg);
  element.style.setProperty("--ratio", String(width / height));
  afterImg.addEventListener("load", () => {
    element.style.aspectRatio = `${afterImg.naturalWidth} / ${afterImg.naturalHeight}`;
    element.style.setProperty("--ratio", String(afterImg.naturalWidth / afterImg.naturalHeight));
  });
  return { element, afterImg, toggle: null };
}

// ------------------------------------------------------------------ persistence

const save = debounce(() => {
  const el = form.elements;
  const values = { resize_mode: mode(), extras_mode: extrasMode() };
  for (const name of SETTINGS) values[name] = el[name].type === "checkbox" ? el[name].checked : el[name].value;
  localStorage.setItem(STORAGE, JSON.stringify(values));
}, 300);

function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE) || "{}");
    const el = form.elements;
    for (const name of SETTINGS) {
      if (!(name in saved)) continue;
      if (el[name].type === "checkbox") el[name].checked = Boolean(saved[name]);
      else if (el[name].tagName === "SELECT") setSelect(el[name], saved[name]);
      else el[name].value = saved[name];
      el[name].dispatchEvent(new Event("input", { bubbles: true }));
    }
    if (saved.resize_mode === "scale_by" || saved.resize_mode === "scale_to") el.resize_mode.value = saved.resize_mode;
    if (saved.extras_mode === "upscale" || saved.extras_mode === "sd_upscale") el.extras_mode.value = saved.extras_mode;
  } catch {
    localStorage.removeItem(STORAGE);
  }
}

// ------------------------------------------------------------------ wiring

export function initExtras() {
  pairSliders(form);
  dropZone($("#extras-drop"), $("#extras-file"), (files) => addFiles(files).catch((err) => showError(err, "Images")));
  $("#extras-folder-button").addEventListener("click", () => $("#extras-folder").click());
  $("#extras-folder").addEventListener("change", () => {
    const input = $("#extras-folder");
    addFiles(input.files).catch((err) => showError(err, "Images"));
    input.value = "";
  });
  $("#extras-clear").addEventListener("click", () => {
    while (chosen.length) removeAt(chosen.length - 1);
  });
  $("#extras-swap").addEventListener("click", () => {
    const { upscaling_resize_w: w, upscaling_resize_h: hgt } = form.elements;
    [w.value, hgt.value] = [hgt.value, w.value];
    updateSizeNote();
    save();
  });
  document.addEventListener("paste", (e) => {
    if ($("#tab-extras").hidden || e.target.matches("textarea, input")) return;
    const files = [...(e.clipboardData?.files || [])].filter((f) => imageType(f));
    if (files.length) addFiles(files).catch((err) => showError(err, "Images"));
  });
  form.addEventListener("input", (e) => {
    clearField(e.target.closest(".field"));
    showFormError("");
    updateSizeNote();
    save();
  });
  form.addEventListener("change", () => {
    updateSizeNote();
    save();
  });
  form.addEventListener("submit", submit);
  onCatalog(fillPickers);
  updateSizeNote();
  window.addEventListener("sdfleet:key-changed", () => {
    recentShown = false;
    if (!$("#tab-extras").hidden) showRecent();
  });
  return {
    submit,
    shown() {
      updateSizeNote(); // the SD upscale's settings from Generate may have changed
      showRecent();
    },
  };
}
