// The Generate tab: prompt editors, model/sampler pickers, size, seed, batch, hires fix, img2img
// and inpainting, and the runs it submitted (newest first), each followed live.
import { api } from "../api.js";
import { $, $$, h, render, debounce, dropZone } from "../dom.js";
import { on, emit } from "../bus.js";
import { catalog, onCatalog } from "../catalog.js";
import { promptEditor } from "../prompt-editor.js";
import { MaskEditor } from "../mask-editor.js";
import { pairSliders, readFields, writeFields, setSelect, fieldElement, markInvalid, clearInvalid } from "../form.js";
import { RunCard } from "../run-card.js";
import { blobToDataUrl, urlToDataUrl } from "../images.js";
import { showError, toast } from "../toast.js";
import { initControlNetPanel, controlnetUnits } from "../controlnet-panel.js";
import { initScriptPanel, onScriptChange, setScriptMode, selectedScript, scriptArgs, argElement, ScriptRunCard } from "../script-panel.js";

const STORAGE = "sdfleet.generate";
const MAX_RUNS = 8;
const MAX_SOURCE_SIDE = 1024;

const form = $("#gen-form");
const results = $("#gen-results");
const runs = [];
const mask = new MaskEditor();
let editors = {};
let initImage = null; // {dataUrl, width, height}
let lastSeed = null;

// ------------------------------------------------------------------ pickers

/** Replace a select's options ([value, label, title]), keeping its value. */
function fillSelect(select, options) {
  const current = select.value;
  render(select, options.map(([value, label, title]) => h("option", { value, title }, label)));
  if (current !== "") setSelect(select, current);
}

const modelOption = (m) => [m.name, m.arch ? `${m.name} · ${m.arch}` : m.name, m.description];

function fillPickers() {
  const el = form.elements;
  fillSelect(el.sampler_name, catalog.samplers.map((s) => [s.name, s.name]));
  fillSelect(el.scheduler, catalog.schedulers.map((s) => [s.name, s.label]));
  const fallback = catalog.checkpoints.length ? "Worker default" : "Worker default (registry empty)";
  fillSelect(el.model, [["", fallback], ...catalog.checkpoints.map(modelOption)]);
  fillSelect(el.vae, [["", "Automatic"], ...catalog.vaes.map(modelOption)]);
  if (catalog.upscalers.length) fillHiresUpscalers(el.hr_upscaler);
  showRestoreFaces();
  const loraSelect = $("#lora-select");
  fillSelect(
    loraSelect,
    catalog.loras.length
      ? catalog.loras.map((m) => [modelOption(m)[0], modelOption(m)[1], m.trigger_words.join(", ")])
      : [["", "No LoRAs in the registry"]],
  );
  loraSelect.disabled = !catalog.loras.length;
  const lora = catalog.loras.find((m) => m.name === loraSelect.value);
  if (lora) $("#lora-weight").value = lora.default_weight;
  $("#lora-insert").disabled = !catalog.loras.length;
  $("#lora-weight").disabled = !catalog.loras.length;
}

/** The hires fix's upscalers, grouped: latent modes, the built-in resizes, the registered upscaler models. */
function fillHiresUpscalers(select) {
  const current = select.value;
  const nets = catalog.pixelUpscalers.filter((u) => u.model_name || u.model_path);
  const resizes = catalog.pixelUpscalers.filter((u) => !nets.includes(u));
  const group = (label, names) => (names.length ? h("optgroup", { label }, names.map((name) => h("option", { value: name }, name))) : null);
  render(
    select,
    group("Latent", catalog.latentUpscalers),
    group("Resize", resizes.map((u) => u.name)),
    group("Upscaler models", nets.map((u) => u.name)),
  );
  if (current !== "") setSelect(select, current);
}

/** "Restore faces" needs a registered face restorer; without one it is off and says why. */
function showRestoreFaces() {
  const box = form.elements.restore_faces;
  const none = !catalog.faceRestorers.length;
  box.disabled = none;
  if (none) box.checked = false;
  const label = box.closest(".switch");
  label.title = none
    ? "No face restorer is registered on this server (GET /sdapi/v1/face-restorers lists none): sdfleet models add NAME FILE --kind face_restorer"
    : `Restore faces with ${catalog.faceRestorers.map((f) => f.name).join(" or ")}`;
  $("#restore-faces-note").textContent = none ? "no face restorer registered" : "";
}

function insertLora() {
  const name = $("#lora-select").value;
  const lora = catalog.loras.find((m) => m.name === name);
  if (!lora) return;
  const weight = Number($("#lora-weight").value || lora.default_weight || 1);
  const words = lora.trigger_words.length ? `, ${lora.trigger_words.join(", ")}` : "";
  editors.prompt.insert(`<lora:${lora.name}:${Math.round(weight * 100) / 100}>${words}`);
  save();
}

// ------------------------------------------------------------------ mode, source image, mask

const mode = () => form.elements.mode.value;

function applyMode() {
  const m = mode();
  const panel = $("#img2img-panel");
  panel.hidden = m === "txt2img";
  for (const el of $$(".inpaint-only", panel)) el.hidden = m !== "inpaint";
  $("#init-drop").hidden = Boolean(initImage);
  $("#init-view").hidden = !initImage;
  $("#init-plain").hidden = m === "inpaint";
  $("#mask-slot").hidden = m !== "inpaint";
  $("#gen-submit span").textContent = m === "txt2img" ? "Generate" : m === "img2img" ? "Generate img2img" : "Inpaint";
  setScriptMode(m);
  showScriptHint(selectedScript());
}

/** Name the chosen script under the Generate button. */
function showScriptHint(script) {
  const hint = $("#gen-script-hint");
  hint.hidden = !script;
  hint.textContent = !script ? "" : script.xyz ? "X/Y/Z plot: opens its tab" : `with the script ${script.title}`;
  if (script) $("#gen-submit").setAttribute("aria-describedby", "gen-script-hint");
  else $("#gen-submit").removeAttribute("aria-describedby");
}

function setMode(m) {
  form.elements.mode.value = m;
  applyMode();
  save();
}

function fitSize(width, height) {
  const scale = Math.min(1, MAX_SOURCE_SIDE / Math.max(width, height));
  const round8 = (v) => Math.max(64, Math.round((v * scale) / 8) * 8);
  return [round8(width), round8(height)];
}

/** Use an image (data URL) as the img2img source; the size follows it (multiples of 8). */
async function setInitImage(dataUrl) {
  const img = new Image();
  img.src = dataUrl;
  await img.decode();
  initImage = { dataUrl, width: img.naturalWidth, height: img.naturalHeight };
  $("#init-image").src = dataUrl;
  await mask.setImage(dataUrl);
  const [w, hgt] = fitSize(img.naturalWidth, img.naturalHeight);
  writeFields(form, { width: w, height: hgt });
  $("#init-info").textContent = `${img.naturalWidth}×${img.naturalHeight} · output ${w}×${hgt}`;
  if (mode() === "txt2img") setMode("img2img");
  applyMode();
}

async function takeFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    toast("That is not an image file.", { kind: "error" });
    return;
  }
  try {
    await setInitImage(await blobToDataUrl(file));
  } catch (err) {
    showError(err, "Image");
  }
}

function clearInitImage() {
  initImage = null;
  $("#init-image").removeAttribute("src");
  applyMode();
}

function bindDropzone() {
  dropZone($("#init-drop"), $("#init-file"), (files) => takeFile(files[0]));
  $("#init-remove").addEventListener("click", clearInitImage);
  document.addEventListener("paste", (e) => {
    if ($("#tab-generate").hidden || e.target.matches("textarea, input")) return;
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) takeFile(file);
  });
}

// ------------------------------------------------------------------ the request

/** The job the form describes: {kind, params, priority}; `images: false` leaves out the source
 * image and mask (cheap, for summaries). */
export function currentRequest({ images = true } = {}) {
  const m = mode();
  const params = readFields(form);
  if (!params.restore_faces) delete params.restore_faces; // sent only when asked for
  if (!params.enable_hr) {
    for (const key of Object.keys(params)) if (key.startsWith("hr_")) delete params[key];
  }
  const kind = m === "txt2img" ? "txt2img" : "img2img";
  if (kind === "txt2img") {
    for (const el of $("#img2img-panel").querySelectorAll("[name]")) delete params[el.name];
  } else {
    if (m !== "inpaint") {
      for (const el of $$(".inpaint-only [name]")) delete params[el.name];
    }
    if (initImage && images) params.init_images = [initImage.dataUrl];
    if (m === "inpaint" && initImage && images && mask.hasMask()) params.mask = mask.toDataUrl();
  }
  const units = images ? controlnetUnits() : [];
  if (units.length) params.controlnet = units;
  const priority = Number(form.querySelector("[data-job=priority]").value || 0);
  return { kind, params, priority };
}

function checkLocally(request) {
  const m = mode();
  if (m !== "txt2img" && !request.params.init_images) {
    markInvalid($("#img2img-panel"), "Choose a source image first.");
    return false;
  }
  if (m === "inpaint" && !request.params.mask) {
    markInvalid($("#mask-slot"), "Paint the area to repaint on the image first.");
    return false;
  }
  return true;
}

/** Show a run: new submissions go on top, older runs shown at start-up below what is there. */
function addRun(job, { older = false } = {}) {
  const card = new RunCard(job, {
    onSeed: (seed) => {
      lastSeed = seed;
      $("#seed-reuse").disabled = false;
      $("#seed-reuse").title = `Reuse the last image's seed (${seed})`;
    },
  });
  if (older) {
    runs.push(card);
    results.append(card.element);
  } else {
    runs.unshift(card);
    results.prepend(card.element);
  }
  $(".results-empty", results)?.remove();
  while (runs.length > MAX_RUNS) runs.pop().destroy();
  return card;
}

/** Show a script's run on top, like a generation's. */
function addScriptRun(card) {
  runs.unshift(card);
  results.prepend(card.element);
  $(".results-empty", results)?.remove();
  while (runs.length > MAX_RUNS) runs.pop().destroy();
}

function removeRun(card) {
  const i = runs.indexOf(card);
  if (i >= 0) runs.splice(i, 1);
  card.destroy();
}

/** Run the chosen A1111 script over the form's settings (POST /sdapi/v1/txt2img or img2img with
 * script_name and script_args): a busy card until the call answers, then its grid and images. A bad
 * argument (`script_args.N`) is shown under its input, any other field as Generate shows it. */
async function runScript(script, request) {
  const card = new ScriptRunCard({ script, kind: request.kind, params: request.params, args: scriptArgs() });
  addScriptRun(card);
  emit("job-submitted", null);
  try {
    await card.run();
  } catch (err) {
    const arg = /^script_args\.(\d+)/.exec(err?.field || "");
    const message = String(err?.message || err).replace(/^script_args\.\d+: /, "");
    const marked = arg ? markInvalid(argElement(Number(arg[1])), message) : err?.field ? markInvalid(fieldElement(form, err.field), err.message) : false;
    if (marked && err.status >= 400 && err.status < 500) removeRun(card); // nothing ran: the field says why
    showError(err, script.title);
  } finally {
    emit("job-finished", null);
  }
}

/** Submit what the form says. */
export async function generate() {
  clearInvalid(form);
  const request = currentRequest();
  if (!checkLocally(request)) return;
  const script = selectedScript();
  if (script?.xyz) {
    emit("show-tab", "xyz");
    toast("The X/Y/Z plot runs from its own tab, over this form's settings.");
    return;
  }
  if (script) {
    await runScript(script, request);
    return;
  }
  const button = $("#gen-submit");
  button.disabled = true;
  try {
    const job = await api("v1/jobs", { method: "POST", body: request });
    addRun(job);
    emit("job-submitted", job);
  } catch (err) {
    showError(err, "Generate");
    if (err.field) markInvalid(fieldElement(form, err.field), err.message);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------ persistence and loading

const save = debounce(() => {
  const values = readFields(form);
  values.mode = mode();
  values.priority = form.querySelector("[data-job=priority]").value;
  localStorage.setItem(STORAGE, JSON.stringify(values));
}, 300);

// The API's own defaults for what the markup cannot say (the first sampler listed is not it).
const DEFAULTS = { sampler_name: "Euler a", scheduler: "automatic" };

// The size a checkpoint was trained at (from the registry), so a 64 px demo model is not asked for 512 px.
let nativeShown = null;

function nativeSide() {
  const name = form.elements.model.value;
  const model = catalog.checkpoints.find((c) => c.name === name) || (name === "" ? catalog.checkpoints[0] : null);
  return model?.resolution || null;
}

/** Follow the chosen checkpoint's native size — always when `force`, else only if the size was its
 * previous checkpoint's native one (a size the person chose stays). */
function followNativeSize(force = false) {
  const side = nativeSide();
  if (!side) return;
  const w = Number(form.elements.width.value);
  const hgt = Number(form.elements.height.value);
  if (force || (nativeShown !== null && w === nativeShown && hgt === nativeShown)) {
    writeFields(form, { width: side, height: side });
  }
  nativeShown = side;
  updateSizeUi();
}

function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE) || "{}");
    const { mode: m, priority, ...values } = saved;
    writeFields(form, { ...DEFAULTS, ...values });
    if (priority !== undefined) form.querySelector("[data-job=priority]").value = priority;
    if (m === "txt2img" || m === "img2img" || m === "inpaint") form.elements.mode.value = m;
  } catch {
    localStorage.removeItem(STORAGE);
  }
}

/** Load parameters into the form (from "reuse parameters", PNG info, the gallery…). */
function loadParams({ params, kind, priority } = {}) {
  const clean = { ...params };
  delete clean.init_images;
  delete clean.mask;
  // LoRAs given as a list (API clients do that) become prompt tags, which the page edits.
  for (const lora of clean.loras || []) {
    if (!String(clean.prompt || "").includes(`<lora:${lora.name}:`)) {
      clean.prompt = `${clean.prompt || ""} <lora:${lora.name}:${lora.weight ?? 1}>`.trim();
    }
  }
  delete clean.loras;
  const set = writeFields(form, clean);
  if (priority !== undefined) form.querySelector("[data-job=priority]").value = priority;
  if (kind === "txt2img") setMode("txt2img");
  else if (kind === "img2img" && !initImage) toast("These parameters are from an img2img job: choose a source image to run it as one.");
  editors.prompt.sync();
  editors.negative.sync();
  updateSizeUi();
  save();
  return set;
}

// ------------------------------------------------------------------ small controls

function updateSizeUi() {
  const w = Number(form.elements.width.value);
  const hgt = Number(form.elements.height.value);
  for (const b of $$("#size-presets button")) b.setAttribute("aria-pressed", String(b.dataset.size === `${w}x${hgt}`));
  const hr = form.elements.enable_hr.checked;
  const scale = Number(form.elements.hr_scale.value || 2);
  $("#hires-note").textContent = hr ? `${w}×${hgt} → ${Math.round(w * scale)}×${Math.round(hgt * scale)}` : "off";
}

function bindControls() {
  pairSliders(form);
  $("#size-presets").addEventListener("click", (e) => {
    const size = e.target.closest("button")?.dataset.size;
    if (!size) return;
    const [w, hgt] = size.split("x");
    writeFields(form, { width: w, height: hgt });
  });
  $("#size-swap").addEventListener("click", () => {
    const { width, height } = form.elements;
    writeFields(form, { width: height.value, height: width.value });
  });
  $("#seed-random").addEventListener("click", () => writeFields(form, { seed: -1 }));
  $("#seed-reuse").disabled = true;
  $("#seed-reuse").addEventListener("click", () => lastSeed !== null && writeFields(form, { seed: lastSeed }));
  $("#lora-insert").addEventListener("click", insertLora);
  form.elements.model.addEventListener("change", () => followNativeSize());
  $("#lora-select").addEventListener("change", () => {
    const lora = catalog.loras.find((m) => m.name === $("#lora-select").value);
    if (lora) $("#lora-weight").value = lora.default_weight;
  });
  for (const radio of form.elements.mode) radio.addEventListener("change", () => (applyMode(), save()));
  form.addEventListener("input", (e) => {
    e.target.closest(".invalid")?.classList.remove("invalid");
    updateSizeUi();
    save();
  });
  form.addEventListener("change", save);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    generate();
  });
  // The switch lives in the panel's <summary>: turning it on also shows the hires settings.
  form.elements.enable_hr.addEventListener("change", () => {
    if (form.elements.enable_hr.checked) $("#hires-panel").open = true;
  });
}

async function showRecent() {
  try {
    const { jobs } = await api("v1/jobs", { query: { limit: 6 } });
    const recent = jobs.filter((j) => !j.labels?.xyz && !j.labels?.script && (j.kind === "txt2img" || j.kind === "img2img")).slice(0, 3);
    for (const job of recent) if (!runs.some((r) => r.job?.id === job.id)) addRun(job, { older: true });
    if (!runs.length) {
      results.append(
        h(
          "div.results-empty",
          h("p.big", "Your images appear here."),
          h("p.muted", "Write a prompt and press Generate — or Ctrl+Enter."),
        ),
      );
    }
  } catch (err) {
    if (err.status !== 401) showError(err, "Recent jobs");
  }
}

export function initGenerate() {
  editors = {
    prompt: promptEditor(form.elements.prompt),
    negative: promptEditor(form.elements.negative_prompt),
  };
  $("#mask-slot").append(mask.element);
  initScriptPanel();
  initControlNetPanel();
  onScriptChange(showScriptHint);
  bindDropzone();
  bindControls();
  let restored = false;
  onCatalog(() => {
    fillPickers();
    if (!restored && catalog.samplers.length) {
      restored = true;
      const fresh = !localStorage.getItem(STORAGE);
      restore();
      followNativeSize(fresh);
      editors.prompt.sync();
      editors.negative.sync();
      applyMode();
      updateSizeUi();
    }
  });
  applyMode();
  updateSizeUi();
  on("use-params", (payload) => {
    loadParams(payload);
    emit("show-tab", "generate");
    toast("Parameters loaded into Generate", { kind: "ok" });
  });
  on("use-image", async ({ url, params }) => {
    try {
      emit("show-tab", "generate");
      await setInitImage(await urlToDataUrl(url));
      if (params) {
        const { prompt, negative_prompt, sampler_name, scheduler, steps, cfg_scale, model, vae } = params;
        loadParams({ params: { prompt, negative_prompt, sampler_name, scheduler, steps, cfg_scale, model, vae } });
      }
      if (mode() === "txt2img") setMode("img2img");
    } catch (err) {
      showError(err, "Send to img2img");
    }
  });
  showRecent();
  window.addEventListener("sdfleet:key-changed", () => {
    if (!runs.length) {
      $(".results-empty", results)?.remove();
      showRecent();
    }
  });
}
