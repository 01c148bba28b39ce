// The Generate tab's ControlNet section: units (up to the server's count, GET /controlnet/settings), each
// with its control image (dropped or chosen), a preprocessor with its sliders (GET /controlnet/module_list,
// `module_detail`), a net (GET /controlnet/model_list), weight, guidance window, control and resize modes,
// and a preview of the detected map (POST /controlnet/detect). The units go out as `params.controlnet`.
// None of its controls has a `name`, so the form's own reader (form.js) never sees them.
import { api } from "./api.js";
import { $, $$, h, render, dropZone } from "./dom.js";
import { onCatalog } from "./catalog.js";
import { blobToDataUrl } from "./images.js";
import { showError } from "./toast.js";

const CONTROL_MODES = ["Balanced", "My prompt is more important", "ControlNet is more important"];
const RESIZE_MODES = ["Crop and Resize", "Just Resize", "Resize and Fill"];

const root = $("#controlnet-panel");
const list = $("#cn-units");
const addButton = $("#cn-add");
const note = $("#cn-note");

let maxUnits = 0;
let modules = ["none"];
let details = {}; // module → {sliders: [{name, value, min, max, step}]}
let models = []; // "name [sha8]"
const units = []; // {element, image: dataUrl|null}

/** The sliders of a module as unit fields: the resolution slider is `processor_res`, the others
 * `threshold_a`, then `threshold_b` (the extension's order). */
function sliderFields(module) {
  const out = [];
  let threshold = 0;
  for (const slider of details[module]?.sliders || []) {
    const resolution = /resolution/i.test(slider.name);
    const key = resolution ? "processor_res" : threshold++ === 0 ? "threshold_a" : "threshold_b";
    out.push({ key, ...slider });
  }
  return out;
}

function numberField(label, key, { value, min, max, step }, index) {
  return h(
    "label.field",
    { dataset: { field: `controlnet.${index}.${key}` } },
    h("span", label),
    h("input", { type: "number", value, min, max, step, dataset: { cn: key } }),
  );
}

function select(label, key, options, value, index) {
  const el = h("select", { dataset: { cn: key } }, options.map((o) => h("option", { value: o }, o)));
  el.value = value;
  return h("label.field", { dataset: { field: `controlnet.${index}.${key}` } }, h("span", label), el);
}

function fillSliders(unit) {
  const module = $("[data-cn=module]", unit.element).value;
  const index = units.indexOf(unit);
  render(
    $(".cn-sliders", unit.element),
    sliderFields(module).map((s) => numberField(s.name, s.key, s, index)),
  );
}

function fillModels(unit) {
  const el = $("[data-cn=model]", unit.element);
  const current = el.value;
  render(el, h("option", { value: "" }, "None"), models.map((m) => h("option", { value: m }, m)));
  el.value = models.includes(current) ? current : models[0] || "";
}

async function preview(unit) {
  const shown = $(".cn-preview", unit.element);
  if (!unit.image) {
    render(shown, h("p.muted.tiny", "Choose a control image first."));
    return;
  }
  const body = { controlnet_module: $("[data-cn=module]", unit.element).value, controlnet_input_images: [unit.image] };
  for (const el of $$(".cn-sliders [data-cn]", unit.element)) {
    const key = { processor_res: "controlnet_processor_res", threshold_a: "controlnet_threshold_a", threshold_b: "controlnet_threshold_b" }[el.dataset.cn];
    if (key && el.value !== "") body[key] = Number(el.value);
  }
  render(shown, h("p.muted.tiny", "Detecting…"));
  try {
    const { images } = await api("controlnet/detect", { method: "POST", body });
    render(shown, h("img.cn-map", { src: `data:image/png;base64,${images[0]}`, alt: "Detected map" }));
  } catch (err) {
    render(shown, h("p.field-error", err.message || String(err)));
    showError(err, "ControlNet preview");
  }
}

function renumber() {
  units.forEach((unit, i) => {
    $(".cn-title", unit.element).textContent = `Unit ${i}`;
    for (const el of $$("[data-field]", unit.element)) {
      el.dataset.field = el.dataset.field.replace(/^controlnet\.\d+\./, `controlnet.${i}.`);
    }
  });
  addButton.disabled = units.length >= maxUnits;
}

function addUnit() {
  if (units.length >= maxUnits) return;
  const index = units.length;
  const unit = { element: null, image: null };
  const input = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", hidden: true, dataset: { cn: "file" } });
  const thumb = h("div.cn-thumb", h("p.muted.tiny", "Drop a control image or click to choose one"));
  const drop = h("div.dropzone.compact.cn-drop", { tabindex: "0", role: "button", "aria-label": `Control image of unit ${index}` }, thumb);
  const timing = h(
    "div.grid-2",
    numberField("Weight", "weight", { value: 1, min: 0, max: 2, step: 0.05 }, index),
    numberField("Starting step", "guidance_start", { value: 0, min: 0, max: 1, step: 0.01 }, index),
    numberField("Ending step", "guidance_end", { value: 1, min: 0, max: 1, step: 0.01 }, index),
    select("Control mode", "control_mode", CONTROL_MODES, "Balanced", index),
    select("Resize mode", "resize_mode", RESIZE_MODES, "Crop and Resize", index),
  );
  unit.element = h(
    "div.cn-unit",
    h(
      "div.cn-head",
      h("label.switch", h("input", { type: "checkbox", checked: true, dataset: { cn: "enabled" } }), h("span.cn-title", `Unit ${index}`)),
      h("button.icon-button.cn-remove", { type: "button", title: "Remove this unit", onclick: () => removeUnit(unit) }, "×"),
    ),
    h("div.field", { dataset: { field: `controlnet.${index}.image` } }, drop, input),
    h(
      "div.grid-2",
      select("Preprocessor", "module", modules, "none", index),
      h("label.field", { dataset: { field: `controlnet.${index}.model` } }, h("span", "Model"), h("select", { dataset: { cn: "model" } })),
    ),
    h("div.grid-2.cn-sliders"),
    timing,
    h("div.cn-actions", h("button.cn-preview-button", { type: "button", onclick: () => preview(unit) }, "Preview detected map")),
    h("div.cn-preview", { "aria-live": "polite" }),
  );
  dropZone(drop, input, async (files) => {
    const file = files?.[0];
    if (!file) return;
    unit.image = await blobToDataUrl(file);
    render(thumb, h("img", { src: unit.image, alt: "Control image" }));
  });
  $("[data-cn=module]", unit.element).addEventListener("change", () => fillSliders(unit));
  units.push(unit);
  list.append(unit.element);
  fillSliders(unit);
  fillModels(unit);
  renumber();
}

function removeUnit(unit) {
  const i = units.indexOf(unit);
  if (i >= 0) units.splice(i, 1);
  unit.element.remove();
  renumber();
}

/** The units as `params.controlnet` (the enabled ones with a net; none: an empty list). */
export function controlnetUnits() {
  const out = [];
  for (const unit of units) {
    const value = (key) => $(`[data-cn=${key}]`, unit.element);
    if (!value("enabled").checked || !value("model").value) continue;
    const model = value("model").value.replace(/ \[[0-9a-f]+\]$/, "");
    const params = { model, module: value("module").value, image: unit.image };
    for (const el of $$("input[type=number][data-cn]", unit.element)) {
      if (el.value !== "") params[el.dataset.cn] = Number(el.value);
    }
    params.control_mode = value("control_mode").value;
    params.resize_mode = value("resize_mode").value;
    out.push(params);
  }
  return out;
}

/** Load what the server offers (again when the catalog changes: a net may have been registered). */
export async function loadControlNet() {
  try {
    const [settings, moduleList, modelList] = await Promise.all([
      api("controlnet/settings"),
      api("controlnet/module_list"),
      api("controlnet/model_list"),
    ]);
    maxUnits = settings.control_net_unit_count || 0;
    modules = moduleList.module_list || ["none"];
    details = moduleList.module_detail || {};
    models = modelList.model_list || [];
    root.hidden = maxUnits === 0;
    note.textContent = models.length
      ? `Up to ${maxUnits} units. Preprocessors without weights run on the server.`
      : "No ControlNet model is registered yet (sdfleet up --controlnet FILE).";
    for (const unit of units) fillModels(unit);
    renumber();
  } catch (err) {
    if (err.status !== 401) showError(err, "ControlNet");
  }
}

export function initControlNetPanel() {
  addButton.addEventListener("click", addUnit);
  onCatalog(() => loadControlNet());
  loadControlNet();
}
