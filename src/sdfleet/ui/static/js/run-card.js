// One submitted generation on the Generate tab: a header, a live progress bar (server-sent events,
// smoothed between the workers' reports), placeholders while it runs, then the images with their
// actions — open, download, send to img2img, reuse parameters.
import { api } from "./api.js";
import { h, icon, render } from "./dom.js";
import { emit } from "./bus.js";
import { watchJob, isTerminal } from "./watch.js";
import { openLightbox, itemParams } from "./lightbox.js";
import { download, outputFilename } from "./images.js";
import { duration, usd, truncate } from "./format.js";
import { showError } from "./toast.js";

const MAX_PLACEHOLDERS = 16;

export function outputItems(job) {
  const [w, h_] = jobOutputSize(job);
  return job.outputs.map((output) => ({
    url: output.url,
    title: output.detected_map
      ? "ControlNet detected map"
      : job.kind === "upscale"
        ? `${job.labels?.file || "Upscaled"} · ${w}×${h_}`
        : `Seed ${output.seed ?? "?"} · ${w}×${h_}`,
    infotext: output.infotext,
    job,
    output,
  }));
}

/** The size of a job's images: an upscale job's result (as it reported it, else A1111's Extras rule),
 * a generation's width × height after the hires fix. */
export function jobOutputSize(job) {
  if (job.kind !== "upscale") return outputSize(job.params);
  const info = job.result?.info || {};
  if (info.width && info.height) return [info.width, info.height];
  const p = job.params;
  const w = p.input_width || 512;
  const hgt = p.input_height || 512;
  if (String(p.upscaler_1).toLowerCase() === "none") return [w, hgt];
  if (p.resize_mode === "scale_to" && p.upscaling_crop) return [p.upscaling_resize_w, p.upscaling_resize_h];
  const by = p.resize_mode === "scale_to" ? Math.max(p.upscaling_resize_w / w, p.upscaling_resize_h / hgt) : p.upscaling_resize;
  return [Math.max(8, Math.floor(Math.floor(w * by) / 8) * 8), Math.max(8, Math.floor(Math.floor(hgt * by) / 8) * 8)];
}

export function outputSize(params) {
  const w = params.width || 512;
  const hgt = params.height || 512;
  if (!params.enable_hr) return [w, hgt];
  if (params.hr_resize_x || params.hr_resize_y) {
    return [
      params.hr_resize_x || Math.round((w * params.hr_resize_y) / hgt),
      params.hr_resize_y || Math.round((hgt * params.hr_resize_x) / w),
    ];
  }
  return [Math.round(w * (params.hr_scale || 2)), Math.round(hgt * (params.hr_scale || 2))];
}

/** An image tile with its actions; `items` is the whole set for the viewer. */
export function imageTile(items, i, { compact = false } = {}) {
  const item = items[i];
  const reuse = itemParams(item);
  const act = (name, label, fn) =>
    h("button.tile-action", { type: "button", title: label, "aria-label": label, onclick: (e) => (e.stopPropagation(), fn()) }, icon(name));
  const [w, hgt] = item.job ? jobOutputSize(item.job) : [1, 1];
  return h(
    "figure.tile",
    { style: { aspectRatio: `${w} / ${hgt}` } },
    h(
      "button.tile-open",
      { type: "button", title: "Open", onclick: () => openLightbox(items, i) },
      h("img", { src: item.url, alt: item.title, loading: "lazy", decoding: "async" }),
    ),
    compact
      ? null
      : h(
          "figcaption.tile-actions",
          act("expand", "Open", () => openLightbox(items, i)),
          act("download", "Download", () => download(item.url, outputFilename(item.job.id, item.output)).catch((e) => showError(e, "Download"))),
          act("send", "Send to img2img", () => emit("use-image", { url: item.url, params: reuse?.params })),
          reuse && act("sliders", "Reuse parameters", () => emit("use-params", reuse)),
        ),
  );
}

export class RunCard {
  constructor(job, { onSeed } = {}) {
    this.job = job;
    this.onSeed = onSeed;
    this.live = null;
    const p = job.params;
    const [w, hgt] = outputSize(p);
    this.expected = Math.min(MAX_PLACEHOLDERS, (p.batch_size || 1) * (p.n_iter || 1));
    this.bar = h("div.progress-fill");
    this.status = h("span.run-status", "Queued");
    this.badge = h("span.state-badge.queued", "queued");
    this.cancelButton = h(
      "button.secondary.small",
      { type: "button", onclick: () => this.cancel() },
      icon("stop"),
      h("span", "Cancel"),
    );
    this.grid = h("div.run-grid");
    this.element = h(
      "article.run-card",
      { dataset: { jobId: job.id } },
      h(
        "header.run-head",
        h(
          "div.run-title",
          h("p.run-prompt", { title: p.prompt }, truncate(p.prompt || "(no prompt)", 140)),
          h(
            "p.run-meta",
            [job.kind === "img2img" && p.mask ? "inpaint" : job.kind, `${w}×${hgt}`, `${p.steps} steps`, p.sampler_name, p.model || null, `seed ${p.seed === -1 ? "random" : p.seed}`]
              .filter(Boolean)
              .join(" · "),
          ),
        ),
        this.badge,
        this.cancelButton,
      ),
      h("div.progress", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, this.bar),
      h("div.run-line", this.status),
      this.grid,
    );
    this.placeholders(w, hgt);
    this.unwatch = watchJob(job, (live, event) => this.update(live, event));
    this.timer = setInterval(() => this.tick(), 250);
  }

  placeholders(w, hgt) {
    render(
      this.grid,
      Array.from({ length: this.expected }, () =>
        h("div.tile.placeholder", { style: { aspectRatio: `${w} / ${hgt}` } }, h("span.placeholder-pct")),
      ),
    );
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

  /** The fraction done, extrapolated between progress reports at the measured step rate. */
  estimate() {
    const live = this.live;
    if (!live || !live.total) return 0;
    let step = live.step;
    if (live.state === "running" && live.stepRate && live.progressAt) {
      const ahead = live.stepRate * (Date.now() / 1000 - live.progressAt);
      step = Math.min(live.total - 0.5, live.step + Math.max(0, ahead));
    }
    return Math.max(0, Math.min(1, step / live.total));
  }

  tick() {
    const live = this.live;
    if (!live || live.state !== "running") return;
    const fraction = this.estimate();
    this.bar.style.width = `${(fraction * 100).toFixed(1)}%`;
    this.element.querySelector(".progress").setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    for (const pct of this.grid.querySelectorAll(".placeholder-pct")) pct.textContent = `${Math.round(fraction * 100)}%`;
    const elapsed = live.startedAt ? Date.now() / 1000 - live.startedAt : null;
    const eta = live.stepRate && live.total ? (live.total - fraction * live.total) / live.stepRate : null;
    const parts = [
      live.total ? `Step ${Math.min(live.total, Math.floor(fraction * live.total))}/${live.total}` : "Starting",
      live.worker ? `on ${live.worker}` : null,
      elapsed !== null ? duration(elapsed) : null,
      eta !== null && eta > 0.5 ? `about ${duration(eta)} left` : null,
    ];
    if (!this.cancelButton.disabled) this.status.textContent = parts.filter(Boolean).join(" · ");
  }

  update(live, event) {
    this.live = live;
    this.element.dataset.state = live.state;
    this.badge.className = `state-badge ${live.state}`;
    this.badge.textContent = live.state;
    if (event.data?.preview) {
      for (const tile of this.grid.querySelectorAll(".placeholder")) tile.style.backgroundImage = `url("${event.data.preview}")`;
    }
    if (live.state === "queued") {
      this.bar.style.width = "0%";
      this.status.textContent = live.reason ? `Waiting: ${live.reason}` : "Queued — waiting for a worker";
    } else if (live.state === "running") {
      this.tick();
    }
    if (event.type === "done") this.finish(live);
  }

  finish(live) {
    clearInterval(this.timer);
    this.cancelButton.hidden = true;
    const job = live.job;
    if (!job) {
      this.status.textContent = live.error?.message || "Could not read the job";
      return;
    }
    this.job = job;
    if (job.state === "succeeded") {
      this.bar.style.width = "100%";
      const took = job.finished_at && job.started_at ? job.finished_at - job.started_at : null;
      const items = outputItems(job);
      render(this.grid, items.map((_, i) => imageTile(items, i)));
      this.status.textContent = [
        `${items.length} image${items.length === 1 ? "" : "s"}`,
        took !== null ? `in ${duration(took)}` : null,
        live.worker ? `on ${live.worker}` : null,
        job.cost_usd ? usd(job.cost_usd) : null,
      ]
        .filter(Boolean)
        .join(" · ");
      const seed = job.outputs[0]?.seed;
      if (seed !== null && seed !== undefined) this.onSeed?.(seed);
    } else {
      this.bar.style.width = "0%";
      render(this.grid);
      const error = job.error || live.error;
      this.status.textContent =
        job.state === "canceled" ? "Canceled" : `Failed${error ? `: ${error.message || error.code}` : ""}`;
      this.status.classList.toggle("error", job.state === "failed");
    }
  }

  get finished() {
    return isTerminal(this.live?.state || this.job.state);
  }

  destroy() {
    clearInterval(this.timer);
    this.unwatch();
    this.element.remove();
  }
}
