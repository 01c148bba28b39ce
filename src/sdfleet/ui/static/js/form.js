// Reading and writing the Generate form as job parameters (GenerationSpec field names), paired
// sliders, and field-level error marks for the API's `field`.
import { $, $$, h } from "./dom.js";

const NUMERIC_SELECTS = new Set(["resize_mode", "inpainting_fill"]);
const OPTIONAL_SELECTS = new Set(["model", "vae"]); // "" means: the worker's default

/** Keep each range slider and the number box it is paired with (data-for="id") in step. */
export function pairSliders(root) {
  for (const range of $$("input[type=range][data-for]", root)) {
    const box = document.getElementById(range.dataset.for);
    const fromBox = () => {
      range.value = box.value;
    };
    range.addEventListener("input", () => {
      box.value = range.value;
      box.dispatchEvent(new Event("input", { bubbles: true }));
    });
    box.addEventListener("input", fromBox);
    box.addEventListener("change", fromBox);
    fromBox();
  }
}

function valueOf(el) {
  if (el.type === "checkbox") return el.checked;
  if (el.type === "number" || el.type === "range") return el.value === "" ? null : Number(el.value);
  if (el.tagName === "SELECT") {
    if (el.value === "true" || el.value === "false") return el.value === "true";
    if (NUMERIC_SELECTS.has(el.name)) return Number(el.value);
    if (OPTIONAL_SELECTS.has(el.name) && el.value === "") return null;
  }
  return el.value;
}

/** Every named control of `form` inside `root` (skipping radios and job-level fields) as {name: value}. */
export function readFields(form, root = form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.type === "radio" || el.dataset.job || el.disabled || !root.contains(el)) continue;
    if (el.type === "range" && el.dataset.for) continue;
    out[el.name] = valueOf(el);
  }
  return out;
}

/** Set a select's value, adding a marked option when the value is not offered (so it shows). */
export function setSelect(select, value) {
  const text = value === null || value === undefined ? "" : String(value);
  if (![...select.options].some((o) => o.value === text)) {
    select.append(h("option", { value: text, dataset: { missing: "1" } }, `${text} (not available here)`));
  }
  select.value = text;
}

/** Write parameters into the form; unknown keys are ignored. Returns the names that were set. */
export function writeFields(form, params) {
  const set = [];
  for (const [name, value] of Object.entries(params)) {
    const el = form.elements.namedItem(name);
    if (!el || el instanceof RadioNodeList) continue;
    if (el.type === "checkbox") el.checked = Boolean(value);
    else if (el.tagName === "SELECT") setSelect(el, typeof value === "boolean" ? String(value) : value);
    else el.value = value === null || value === undefined ? "" : String(value);
    el.dispatchEvent(new Event("input", { bubbles: true }));
    set.push(name);
  }
  return set;
}

/** The form field an API error names ("jobs.0.params.width" → the width control's wrapper): the
 * longest leading part of the path that a `data-field` names ("generation.prompt", else "generation"). */
export function fieldElement(form, field) {
  if (!field) return null;
  const parts = field.replace(/^jobs\.\d+\./, "").replace(/^params\./, "").split(".");
  for (let n = parts.length; n > 0; n -= 1) {
    const found = $(`[data-field="${CSS.escape(parts.slice(0, n).join("."))}"]`, form);
    if (found) return found;
  }
  return null;
}

/** Mark a field invalid with a message under it, reveal it, and focus its control. */
export function markInvalid(wrapper, message) {
  if (!wrapper) return false;
  clearInvalid(wrapper.closest("form") || document);
  wrapper.classList.add("invalid");
  wrapper.append(h("p.field-error", { role: "alert" }, message));
  const details = wrapper.closest("details");
  if (details) details.open = true;
  const panel = wrapper.closest("[hidden]");
  if (!panel) {
    wrapper.scrollIntoView({ block: "center", behavior: "smooth" });
    const control = wrapper.matches("input,select,textarea") ? wrapper : $("input:not([type=range]),select,textarea", wrapper);
    control?.focus({ preventScroll: true });
  }
  return true;
}

export function clearInvalid(root) {
  for (const el of $$(".invalid", root)) el.classList.remove("invalid");
  for (const el of $$(".field-error", root)) el.remove();
}
