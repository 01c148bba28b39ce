// The X/Y/Z plot tab: up to three axes over the Generate tab's settings, submitted as one batch
// of jobs; the labelled grid fills in as images arrive and can be saved as one PNG.
import { api } from "../api.js";
import { $, h, icon, render } from "../dom.js";
import { catalog, onCatalog } from "../catalog.js";
import { currentRequest } from "./generate.js";
import { watchJob } from "../watch.js";
import { openLightbox } from "../lightbox.js";
import { outputItems } from "../run-card.js";
import { AXIS_TYPES, AxisError, axisLabel, lorasInPrompt } from "../xyz-values.js";
import { download, loadImage } from "../images.js";
import { truncate } from "../format.js";
import { showError, toast } from "../toast.js";

const NAMES = ["X", "Y", "Z"];
const DEFAULTS = [
  { type: "steps", text: "10, 20" },
  { type: "cfg", text: "5, 9" },
  { type: "", text: "" },
];
const form = $("#xyz-form");
const resultsEl = $("#xyz-results");
const axisRows = [];
let plot = null; // {id, axes, cells: Map key → {job, live, el}, unwatch: []}

// ------------------------------------------------------------------ axis editors

function axisRow(index) {
  const typeSelect = h(
    "select",
    { "aria-label": `${NAMES[index]} axis type` },
    h("option", { value: "" }, "Nothing"),
    Object.entries(AXIS_TYPES).map(([key, t]) => h("option", { value: key }, t.label)),
  );
  const values = h("input", { type: "text", "aria-label": `${NAMES[index]} axis values`, spellcheck: "false" });
  const lora = h("select.lora-choice", { "aria-label": `${NAMES[index]} axis LoRA`, hidden: true });
  const fill = h("button.secondary.small", { type: "button", title: "Use every value", hidden: true }, icon("plus"), h("span", "All"));
  const note = h("p.axis-note.muted");
  const row = { index, typeSelect, values, lora, fill, note };
  const el = h(
    "div.axis-row",
    h("span.axis-name", NAMES[index]),
    h("div.axis-fields", h("div.axis-line", typeSelect, lora, fill), values, note),
  );
  typeSelect.addEventListener("change", () => {
    values.value = "";
    refreshRow(row);
  });
  values.addEventListener("input", updateCount);
  lora.addEventListener("change", updateCount);
  fill.addEventListener("click", () => {
    const type = AXIS_TYPES[typeSelect.value];
    values.value = type.options(context()).join(", ");
    updateCount();
  });
  row.el = el;
  return row;
}

function refreshRow(row) {
  const type = AXIS_TYPES[row.typeSelect.value];
  row.values.hidden = !type;
  row.values.placeholder = type?.placeholder || "";
  row.fill.hidden = !type?.options;
  row.lora.hidden = !type?.needsLora;
  if (type?.needsLora) {
    const names = [...new Set([...lorasInPrompt(context().base.prompt), ...catalog.loras.map((m) => m.name)])];
    const current = row.lora.value;
    render(row.lora, names.length ? names.map((n) => h("option", { value: n }, n)) : h("option", { value: "" }, "No LoRA in the prompt or registry"));
    if (names.includes(current)) row.lora.value = current;
  }
  updateCount();
}

/** The Generate tab's settings; images (and the mask export) only when submitting. */
function context({ images = false } = {}) {
  const request = currentRequest({ images });
  return { catalog, base: request.params, request };
}

/** The axes that are set: [{name, type, values, lora}]; throws AxisError naming the axis. */
function readAxes() {
  const ctx = context();
  const axes = [];
  for (const row of axisRows) {
    const type = row.typeSelect.value;
    if (!type) continue;
    const axis = { name: NAMES[row.index], type, lora: row.lora.value || null, values: [] };
    try {
      axis.values = AXIS_TYPES[type].parse(row.values.value, ctx, axis);
    } catch (err) {
      if (err instanceof AxisError) err.message = `${axis.name} axis: ${err.message}`;
      throw err;
    }
    if (!axis.values.length) throw new AxisError(`${axis.name} axis: give at least one value`);
    axes.push(axis);
  }
  return axes;
}

function updateCount() {
  for (const row of axisRows) row.note.textContent = "";
  try {
    const axes = readAxes();
    for (const axis of axes) {
      const row = axisRows[NAMES.indexOf(axis.name)];
      row.note.textContent = `${axis.values.length} value${axis.values.length === 1 ? "" : "s"}: ${truncate(axis.values.join(", "), 80)}`;
    }
    const n = axes.reduce((acc, a) => acc * a.values.length, 1);
    $("#xyz-count").textContent = axes.length ? `${n} image${n === 1 ? "" : "s"}` : "pick an axis";
    $("#xyz-count").classList.remove("error-text");
    $("#xyz-submit").disabled = !axes.length || n > 1000;
    if (n > 1000) $("#xyz-count").textContent = `${n} images — at most 1000 per plot`;
  } catch (err) {
    $("#xyz-count").textContent = err.message;
    $("#xyz-count").classList.add("error-text");
    $("#xyz-submit").disabled = true;
  }
}

function updateBase() {
  const p = context().base;
  $("#xyz-base").textContent = [
    `“${truncate(p.prompt || "(no prompt)", 60)}”`,
    `${p.width}×${p.height}`,
    p.sampler_name,
    `${p.steps} steps`,
    `CFG ${p.cfg_scale}`,
    p.seed === -1 ? "random seed" : `seed ${p.seed}`,
  ].join(" · ");
  for (const row of axisRows) if (row.typeSelect.value === "lora") refreshRow(row);
  updateCount();
}

// ------------------------------------------------------------------ submitting

function cellKey(ix, iy, iz) {
  return `${ix},${iy},${iz}`;
}

async function runPlot() {
  let axes;
  try {
    axes = readAxes();
  } catch (err) {
    toast(err.message, { kind: "error", title: "X/Y/Z plot" });
    return;
  }
  if (!axes.length) return;
  const ctx = context({ images: true });
  const { kind, params: base, priority } = ctx.request;
  base.batch_size = 1;
  base.n_iter = 1;
  if ($("#xyz-fixed-seed").checked && (base.seed === -1 || base.seed === undefined)) {
    base.seed = Math.floor(Math.random() * 2 ** 32);
  }
  const [ax, ay, az] = [axes[0], axes[1] || null, axes[2] || null];
  const xs = ax.values;
  const ys = ay ? ay.values : [null];
  const zs = az ? az.values : [null];
  const id = Math.random().toString(36).slice(2, 10);
  const jobs = [];
  const keys = [];
  zs.forEach((z, iz) =>
    ys.forEach((y, iy) =>
      xs.forEach((x, ix) => {
        const params = structuredClone(base);
        AXIS_TYPES[ax.type].apply(params, x, ctx, ax);
        if (ay) AXIS_TYPES[ay.type].apply(params, y, ctx, ay);
        if (az) AXIS_TYPES[az.type].apply(params, z, ctx, az);
        keys.push(cellKey(ix, iy, iz));
        jobs.push({ kind, params, priority, labels: { xyz: id, cell: cellKey(ix, iy, iz) } });
      }),
    ),
  );
  const button = $("#xyz-submit");
  button.disabled = true;
  try {
    const batch = await api("v1/jobs", { method: "POST", body: { jobs } });
    showPlot({ id, axes: [ax, ay, az], xs, ys, zs, width: base.width, height: base.height }, batch.jobs, keys);
  } catch (err) {
    showError(err, "X/Y/Z plot");
  } finally {
    button.disabled = false;
    updateCount();
  }
}

// ------------------------------------------------------------------ the grid

function cellView(cell) {
  const { live, job } = cell;
  const state = live?.state || job.state;
  if (job.state === "succeeded" && job.outputs.length) {
    const items = plot.items();
    const i = items.findIndex((it) => it.job.id === job.id);
    return h("button.xyz-image", { type: "button", onclick: () => openLightbox(items, Math.max(0, i)) }, h("img", { src: job.outputs[0].url, alt: cell.label }));
  }
  if (job.state === "failed" || job.state === "canceled") {
    return h("div.xyz-placeholder.failed", h("span", job.state), job.error ? h("small", truncate(job.error.message, 80)) : null);
  }
  const pct = live?.total ? Math.round((100 * live.step) / live.total) : 0;
  return h("div.xyz-placeholder", h("span", state === "running" ? `${pct}%` : "queued"), h("div.progress.small", h("div.progress-fill", { style: { width: `${pct}%` } })));
}

function drawCell(cell) {
  render(cell.el, cellView(cell));
  const done = [...plot.cells.values()].filter((c) => ["succeeded", "failed", "canceled"].includes(c.job.state)).length;
  $("#xyz-progress").textContent = `${done} of ${plot.cells.size} done`;
  $("#xyz-download").disabled = done < plot.cells.size;
}

function showPlot(meta, jobs, keys) {
  for (const stop of plot?.unwatch || []) stop();
  plot = { ...meta, cells: new Map(), unwatch: [] };
  plot.items = () => [...plot.cells.values()].filter((c) => c.job.outputs?.length).flatMap((c) => outputItems(c.job).slice(0, 1));
  const [ax, ay, az] = meta.axes;
  const sections = meta.zs.map((z, iz) => {
    const table = h("table.xyz-grid");
    table.append(h("thead", h("tr", ay ? h("th") : null, meta.xs.map((x) => h("th", { scope: "col" }, axisLabel(ax, x))))));
    const tbody = h("tbody");
    meta.ys.forEach((y, iy) => {
      const tr = h("tr", ay ? h("th", { scope: "row" }, axisLabel(ay, y)) : null);
      meta.xs.forEach((x, ix) => {
        const key = cellKey(ix, iy, iz);
        const job = jobs[keys.indexOf(key)];
        const labels = [axisLabel(ax, x), ay ? axisLabel(ay, y) : null, az ? axisLabel(az, z) : null].filter(Boolean);
        const cell = { job, live: null, label: labels.join(", "), el: h("td.xyz-cell", { dataset: { cell: key } }) };
        plot.cells.set(key, cell);
        tr.append(cell.el);
      });
      tbody.append(tr);
    });
    table.append(tbody);
    return h("section.xyz-section", az ? h("h3", axisLabel(az, z)) : null, h("div.xyz-scroll", table));
  });
  render(
    resultsEl,
    h(
      "div.xyz-head",
      h("h2", "Plot"),
      h("span.muted", { id: "xyz-progress" }),
      h("span.spacer"),
      h("button.secondary", { type: "button", id: "xyz-download", disabled: true, onclick: exportGrid }, icon("download"), h("span", "Download grid PNG")),
    ),
    sections,
  );
  for (const cell of plot.cells.values()) {
    drawCell(cell);
    plot.unwatch.push(
      watchJob(cell.job, (live, event) => {
        cell.live = live;
        if (event.type === "done" && live.job) cell.job = live.job;
        drawCell(cell);
      }),
    );
  }
}

// ------------------------------------------------------------------ one PNG

async function exportGrid() {
  const button = $("#xyz-download");
  button.disabled = true;
  try {
    const [ax, ay, az] = plot.axes;
    const legend = $("#xyz-legend").checked;
    const first = [...plot.cells.values()].find((c) => c.job.outputs?.length);
    if (!first) throw new Error("no images yet");
    const images = new Map();
    await Promise.all(
      [...plot.cells].map(async ([key, c]) => {
        if (c.job.outputs?.length) images.set(key, await loadImage(c.job.outputs[0].url));
      }),
    );
    const sample = images.values().next().value;
    const scale = Math.min(1, 8192 / (sample.naturalWidth * plot.xs.length), 8192 / (sample.naturalHeight * plot.ys.length * plot.zs.length));
    const cw = Math.round(sample.naturalWidth * scale);
    const ch = Math.round(sample.naturalHeight * scale);
    const font = Math.max(14, Math.round(cw / 14));
    const measure = document.createElement("canvas").getContext("2d");
    measure.font = `${font}px system-ui, sans-serif`;
    const left = legend && ay ? Math.ceil(Math.max(...plot.ys.map((y) => measure.measureText(axisLabel(ay, y)).width))) + font * 2 : 0;
    const top = legend ? Math.round(font * 2.4) : 0;
    const zHead = legend && az ? Math.round(font * 2.4) : 0;
    const gap = az ? Math.round(font) : 0;
    const blockH = zHead + top + ch * plot.ys.length;
    const canvas = h("canvas", { width: left + cw * plot.xs.length, height: blockH * plot.zs.length + gap * (plot.zs.length - 1) });
    const g = canvas.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = "#111";
    g.textBaseline = "middle";
    g.font = `${font}px system-ui, sans-serif`;
    plot.zs.forEach((z, iz) => {
      const y0 = iz * (blockH + gap);
      if (zHead) {
        g.font = `bold ${font}px system-ui, sans-serif`;
        g.textAlign = "center";
        g.fillText(axisLabel(az, z), canvas.width / 2, y0 + zHead / 2);
        g.font = `${font}px system-ui, sans-serif`;
      }
      if (top) {
        g.textAlign = "center";
        plot.xs.forEach((x, ix) => g.fillText(axisLabel(ax, x), left + ix * cw + cw / 2, y0 + zHead + top / 2, cw - 8));
      }
      plot.ys.forEach((y, iy) => {
        const rowY = y0 + zHead + top + iy * ch;
        if (left) {
          g.textAlign = "right";
          g.fillText(axisLabel(ay, y), left - font, rowY + ch / 2);
        }
        plot.xs.forEach((_, ix) => {
          const img = images.get(cellKey(ix, iy, iz));
          if (img) g.drawImage(img, left + ix * cw, rowY, cw, ch);
        });
      });
    });
    const blob = await new Promise((resolve, reject) =>
      canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the browser could not encode the grid"))), "image/png"),
    );
    await download(blob, `xyz-plot-${plot.id}.png`);
  } catch (err) {
    showError(err.name === "SecurityError" ? new Error("the image store does not allow reading its images from this page (CORS)") : err, "Grid PNG");
  } finally {
    button.disabled = false;
  }
}

export function initXyz() {
  const host = $("#xyz-axes");
  for (let i = 0; i < 3; i += 1) {
    const row = axisRow(i);
    axisRows.push(row);
    host.append(row.el);
  }
  DEFAULTS.forEach((d, i) => {
    axisRows[i].typeSelect.value = d.type;
    refreshRow(axisRows[i]);
    axisRows[i].values.value = d.text;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    runPlot();
  });
  onCatalog(() => axisRows.forEach(refreshRow));
  return { shown: updateBase, submit: runPlot };
}
