// The Queue tab: my jobs, newest first, live — state, progress, place in line or why a job waits,
// the worker, timings and cost — with cancel. The list is re-read every two seconds while the tab
// is open; jobs that are queued or running are also followed over server-sent events.
import { api, firstEvent } from "../api.js";
import { $, $$, h, icon, render, every } from "../dom.js";
import { emit } from "../bus.js";
import { watchJob, isTerminal } from "../watch.js";
import { openLightbox, itemParams } from "../lightbox.js";
import { outputItems, jobOutputSize } from "../run-card.js";
import { ago, duration, usd, truncate, shortId } from "../format.js";
import { showError } from "../toast.js";

const PAGE = 50;
const body = $("#queue-body");
const rows = new Map(); // job id → {row, job, unwatch}
const workers = new Map(); // job id → worker name (from events)
const historyQueue = [];
let historyRunning = 0;
let filter = "";
let cursor = null;
let extraPages = []; // jobs loaded with "Load more"

function statesFor(value) {
  if (value === "active") return ["queued", "running"];
  return value ? [value] : undefined;
}

/**
 * Worker names come with a job's "started" event: streamed jobs get it live; for the others (done,
 * or polled) it is read from the start of their event history, a couple at a time.
 */
function learnWorker(job) {
  if (workers.has(job.id) || !job.started_at) return;
  workers.set(job.id, null);
  historyQueue.push(job.id);
  pumpHistory();
}

async function pumpHistory() {
  while (historyRunning < 2 && historyQueue.length) {
    const id = historyQueue.shift();
    historyRunning += 1;
    firstEvent(id, "started")
      .then((started) => {
        if (!started) return;
        workers.set(id, started.data.worker || started.data.worker_id);
        const entry = rows.get(id);
        if (entry) updateRow(entry);
      })
      .finally(() => {
        historyRunning -= 1;
        pumpHistory();
      });
  }
}

/** Each queued job's place among mine, in the order workers claim: priority, then age. */
function positions(entries) {
  const queued = entries
    .filter((e) => effective(e).state === "queued")
    .map((e) => e.job)
    .sort((a, b) => b.priority - a.priority || (a.id < b.id ? -1 : 1));
  return new Map(queued.map((j, i) => [j.id, i + 1]));
}

/**
 * What a row shows: while the job is active, whichever of the event stream and the list snapshot is
 * further along (the two arrive independently); once it is done, the snapshot.
 */
function effective({ job, live }) {
  const snapshot = { state: job.state, step: job.progress.step, total: job.progress.total };
  if (!live || isTerminal(job.state)) return snapshot;
  if (live.state === "queued" && job.state === "running") return snapshot;
  if (live.state === job.state && job.progress.step > live.step) return snapshot;
  return { state: live.state, step: live.step, total: live.total };
}

function timings(job, live) {
  const now = Date.now() / 1000;
  const start = job.started_at || live?.startedAt;
  const waited = (start || (job.state === "queued" ? now : job.finished_at || now)) - job.created_at;
  const ran = start ? (job.finished_at || now) - start : null;
  return [
    h("span", { title: `created ${new Date(job.created_at * 1000).toLocaleString()}` }, `waited ${duration(waited)}`),
    ran !== null ? h("span", `ran ${duration(ran)}`) : null,
    job.cost_usd ? h("span", usd(job.cost_usd)) : null,
  ];
}

function createRow(job) {
  const entry = { job, live: null, unwatch: null };
  entry.row = h("tr", { dataset: { jobId: job.id } });
  entry.cells = {
    thumb: h("td.col-thumb"),
    job: h("td.col-job"),
    state: h("td.col-state"),
    progress: h("td.col-progress"),
    wait: h("td.col-wait"),
    timings: h("td.col-timings"),
    actions: h("td.col-actions"),
  };
  entry.row.append(...Object.values(entry.cells));
  rows.set(job.id, entry);
  return entry;
}

function follow(entry) {
  if (entry.unwatch || isTerminal(entry.job.state)) return;
  entry.unwatch = watchJob(entry.job, (live, event) => {
    entry.live = live;
    if (live.worker) workers.set(entry.job.id, live.worker);
    if (event.type === "done" && live.job) {
      entry.job = live.job;
      entry.unwatch = null;
    }
    updateRow(entry);
  });
}

function updateRow(entry, position) {
  const { job, cells } = entry;
  const live = entry.live;
  const { state, step, total } = effective(entry);
  const p = job.params;
  const [w, hgt] = jobOutputSize(job);
  entry.row.dataset.state = state;
  const items = outputItems(job);
  render(
    cells.thumb,
    items.length
      ? h("button.thumb", { type: "button", title: "Open", onclick: () => openLightbox(items, 0) }, h("img", { src: items[0].url, alt: "", loading: "lazy" }))
      : h("span.thumb.empty-thumb", icon("image")),
  );
  render(
    cells.job,
    job.kind === "upscale"
      ? h("div.job-prompt", { title: job.labels?.file || "" }, truncate(job.labels?.file || `Upscale with ${p.upscaler_1}`, 90))
      : h("div.job-prompt", { title: p.prompt }, truncate(p.prompt || "(no prompt)", 90)),
    h(
      "div.job-meta",
      job.kind === "upscale"
        ? `upscale · ${p.upscaler_1} · ${p.input_width}×${p.input_height} → ${w}×${hgt} · `
        : `${job.kind === "img2img" && p.mask ? "inpaint" : job.kind} · ${w}×${hgt} · ${p.steps} steps${(p.batch_size || 1) * (p.n_iter || 1) > 1 ? ` · ${p.batch_size * p.n_iter} images` : ""} · `,
      h("code", { title: job.id }, shortId(job.id)),
      job.labels?.xyz ? h("span.label-chip", "X/Y/Z") : null,
    ),
  );
  const canceling = job.cancel_requested && !isTerminal(state);
  render(cells.state, h(`span.state-badge.${canceling ? "canceling" : state}`, canceling ? "canceling" : state));
  const fraction = state === "succeeded" ? 1 : total ? step / total : 0;
  render(
    cells.progress,
    total || state !== "queued"
      ? [
          h("div.progress.small", h("div.progress-fill", { style: { width: `${(fraction * 100).toFixed(1)}%` } })),
          h("span.muted.tiny", total ? `${step}/${total}` : ""),
        ]
      : h("span.muted.tiny", "not started"),
  );
  const worker = workers.get(job.id);
  const reason = job.wait_reason || live?.reason;
  render(
    cells.wait,
    state === "queued"
      ? [
          position ? h("div", `#${position} in your queue`) : h("div", "queued"),
          reason ? h("div.wait-reason", { title: reason }, truncate(reason, 120)) : null,
        ]
      : worker
        ? h("div", { title: "worker" }, worker)
        : h("span.muted", state === "running" ? "on a worker" : state === "canceled" ? "canceled before it ran" : "—"),
    job.error && state === "failed"
      ? h("div.error-text", { title: job.error.message }, truncate(`${job.error.code}: ${job.error.message}`, 120))
      : null,
  );
  render(cells.timings, h("div.timings", timings(job, live)), h("div.muted.tiny", ago(job.created_at)));
  const reuse = itemParams({ job, output: job.outputs[0] });
  render(
    cells.actions,
    !isTerminal(state) && !job.cancel_requested
      ? h("button.secondary.small", { type: "button", onclick: () => cancel(entry) }, icon("stop"), h("span", "Cancel"))
      : null,
    isTerminal(state) && reuse
      ? h("button.icon-button", { type: "button", title: "Reuse parameters", "aria-label": "Reuse parameters", onclick: () => emit("use-params", reuse) }, icon("sliders"))
      : null,
  );
  learnWorker(job);
}

async function cancel(entry) {
  try {
    entry.job = await api(`v1/jobs/${encodeURIComponent(entry.job.id)}/cancel`, { method: "POST" });
    updateRow(entry);
  } catch (err) {
    showError(err, "Cancel");
  }
}

function show(jobs) {
  const entries = jobs.map((job) => {
    const entry = rows.get(job.id) || createRow(job);
    entry.job = job; // while a job is active, updateRow prefers what its event stream says
    return entry;
  });
  const pos = positions(entries);
  const seen = new Set();
  const ordered = [];
  for (const entry of entries) {
    seen.add(entry.job.id);
    updateRow(entry, pos.get(entry.job.id));
    follow(entry);
    ordered.push(entry.row);
  }
  for (const [id, entry] of rows) {
    if (!seen.has(id)) {
      entry.unwatch?.();
      entry.row.remove();
      rows.delete(id);
    }
  }
  // Reorder only when needed, so focus and hover survive refreshes.
  ordered.forEach((row, i) => {
    if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
  });
  $("#queue-empty").hidden = jobs.length > 0;
  const active = jobs.filter((j) => !isTerminal(j.state)).length;
  $("#queue-summary").textContent = `${jobs.length} job${jobs.length === 1 ? "" : "s"}${active ? ` · ${active} active` : ""}`;
}

async function refresh() {
  const page = await api("v1/jobs", { query: { state: statesFor(filter), limit: PAGE } });
  cursor = extraPages.length ? cursor : page.next_cursor;
  const ids = new Set(page.jobs.map((j) => j.id));
  show([...page.jobs, ...extraPages.filter((j) => !ids.has(j.id))]);
  $("#queue-more").hidden = !cursor;
}

async function loadMore() {
  if (!cursor) return;
  const page = await api("v1/jobs", { query: { state: statesFor(filter), limit: PAGE, cursor } });
  extraPages = [...extraPages, ...page.jobs];
  cursor = page.next_cursor;
  await refresh();
}

export function initQueue({ isActive }) {
  $("#queue-filter").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-filter]");
    if (!button) return;
    for (const b of $$("#queue-filter button")) b.setAttribute("aria-pressed", String(b === button));
    filter = button.dataset.filter;
    extraPages = [];
    cursor = null;
    refresh().catch((err) => showError(err, "Queue"));
  });
  $("#queue-refresh").addEventListener("click", () => refresh().catch((err) => showError(err, "Queue")));
  $("#queue-more").addEventListener("click", () => loadMore().catch((err) => showError(err, "Queue")));
  every(2000, refresh, isActive);
  return { shown: () => refresh().catch((err) => showError(err, "Queue")) };
}
