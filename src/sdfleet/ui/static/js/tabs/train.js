// The Training tab: train a LoRA on a few dropped images (uploaded as inputs, then one train_lora
// job), and my training jobs with their progress (step, loss, ETA), checkpoints and resulting LoRA.
import { api, apiUrl, auth, ApiError } from "../api.js";
import { $, h, render, every } from "../dom.js";
import { catalog, onCatalog, refreshCatalog } from "../catalog.js";
import { emit } from "../bus.js";
import { showError, toast } from "../toast.js";

const form = $("#train-form");
const files = [];

async function uploadInput(file) {
  const headers = { "content-type": file.type || "application/octet-stream", accept: "application/json" };
  if (auth.key) headers.authorization = `Bearer ${auth.key}`;
  const response = await fetch(apiUrl("v1/inputs"), { method: "POST", headers, body: file });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = data?.error || {};
    throw new ApiError(response.status, err.code || "upload_failed", `${file.name}: ${err.message || response.statusText}`, err.field);
  }
  return data.ref;
}

function addFiles(list) {
  for (const file of list) if (/^image\/(png|jpeg|webp)$/.test(file.type)) files.push(file);
  render(
    $("#train-files"),
    files.map((file, i) =>
      h("li", h("span", file.name), h("button.link", { type: "button", onclick: () => { files.splice(i, 1); addFiles([]); } }, "remove")),
    ),
  );
  $("#train-count").textContent = files.length ? `${files.length} image${files.length === 1 ? "" : "s"}` : "";
}

function showModels() {
  const select = form.elements.base_model;
  const current = select.value;
  render(select, catalog.checkpoints.map((m) => h("option", { value: m.name }, `${m.name}${m.arch ? ` (${m.arch})` : ""}`)));
  if (current) select.value = current;
}

async function submit(event) {
  event.preventDefault();
  const button = $("#train-submit");
  const error = $("#train-error");
  error.hidden = true;
  if (!files.length) {
    error.textContent = "Add a few training images first.";
    error.hidden = false;
    return;
  }
  button.disabled = true;
  try {
    const trigger = form.elements.trigger.value.trim();
    const prompt = form.elements.instance_prompt.value.trim() || (trigger ? `a photo of ${trigger}` : "");
    const refs = [];
    for (const file of files) refs.push({ ref: await uploadInput(file) });
    const params = {
      name: form.elements.name.value.trim(),
      base_model: form.elements.base_model.value,
      images: refs,
      instance_prompt: prompt,
      trigger_word: trigger || null,
      steps: Number(form.elements.steps.value),
      resolution: Number(form.elements.resolution.value),
      rank: Number(form.elements.rank.value),
      learning_rate: Number(form.elements.learning_rate.value),
      checkpoint_every: Number(form.elements.checkpoint_every.value),
      keep_checkpoints: 2,
    };
    const job = await api("v1/jobs", { method: "POST", body: { kind: "train_lora", params } });
    toast(`Training job ${job.id.slice(-8)} queued`, { kind: "ok" });
    emit("job-submitted", job);
    files.length = 0;
    addFiles([]);
    await refreshJobs();
  } catch (err) {
    error.textContent = err.text || err.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function jobRow(job) {
  const p = job.progress;
  const detail = [];
  if (p.loss !== null && p.loss !== undefined) detail.push(`loss ${p.loss.toFixed(4)}`);
  if (p.it_per_s) detail.push(`${p.it_per_s.toFixed(2)} it/s`);
  if (job.state === "running" && p.eta_seconds !== null && p.eta_seconds !== undefined) detail.push(`ETA ${Math.round(p.eta_seconds)} s`);
  const checkpoints = job.checkpoints.map((c) => c.step).join(", ");
  const lora = job.result?.lora?.name;
  return h(
    "tr",
    { dataset: { state: job.state } },
    h("td", h("strong", job.params.name || "—"), h("div.muted", `${job.params.base_model} · ${job.id.slice(-8)}`)),
    h("td", job.state, job.interruptions ? h("div.muted", `resumed ${job.interruptions}×`) : null),
    h(
      "td.col-progress",
      h("div.progress.small", h("div.progress-fill", { style: { width: `${Math.round(p.fraction * 100)}%` } })),
      h("div.muted", `${p.step}/${p.total}${detail.length ? ` · ${detail.join(" · ")}` : ""}`),
    ),
    h("td", checkpoints ? `steps ${checkpoints}` : "—"),
    h("td", lora ? h("code", `<lora:${lora}:1>`) : job.error ? h("span.muted", job.error.message) : "—"),
    h(
      "td.col-actions",
      job.state === "queued" || job.state === "running"
        ? h("button.secondary", { type: "button", onclick: () => cancel(job.id) }, "Cancel")
        : null,
    ),
  );
}

async function cancel(id) {
  try {
    await api(`v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    await refreshJobs();
  } catch (err) {
    showError(err, "Cancel");
  }
}

let succeededBefore = null; // ids of succeeded jobs at the last refresh (null: not loaded yet)

async function refreshJobs() {
  const { jobs } = await api("v1/jobs", { query: { kind: "train_lora", limit: 50 } });
  render($("#train-body"), jobs.map(jobRow));
  $("#train-empty").hidden = jobs.length > 0;
  const succeeded = new Set(jobs.filter((j) => j.state === "succeeded").map((j) => j.id));
  // a new LoRA is in the registry: reload the pickers so Generate offers it
  if (succeededBefore && [...succeeded].some((id) => !succeededBefore.has(id))) refreshCatalog();
  succeededBefore = succeeded;
}

export function initTrain({ isActive }) {
  onCatalog(showModels);
  form.addEventListener("submit", submit);
  const drop = $("#train-drop");
  const input = $("#train-file");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
  $("#train-refresh").addEventListener("click", () => refreshJobs().catch((e) => showError(e, "Training")));
  every(2000, refreshJobs, isActive);
  return {
    shown() {
      refreshJobs().catch((e) => showError(e, "Training"));
    },
  };
}
