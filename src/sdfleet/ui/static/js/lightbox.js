// The full-size viewer: the image, its infotext as a table, the job behind it, and what to do with
// it next (download, send to img2img, reuse its parameters, copy the infotext). ← → browse, Esc closes.
import { $, h, icon, render } from "./dom.js";
import { emit } from "./bus.js";
import { infotextRows } from "./infotext.js";
import { download, outputFilename } from "./images.js";
import { duration, usd, clock } from "./format.js";
import { showError, toast } from "./toast.js";

const dialog = $("#lightbox");
const image = $("#lightbox-image");
let items = [];
let index = 0;

/** Parameters to load into Generate for an item: the job's own, with this image's seed. */
export function itemParams(item) {
  // only a generation's parameters fit the Generate form (not an upscale's or a training's)
  if (!item.job || !["txt2img", "img2img"].includes(item.job.kind)) return null;
  const params = { ...item.job.params };
  if (item.output?.seed !== null && item.output?.seed !== undefined) params.seed = item.output.seed;
  params.n_iter = 1;
  params.batch_size = 1;
  return { params, kind: item.job.kind, priority: item.job.priority };
}

function actionButton(name, label, onclick) {
  return h("button.secondary", { type: "button", onclick }, icon(name), h("span", label));
}

function infoTable(text) {
  const rows = infotextRows(text);
  return h(
    "dl.infotext",
    rows.map(([key, value]) => [h("dt", key), h("dd", { class: key.includes("rompt") ? "prompt-text" : null }, value || "—")]),
  );
}

function jobSection(job) {
  if (!job) return null;
  const t = job.result?.timings || {};
  const wait = job.started_at ? job.started_at - job.created_at : null;
  const rows = [
    ["Job", job.id],
    ["Kind", job.kind],
    ["Created", clock(job.created_at)],
    ["Queued for", duration(wait)],
    ["Ran for", duration(job.finished_at && job.started_at ? job.finished_at - job.started_at : null)],
    ["Engine", duration(job.engine_seconds)],
    ...Object.entries(t).map(([k, v]) => [`· ${k}`, duration(v)]),
    ["Cost", usd(job.cost_usd)],
  ];
  return h(
    "details.job-details",
    h("summary", "Job"),
    h("dl.kv", rows.map(([k, v]) => [h("dt", k), h("dd", v)])),
    h("details", h("summary", "Parameters (JSON)"), h("pre.json", JSON.stringify(job.params, null, 2))),
  );
}

function show() {
  const item = items[index];
  if (!item) return;
  image.src = item.url;
  image.alt = item.title || "Generated image";
  $("#lightbox-title").textContent = item.title || "Image";
  $("#lightbox-prev").hidden = items.length < 2;
  $("#lightbox-next").hidden = items.length < 2;
  const reuse = itemParams(item);
  render(
    $("#lightbox-actions"),
    actionButton("download", "Download", () =>
      download(item.url, item.job ? outputFilename(item.job.id, item.output) : "image.png").catch((e) => showError(e, "Download")),
    ),
    actionButton("send", "Send to img2img", () => {
      emit("use-image", { url: item.url, params: reuse?.params });
      dialog.close();
    }),
    reuse &&
      actionButton("sliders", "Reuse parameters", () => {
        emit("use-params", reuse);
        dialog.close();
      }),
    item.infotext &&
      actionButton("copy", "Copy infotext", () =>
        navigator.clipboard.writeText(item.infotext).then(
          () => toast("Infotext copied", { kind: "ok" }),
          () => toast("The browser did not allow copying", { kind: "error" }),
        ),
      ),
  );
  render(
    $("#lightbox-info"),
    item.infotext
      ? [infoTable(item.infotext), h("details", h("summary", "Infotext"), h("pre.infotext-raw", item.infotext))]
      : h("p.muted", "This image carries no infotext."),
    jobSection(item.job),
  );
}

function step(delta) {
  if (items.length < 2) return;
  index = (index + delta + items.length) % items.length;
  show();
}

/** Open the viewer on items[start]; an item is {url, title, infotext, job, output}. */
export function openLightbox(list, start = 0) {
  items = list;
  index = start;
  show();
  if (!dialog.open) dialog.showModal();
}

$("#lightbox-close").addEventListener("click", () => dialog.close());
$("#lightbox-prev").addEventListener("click", () => step(-1));
$("#lightbox-next").addEventListener("click", () => step(1));
dialog.addEventListener("keydown", (e) => {
  if (e.key === "ArrowLeft") step(-1);
  else if (e.key === "ArrowRight") step(1);
});
dialog.addEventListener("click", (e) => {
  if (e.target === dialog) dialog.close(); // the backdrop
});
dialog.addEventListener("close", () => {
  image.removeAttribute("src");
});
