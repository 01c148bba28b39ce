// The Generate tab's Script section: A1111's selectable scripts (Prompt matrix, Prompts from file or
// textbox, Loopback, Poor man's outpainting, SD upscale), picked per mode from GET /sdapi/v1/scripts,
// their argument inputs built from GET /sdapi/v1/script-info (each wrapped in `[data-arg="N"]`, N its
// index in `script_args`), and a run card for the synchronous A1111 call they are submitted through.
// X/Y/Z plot is listed too but runs from its own tab, which does more than its script arguments can
// (cells fill in live, one job each, the values checked as they are typed).
import { api, ApiError } from "./api.js";
import { $, $$, h, icon, render } from "./dom.js";
import { catalog, onCatalog } from "./catalog.js";
import { pairSliders, setSelect } from "./form.js";
import { imageTile } from "./run-card.js";
import { duration, truncate } from "./format.js";
import { showError } from "./toast.js";

const STORAGE = "sdfleet.script";
const XYZ = "x/y/z plot";
const TITLES = {
  "prompt matrix": "Prompt matrix",
  "prompts from file or textbox": "Prompts from file or textbox",
  "x/y/z plot": "X/Y/Z plot",
  loopback: "Loopback",
  "poor man's outpainting": "Poor man's outpainting",
  "sd upscale": "SD upscale",
};
const HELP = {
  "prompt matrix": "Split the prompt with | : every combination of the parts after the first is one image, and a labelled grid comes first.",
  "prompts from file or textbox": "One image per line; a line may carry options: --prompt \"…\" --negative_prompt … --steps N --seed N --cfg_scale N --width N --height N --sampler_name …",
  loopback: "Each pass is fed the previous pass's image, the denoising strength moving to the final one.",
  "poor man's outpainting": "Grows the source image on the chosen sides and paints the new border, tile by tile.",
  "sd upscale": "Upscales the source image, then redraws it tile by tile (tiles are the width and height above) on every free worker.",
};

const root = $("#script-panel");
const select = $("#script-select");
const argsBox = $("#script-args");
const help = $("#script-help");

let scripts = { txt2img: [], img2img: [] }; // names per tab (selectable only), from /scripts ∩ /script-info
let infos = new Map(); // "txt2img:name" → [arg specs]
let tab = "txt2img";
let wanted = ""; // the script the person chose (kept while another mode does not offer it)
let loaded = false;
const listeners = [];

/** Call `fn(script)` whenever the chosen script (or its mode's list) changes. */
export const onScriptChange = (fn) => listeners.push(fn);

export const titleOf = (name) => TITLES[name] || name.charAt(0).toUpperCase() + name.slice(1);

function stored() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE) || "{}");
  } catch {
    return {};
  }
}

/** Load the scripts and their arguments (again after the API key changes). */
export async function loadScripts() {
  try {
    const [list, info] = await Promise.all([api("sdapi/v1/scripts"), api("sdapi/v1/script-info")]);
    infos = new Map();
    for (const script of info || []) {
      if (script.is_alwayson) continue;
      infos.set(`${script.is_img2img ? "img2img" : "txt2img"}:${script.name}`, script.args || []);
    }
    scripts = {
      txt2img: (list?.txt2img || []).filter((n) => infos.has(`txt2img:${n}`)),
      img2img: (list?.img2img || []).filter((n) => infos.has(`img2img:${n}`)),
    };
    loaded = true;
    if (!wanted) wanted = stored().name || "";
    fillPicker();
  } catch (err) {
    if (err.status !== 401) showError(err, "Scripts");
  }
}

/** Follow the Generate mode: txt2img's scripts, or img2img's (inpainting too). */
export function setScriptMode(mode) {
  const next = mode === "txt2img" ? "txt2img" : "img2img";
  if (next === tab && select.options.length) return;
  tab = next;
  if (loaded) fillPicker();
}

function fillPicker() {
  const names = scripts[tab];
  render(
    select,
    h("option", { value: "" }, "None"),
    names.map((n) => h("option", { value: n }, n === XYZ ? `${titleOf(n)} (its own tab)` : titleOf(n))),
  );
  const other = tab === "txt2img" ? "img2img" : "txt2img";
  const elsewhere = scripts[other].filter((n) => !names.includes(n)).map(titleOf);
  select.title = elsewhere.length ? `On ${other} only: ${elsewhere.join(", ")}` : "";
  select.value = names.includes(wanted) ? wanted : "";
  showArgs();
}

/** The chosen script: {name, title, args: [spec]}, or null for None. */
export function selectedScript() {
  const name = select.value;
  if (!name) return null;
  return { name, title: titleOf(name), args: infos.get(`${tab}:${name}`) || [], xyz: name === XYZ };
}

// ------------------------------------------------------------------ the argument inputs

const isHtml = (v) => typeof v === "string" && /^\s*</.test(v);
const plain = (html) => new DOMParser().parseFromString(html, "text/html").body.textContent.trim();

/** What kind of input an argument gets, from what /script-info says of it. */
function widget(name, spec) {
  const v = spec.value;
  if (typeof v === "boolean") return "bool";
  if (Array.isArray(v)) return spec.choices?.length ? "multi" : "skip";
  if (spec.choices?.length) return "choice";
  if (typeof v === "number") return "number";
  if (name === "sd upscale" && spec.label === "Upscaler") return "upscaler";
  if (isHtml(v)) return "info";
  if (/prompt inputs|list/i.test(spec.label || "")) return "textarea";
  return "text";
}

function argInput(name, spec, i, value) {
  const id = `sa-${i}`;
  const label = spec.label || `Argument ${i + 1}`;
  const data = { arg: String(i) };
  switch (widget(name, spec)) {
    case "bool":
      return h("label.switch", { dataset: data }, h("input", { type: "checkbox", id, checked: Boolean(value) }), h("span", label));
    case "choice":
      return h(
        "label.field",
        { dataset: data },
        h("span", label),
        h("select", { id }, spec.choices.map((c) => h("option", { value: c, selected: c === String(value) }, c))),
      );
    case "multi": {
      const on = new Set(Array.isArray(value) ? value.map(String) : []);
      return h(
        "fieldset.field.script-multi",
        { dataset: data, id },
        h("legend", label),
        h("div.chips-row", spec.choices.map((c) => h("label.check", h("input", { type: "checkbox", value: c, checked: on.has(c) }), h("span", c)))),
      );
    }
    case "number": {
      const attrs = { type: "number", id, value: String(value ?? ""), min: spec.minimum ?? null, max: spec.maximum ?? null, step: spec.step ?? "any" };
      if (spec.minimum === null || spec.maximum === null || spec.minimum === undefined || spec.maximum === undefined) {
        return h("label.field", { dataset: data }, h("span", label), h("input", attrs));
      }
      return h(
        "div.field.slider",
        { dataset: data },
        h("label", { for: id }, label),
        h(
          "div.slider-row",
          h("input", { type: "range", min: spec.minimum, max: spec.maximum, step: spec.step ?? "any", "data-for": id, "aria-label": `${label} slider` }),
          h("input", attrs),
        ),
      );
    }
    case "upscaler": {
      const el = h("select", { id });
      const names = catalog.pixelUpscalers.map((u) => u.name);
      render(el, (names.length ? names : ["None", "Lanczos", "Nearest"]).map((n) => h("option", { value: n }, n)));
      setSelect(el, value === "None" && names.includes("Lanczos") ? "Lanczos" : value);
      return h("label.field", { dataset: data }, h("span", label), el);
    }
    case "info":
      return h("p.muted.tiny.script-info", { dataset: { ...data, value: spec.value } }, plain(spec.value));
    case "textarea":
      return h(
        "label.field",
        { dataset: data },
        h("span", label),
        h("textarea", { id, rows: 4, spellcheck: "false", placeholder: "one prompt per line" }, String(value ?? "")),
      );
    case "text":
      return h("label.field", { dataset: data }, h("span", label), h("input", { id, type: "text", value: String(value ?? "") }));
    default:
      return h("span", { dataset: { ...data, skip: "1" }, hidden: true });
  }
}

function showArgs() {
  const script = selectedScript();
  for (const fn of listeners) fn(script);
  root.classList.toggle("active", Boolean(script));
  if (!script) {
    help.textContent = "";
    render(argsBox);
    return;
  }
  if (script.xyz) {
    help.textContent = "";
    render(
      argsBox,
      h(
        "p.notes.script-pointer",
        "The X/Y/Z plot has its own tab: axes with their values checked as you type, one job per cell, and the grid filling in as images arrive. It uses this form's settings.",
      ),
      h("a.secondary.small", { href: "#xyz" }, icon("grid"), h("span", "Open the X/Y/Z plot tab")),
    );
    return;
  }
  help.textContent = HELP[script.name] || "";
  const saved = stored().args?.[`${tab}:${script.name}`] || [];
  render(argsBox, script.args.map((spec, i) => argInput(script.name, spec, i, i < saved.length && saved[i] !== null ? saved[i] : spec.value)));
  pairSliders(argsBox);
}

/** The `script_args` the inputs say, in order. */
export function scriptArgs() {
  const script = selectedScript();
  if (!script) return [];
  return script.args.map((spec, i) => {
    const wrapper = argElement(i);
    if (!wrapper || wrapper.dataset.skip) return spec.value;
    if (wrapper.dataset.value !== undefined) return wrapper.dataset.value;
    if (wrapper.matches("fieldset")) return $$("input:checked", wrapper).map((el) => el.value);
    const el = wrapper.matches("input,select,textarea") ? wrapper : $("input:not([type=range]),select,textarea", wrapper);
    if (el.type === "checkbox") return el.checked;
    if (el.type === "number") return el.value === "" ? null : Number(el.value);
    return el.value;
  });
}

/** The wrapper of argument N (where its error is shown). */
export function argElement(index) {
  return $(`[data-arg="${CSS.escape(String(index))}"]`, argsBox);
}

function save() {
  const all = stored();
  all.name = wanted;
  const script = selectedScript();
  if (script && !script.xyz) {
    all.args = { ...(all.args || {}), [`${tab}:${script.name}`]: scriptArgs() };
  }
  localStorage.setItem(STORAGE, JSON.stringify(all));
}

export function initScriptPanel() {
  select.addEventListener("change", () => {
    wanted = select.value;
    showArgs();
    save();
  });
  argsBox.addEventListener("input", () => save());
  argsBox.addEventListener("change", () => save());
  // the SD upscale upscaler picker follows the registry
  onCatalog(() => {
    if (selectedScript()?.name === "sd upscale") {
      const el = $("select", argElement(2) || argsBox);
      if (el && el.options.length <= 3 && catalog.pixelUpscalers.length) showArgs();
    }
  });
  loadScripts();
  window.addEventListener("sdfleet:key-changed", loadScripts);
}

// ------------------------------------------------------------------ the A1111 request

const A1111_SAMPLES_FORMAT = { png: "png", jpeg: "jpg", webp: "webp" };

/** The Generate form's job (native GenerationSpec names) as an A1111 txt2img/img2img body. */
export function a1111Body(kind, params) {
  const p = params;
  const body = {};
  const copy = [
    "prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "sampler_name", "scheduler",
    "batch_size", "n_iter", "steps", "cfg_scale", "width", "height", "restore_faces",
  ];
  for (const key of copy) if (p[key] !== undefined && p[key] !== null) body[key] = p[key];
  const override = {};
  if (p.model) override.sd_model_checkpoint = p.model;
  if (p.vae) override.sd_vae = p.vae;
  if (p.clip_skip) override.CLIP_stop_at_last_layers = p.clip_skip;
  if (p.output_format) override.samples_format = A1111_SAMPLES_FORMAT[p.output_format] || "png";
  body.override_settings = override;
  body.override_settings_restore_afterwards = true;
  if (kind === "txt2img") {
    if (p.enable_hr) {
      Object.assign(body, { enable_hr: true, hr_scale: p.hr_scale, hr_upscaler: p.hr_upscaler, hr_second_pass_steps: p.hr_second_pass_steps });
      body.denoising_strength = p.hr_denoising_strength; // A1111's txt2img: the hires pass's strength
    }
  } else {
    Object.assign(body, {
      init_images: p.init_images,
      denoising_strength: p.denoising_strength,
      resize_mode: p.resize_mode ?? 0,
    });
    if (p.mask) {
      Object.assign(body, {
        mask: p.mask,
        mask_blur: p.mask_blur,
        inpainting_fill: p.inpainting_fill,
        inpaint_full_res: Boolean(p.inpaint_full_res),
        inpainting_mask_invert: p.inpainting_mask_invert ? 1 : 0,
      });
    }
  }
  body.send_images = true;
  body.save_images = false;
  return body;
}

// ------------------------------------------------------------------ the run card

const imageType = (b64) => (b64.startsWith("/9j/") ? "image/jpeg" : b64.startsWith("UklGR") ? "image/webp" : "image/png");

function sizeOf(url) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
    img.onerror = () => resolve([1, 1]);
    img.src = url;
  });
}

/**
 * One script call on the Generate tab: shown like a generation's run (the same card, tiles and viewer),
 * busy while the synchronous A1111 call runs (its progress read from /sdapi/v1/progress), then the grid
 * and the images it answered. Cancel hangs up, which cancels the script's jobs on the server.
 */
export class ScriptRunCard {
  constructor({ script, kind, params, args }) {
    this.script = script;
    this.kind = kind;
    this.params = params;
    this.args = args;
    this.abort = new AbortController();
    this.started = Date.now();
    this.fraction = null;
    this.bar = h("div.progress-fill");
    this.progress = h("div.progress.indeterminate", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": "Progress" }, this.bar);
    this.status = h("span.run-status", `Running ${script.title}…`);
    this.badge = h("span.state-badge.running", "running");
    this.cancelButton = h("button.secondary.small", { type: "button", onclick: () => this.cancel() }, icon("stop"), h("span", "Cancel"));
    this.notes = h("div");
    this.grid = h("div.run-grid", h("div.tile.placeholder", { style: { aspectRatio: `${params.width || 1} / ${params.height || 1}` } }, h("span.placeholder-pct")));
    const p = params;
    this.element = h(
      "article.run-card.script-card",
      { dataset: { state: "running", script: script.name } },
      h(
        "header.run-head",
        h(
          "div.run-title",
          h("p.run-prompt", { title: p.prompt }, truncate(p.prompt || "(no prompt)", 140)),
          h(
            "p.run-meta",
            [script.title, kind === "img2img" && p.mask ? "inpaint" : kind, `${p.width}×${p.height}`, `${p.steps} steps`, p.sampler_name, p.model || null]
              .filter(Boolean)
              .join(" · "),
          ),
        ),
        this.badge,
        this.cancelButton,
      ),
      this.progress,
      h("div.run-line", this.status),
      this.notes,
      this.grid,
    );
    this.timer = setInterval(() => this.tick(), 1000);
  }

  /** Run the call; resolves when it has answered (or failed: rejects with the ApiError for the form). */
  async run() {
    const body = { ...a1111Body(this.kind, this.params), script_name: this.script.title, script_args: this.args };
    try {
      const answer = await api(`sdapi/v1/${this.kind}`, { method: "POST", body, signal: this.abort.signal });
      await this.finish(answer);
    } catch (err) {
      this.stop();
      if (err?.name === "AbortError") {
        this.setState("canceled", "Canceled");
        return;
      }
      this.setState("failed", `Failed: ${err instanceof ApiError ? err.message : String(err?.message || err)}`);
      this.status.classList.add("error");
      throw err;
    }
  }

  cancel() {
    this.cancelButton.disabled = true;
    this.status.textContent = "Canceling…";
    this.abort.abort();
  }

  async tick() {
    const elapsed = (Date.now() - this.started) / 1000;
    let progress = null;
    try {
      progress = await api("sdapi/v1/progress", { query: { skip_current_image: "true" } });
    } catch {
      progress = null;
    }
    if (!this.timer) return;
    const fraction = progress && progress.progress > 0 ? Math.min(1, progress.progress) : null;
    this.progress.classList.toggle("indeterminate", fraction === null);
    this.bar.style.width = fraction === null ? "" : `${(fraction * 100).toFixed(1)}%`;
    if (fraction !== null) this.progress.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    const state = progress?.state || {};
    const parts = [
      `Running ${this.script.title}`,
      state.job_count > 1 ? `job ${Math.min(state.job_count, (state.job_no || 0) + 1)} of ${state.job_count}` : null,
      fraction !== null ? `${Math.round(fraction * 100)}%` : null,
      duration(elapsed),
      progress?.eta_relative > 0.5 && fraction !== null ? `about ${duration(progress.eta_relative)} left` : null,
    ];
    if (!this.cancelButton.disabled) this.status.textContent = parts.filter(Boolean).join(" · ");
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.cancelButton.hidden = true;
    this.progress.classList.remove("indeterminate");
  }

  setState(state, text) {
    this.element.dataset.state = state;
    this.badge.className = `state-badge ${state}`;
    this.badge.textContent = state;
    this.status.textContent = text;
    if (state !== "succeeded") {
      this.bar.style.width = "0%";
      render(this.grid);
    }
  }

  async finish(answer) {
    this.stop();
    let info = {};
    try {
      info = typeof answer?.info === "string" ? JSON.parse(answer.info) : answer?.info || {};
    } catch {
      info = {};
    }
    const images = answer?.images || [];
    const grids = Math.min(images.length, info.index_of_first_image || 0);
    const infotexts = info.infotexts || [];
    const seeds = info.all_seeds || [];
    const jobIds = info.sdfleet?.job_ids || [];
    const urls = images.map((b64) => `data:${imageType(b64)};base64,${b64}`);
    const sizes = await Promise.all(urls.map(sizeOf));
    const items = urls.map((url, i) => {
      const grid = i < grids;
      const seed = grid ? null : (seeds[i - grids] ?? null);
      const [w, hgt] = sizes[i];
      const job = {
        id: String(jobIds[grid ? 0 : i - grids] || info.job_timestamp || "script"),
        kind: this.kind,
        params: { ...this.params, width: w, height: hgt, enable_hr: false, seed: seed ?? this.params.seed },
        priority: 0,
      };
      return {
        url,
        title: `${grid ? "Grid" : `Seed ${seed ?? "?"}`} · ${w}×${hgt}`,
        infotext: infotexts[i] || null,
        job: grid ? { ...job, kind: "script-grid" } : job, // a grid's parameters are not one image's
        output: { index: i, seed, content_type: imageType(images[i]) },
        grid,
      };
    });
    render(
      this.grid,
      items.map((item, i) => {
        const tile = imageTile(items, i);
        if (item.grid) tile.classList.add("script-grid");
        return tile;
      }),
    );
    this.bar.style.width = "100%";
    this.progress.setAttribute("aria-valuenow", "100");
    const notes = info.sdfleet?.notes || [];
    render(this.notes, notes.length ? h("ul.notes", notes.map((n) => h("li", n))) : null);
    const count = images.length - grids;
    this.setState(
      "succeeded",
      [
        grids ? `${grids === 1 ? "a grid" : `${grids} grids`} and ${count} image${count === 1 ? "" : "s"}` : `${count} image${count === 1 ? "" : "s"}`,
        `in ${duration((Date.now() - this.started) / 1000)}`,
        jobIds.length ? `${jobIds.length} job${jobIds.length === 1 ? "" : "s"}` : null,
      ]
        .filter(Boolean)
        .join(" · "),
    );
  }

  get finished() {
    return this.timer === null;
  }

  destroy() {
    if (this.timer) this.abort.abort();
    this.stop();
    this.element.remove();
  }
}
