// The Training tab: train a LoRA on a few chosen images (uploaded as inputs, then one train_lora
// job), and my training jobs with their progress (step, loss, ETA), checkpoints and resulting LoRA.
import { api, apiUrl, auth, ApiError } from "../api.js";
import { $, $$, h, render, every, dropZone } from "../dom.js";
import { catalog, onCatalog, refreshCatalog } from "../catalog.js";
import { emit } from "../bus.js";
import { fieldElement, markInvalid, clearInvalid } from "../form.js";
import { duration } from "../format.js";
import { showError, toast } from "../toast.js";

const form = $("#train-form");
const IMAGE_TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp" };
const images = []; // the chosen training images (File)
const captions = new Map(); // file name without its extension → caption (from a same-named .txt file)

const extension = (name) => (/\.([^.]+)$/.exec(name)?.[1] || "").toLowerCase();
const stem = (name) => name.replace(/\.[^.]*$/, "");
const captionOf = (file) => captions.get(stem(file.name)) || null;

/** The image type of a chosen file (by its type, or by its extension when the system gives none). */
function imageType(file) {
  if (/^image\/(png|jpeg|webp)$/.test(file.type)) return file.type;
  return file.type && file.type !== "application/octet-stream" ? null : IMAGE_TYPES[extension(file.name)] || null;
}

async function uploadInput(file) {
  const headers = { "content-type": imageType(file), accept: "application/json" };
  if (auth.key) headers.authorization = `Bearer ${auth.key}`;
  let response;
  try {
    response = await fetch(apiUrl("v1/inputs"), { method: "POST", headers, body: file });
  } catch {
    throw new ApiError(0, "network_error", "the server cannot be reached — is sdfleet running?");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = data?.error || {};
    const message = `${file.name}: ${err.message || response.statusText || response.status}`;
    throw new ApiError(response.status, err.code || "upload_failed", message, "images");
  }
  return data.ref;
}

// ------------------------------------------------------------------ the chosen images

/** Add chosen or dropped files: images to train on, .txt files as the captions of same-named images. */
async function addFiles(list) {
  const chosen = [...list]; // a file input's list is emptied when the input is reset
  const skipped = [];
  for (const file of chosen) {
    if (imageType(file)) {
      if (!images.some((f) => f.name === file.name && f.size === file.size)) images.push(file);
    } else if (extension(file.name) === "txt") {
      captions.set(stem(file.name), (await file.text()).trim());
    } else {
      skipped.push(file.name);
    }
  }
  if (skipped.length) {
    toast(`${skipped.join(", ")}: not a PNG, JPEG or WebP image`, { kind: "error", title: "Skipped" });
  }
  showFiles();
}

function showFiles() {
  render(
    $("#train-files"),
    images.map((file, i) => {
      const caption = captionOf(file);
      return h(
        "li",
        h("span.file-name", { title: file.name }, file.name),
        caption ? h("span.caption", { title: caption }, caption) : null,
        h(
          "button.link",
          {
            type: "button",
            "aria-label": `Remove ${file.name}`,
            onclick: () => {
              images.splice(i, 1);
              showFiles();
            },
          },
          "remove",
        ),
      );
    }),
  );
  const n = images.length;
  const captioned = images.filter(captionOf).length;
  $("#train-count").textContent = n
    ? `· ${n} image${n === 1 ? "" : "s"}${captioned ? `, ${captioned} with a caption` : ""}`
    : "";
  if (n) clearField($('[data-field="images"]', form));
}

// ------------------------------------------------------------------ the form

// The checkpoint's native size (from the registry), so a 64 px model is not trained at 512 px.
let nativeShown = null;

function followNativeResolution() {
  const model = catalog.checkpoints.find((m) => m.name === form.elements.base_model.value);
  const side = model?.resolution;
  if (!side) return;
  const field = form.elements.resolution;
  // a resolution the person typed stays; the markup's default or the previous model's size follows
  const untouched = nativeShown === null ? field.value === field.defaultValue : Number(field.value) === nativeShown;
  if (untouched) field.value = String(side);
  nativeShown = side;
}

function showModels() {
  const select = form.elements.base_model;
  const current = select.value;
  render(
    select,
    catalog.checkpoints.length
      ? catalog.checkpoints.map((m) => h("option", { value: m.name }, `${m.name}${m.arch ? ` (${m.arch})` : ""}`))
      : h("option", { value: "" }, "No checkpoints in the registry"),
  );
  if (current && catalog.checkpoints.some((m) => m.name === current)) select.value = current;
  followNativeResolution();
}

function clearField(wrapper) {
  if (!wrapper) return;
  wrapper.classList.remove("invalid");
  for (const el of $$(".field-error", wrapper)) el.remove();
}

function showFormError(message) {
  const error = $("#train-error");
  error.textContent = message;
  error.hidden = !message;
}

/** Mark the field named `name` (a data-field, or an API field such as "params.steps") with `message`. */
function invalid(name, message) {
  const wrapper = fieldElement(form, name);
  if (!wrapper) return false;
  markInvalid(wrapper, message);
  if (wrapper.dataset.field === "images") $("#train-drop").focus({ preventScroll: true });
  return true;
}

const labelOf = (el) => el.closest(".field")?.querySelector("span")?.textContent.trim() || el.name;

/** What the browser can tell before anything is uploaded: [field, message] of the first problem. */
function problem() {
  if (!images.length) return ["images", "Add a few training images first (PNG, JPEG or WebP)."];
  if (!form.elements.base_model.value) return ["base_model", "There is no checkpoint to train on: register one first."];
  if (!form.elements.name.value.trim()) return ["name", "Name the LoRA: prompts use it as <lora:name:1>."];
  for (const el of form.elements) {
    if (el.type === "number" && !el.checkValidity()) {
      return [el.closest("[data-field]").dataset.field, `${labelOf(el)}: ${el.validationMessage}`];
    }
  }
  return null;
}

function number(name) {
  const value = form.elements[name].value;
  return value === "" ? undefined : Number(value); // empty: the API's default
}

async function submit(event) {
  event.preventDefault();
  const button = $("#train-submit");
  const label = $("span", button);
  clearInvalid(form);
  showFormError("");
  const found = problem();
  if (found) {
    invalid(...found);
    return;
  }
  button.disabled = true;
  try {
    const trigger = form.elements.trigger.value.trim();
    const prompt = form.elements.instance_prompt.value.trim() || (trigger ? `a photo of ${trigger}` : "");
    const refs = [];
    for (const [i, file] of images.entries()) {
      label.textContent = `Uploading ${i + 1}/${images.length}…`;
      const caption = captionOf(file);
      refs.push(caption ? { ref: await uploadInput(file), caption } : { ref: await uploadInput(file) });
    }
    label.textContent = "Submitting…";
    const params = {
      name: form.elements.name.value.trim(),
      base_model: form.elements.base_model.value,
      images: refs,
      instance_prompt: prompt,
      trigger_word: trigger || null,
      steps: number("steps"),
      resolution: number("resolution"),
      rank: number("rank"),
      learning_rate: number("learning_rate"),
      checkpoint_every: number("checkpoint_every"),
      keep_checkpoints: 2,
    };
    const job = await api("v1/jobs", { method: "POST", body: { kind: "train_lora", params } });
    toast(`Training ${params.name}: job ${job.id.slice(-8)} queued`, { kind: "ok" });
    emit("job-submitted", job);
    images.length = 0;
    captions.clear();
    showFiles();
    await refreshJobs().catch((e) => showError(e, "Training jobs"));
  } catch (err) {
    if (err instanceof ApiError && err.field && invalid(err.field, err.message)) return;
    showFormError(err instanceof ApiError ? `${err.code}: ${err.text}` : String(err?.message || err));
  } finally {
    button.disabled = false;
    label.textContent = "Train";
  }
}

// ------------------------------------------------------------------ my training jobs

const ACTIVE = new Set(["queued", "running"]);

function progressCell(job) {
  const p = job.progress;
  if (job.state === "queued" && !p.step) return h("span.muted", "not started");
  const running = job.state === "running";
  if (running && !p.total) return h("span.muted", "starting…");
  const detail = [];
  if (p.loss !== null && p.loss !== undefined) detail.push(`loss ${p.loss.toFixed(4)}`);
  if (running && p.step >= p.total) detail.push("saving the LoRA…");
  else if (running && p.it_per_s) detail.push(`${p.it_per_s.toFixed(2)} it/s`);
  if (running && p.step && p.step < p.total && Number.isFinite(p.eta_seconds)) detail.push(`ETA ${duration(p.eta_seconds)}`);
  const fraction = job.state === "succeeded" ? 1 : p.fraction;
  return [
    h("div.progress.small", h("div.progress-fill", { style: { width: `${Math.round(fraction * 100)}%` } })),
    h("div.muted.train-progress", `step ${p.step}/${p.total}${detail.length ? ` · ${detail.join(" · ")}` : ""}`),
  ];
}

function resultCell(job) {
  const lora = job.result?.lora;
  if (lora?.name) {
    return [
      h("code", `<lora:${lora.name}:1>`),
      h("div", h("button.link", { type: "button", onclick: () => useLora(job) }, "Use in Generate")),
    ];
  }
  if (lora?.problem) return h("div.error-text", lora.problem);
  if (job.state === "failed" && job.error) return h("div.error-text", `${job.error.code}: ${job.error.message}`);
  if (job.state === "canceled") return h("span.muted", "canceled");
  return "—";
}

function jobRow(job) {
  const canceling = job.cancel_requested && ACTIVE.has(job.state);
  const state = canceling ? "canceling" : job.state;
  return h(
    "tr",
    { dataset: { state: job.state, jobId: job.id } },
    h("td.col-job", h("strong", job.params.name || "—"), h("div.muted", `${job.params.base_model} · ${job.id.slice(-8)}`)),
    h(
      "td.col-state",
      h(`span.state-badge.${state}`, state),
      job.interruptions ? h("div.muted", `resumed ${job.interruptions}×`) : null,
      job.state === "queued" && job.wait_reason ? h("div.wait-reason", { title: job.wait_reason }, job.wait_reason) : null,
    ),
    h("td.col-progress", progressCell(job)),
    h("td.col-checkpoints", job.checkpoints.length ? `steps ${job.checkpoints.map((c) => c.step).join(", ")}` : "—"),
    h("td.train-result", resultCell(job)),
    h(
      "td.col-actions",
      ACTIVE.has(job.state) && !job.cancel_requested
        ? h("button.secondary.small", { type: "button", onclick: () => cancel(job.id) }, "Cancel")
        : null,
    ),
  );
}

async function useLora(job) {
  const name = job.result.lora.name;
  try {
    if (!catalog.loras.some((m) => m.name === name)) await refreshCatalog();
    const prompt = `<lora:${name}:1> ${job.params.instance_prompt || ""}`.trim();
    emit("use-params", { params: { prompt, model: job.params.base_model }, kind: "txt2img" });
  } catch (err) {
    showError(err, "Use in Generate");
  }
}

async function cancel(id) {
  try {
    await api(`v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    await refreshJobs();
  } catch (err) {
    showError(err, "Cancel");
  }
}

let states = null; // job id → state at the last refresh (null: not loaded yet)
let shownSignature = "";
let pending = false; // a training job of mine is queued or running
let lastRefresh = 0;

async function refreshJobs() {
  lastRefresh = Date.now();
  const { jobs } = await api("v1/jobs", { query: { kind: "train_lora", limit: 50 } });
  // re-render only when something changed (a row's buttons stay put under the pointer)
  const signature = JSON.stringify(
    jobs.map((j) => [j.id, j.state, j.progress, j.checkpoints, j.cancel_requested, j.wait_reason, j.result?.lora]),
  );
  if (signature !== shownSignature) {
    render($("#train-body"), jobs.map(jobRow));
    $("#train-empty").hidden = jobs.length > 0;
    shownSignature = signature;
  }
  pending = jobs.some((j) => ACTIVE.has(j.state));
  if (states) {
    const finished = jobs.filter((j) => ACTIVE.has(states.get(j.id)) && !ACTIVE.has(j.state));
    // a new LoRA is in the registry: reload the pickers so Generate offers it
    if (finished.some((j) => j.state === "succeeded")) refreshCatalog();
    for (const job of finished) {
      emit("job-finished", job); // the queue badge and the account's usage
      const name = job.params.name;
      if (job.state === "succeeded" && job.result?.lora?.name) toast(`LoRA ${name} is ready: <lora:${name}:1>`, { kind: "ok" });
      else if (job.state === "failed") toast(`${job.error?.message || "failed"}`, { kind: "error", title: `Training ${name}` });
    }
  }
  states = new Map(jobs.map((j) => [j.id, j.state]));
}

export function initTrain({ isActive }) {
  onCatalog(showModels);
  form.addEventListener("submit", submit);
  form.elements.base_model.addEventListener("change", followNativeResolution);
  form.elements.trigger.addEventListener("input", () => {
    form.elements.instance_prompt.placeholder = `a photo of ${form.elements.trigger.value.trim() || "zqx"}`;
  });
  form.addEventListener("input", (e) => {
    clearField(e.target.closest(".field"));
    showFormError("");
  });
  dropZone($("#train-drop"), $("#train-file"), (files) =>
    addFiles(files).catch((err) => showError(err, "Training images")),
  );
  $("#train-refresh").addEventListener("click", () => refreshJobs().catch((e) => showError(e, "Training")));
  // every second while a job trains and the tab is open; every 3 s in the background until it ends
  // (so Generate learns of the new LoRA); every 5 s on an idle open tab
  every(1000, async () => {
    const wait = pending ? (isActive() ? 1000 : 3000) : isActive() ? 5000 : Infinity;
    if (Date.now() - lastRefresh >= wait - 50) await refreshJobs();
  });
  return {
    shown() {
      refreshJobs().catch((e) => showError(e, "Training"));
    },
  };
}
