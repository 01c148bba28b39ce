// The Fleet tab (admin): workers with their GPU, state, current jobs, loaded models and counters,
// quarantine and release; queue depth by state; the last hour's throughput and images per dollar; and
// per model, the demand (queued and running jobs, their waits) against the workers that hold it warm.
import { api } from "../api.js";
import { $, h, render, every } from "../dom.js";
import { barChart, lineChart } from "../charts.js";
import { ago, count, duration, usd, shortId } from "../format.js";
import { showError, toast } from "../toast.js";
import { tenantRow } from "../quota.js";

function card(label, value, sub, tone = "") {
  return h(`div.stat-card${tone ? `.${tone}` : ""}`, h("div.stat-value", value), h("div.stat-label", label), sub ? h("div.stat-sub", sub) : null);
}

function showCards(stats, workers) {
  const jobs = stats.jobs || {};
  const hour = stats.last_hour?.totals || {};
  const ipd = hour.images_per_dollar;
  render(
    $("#fleet-cards"),
    card("workers online", `${stats.workers_online}`, `${workers.length} registered`),
    card("quarantined", count(stats.workers_by_state?.quarantined || 0), null, stats.workers_by_state?.quarantined ? "warn" : ""),
    card("queued", count(jobs.queued || 0), "jobs waiting"),
    card("running", count(jobs.running || 0), "jobs on workers"),
    card("succeeded", count(jobs.succeeded || 0), `${count(jobs.failed || 0)} failed · ${count(jobs.canceled || 0)} canceled`, jobs.failed ? "" : "ok"),
    card("images · 1 h", count(hour.images || 0), `${usd(hour.cost_usd || 0)} of GPU time`),
    card("images per $", ipd ? count(Math.round(ipd)) : "—", ipd ? "over the last hour" : "no cost recorded"),
  );
}

function showCharts(stats) {
  const minutes = stats.last_hour?.minutes || [];
  const times = minutes.map((m) => m.t);
  barChart($("#chart-throughput"), {
    title: "Jobs per minute",
    times,
    series: [
      { values: minutes.map((m) => m.succeeded), className: "bar-ok", label: "succeeded" },
      { values: minutes.map((m) => m.failed), className: "bar-bad", label: "failed" },
    ],
  });
  const ipd = minutes.map((m) => (m.cost_usd > 0 ? m.images / m.cost_usd : null));
  if (ipd.every((v) => v === null)) {
    render(
      $("#chart-ipd"),
      h("p.chart-empty", "No GPU cost recorded in the last hour. Workers report a price with --price-per-hour; images per dollar appear once they do."),
    );
  } else {
    lineChart($("#chart-ipd"), { title: "Images per dollar", times, values: ipd, format: (v) => count(Math.round(v)) });
  }
}

async function unquarantine(worker) {
  try {
    await api(`v1/admin/workers/${encodeURIComponent(worker.id)}/unquarantine`, { method: "POST" });
    toast(`${worker.name} takes work again`, { kind: "ok" });
    await refresh();
  } catch (err) {
    showError(err, "Unquarantine");
  }
}

function workerRow(w) {
  const models = w.loaded_models || [];
  const stateTone = w.state === "active" && !w.online ? "offline" : w.state;
  return h(
    "tr",
    { dataset: { workerId: w.id, state: w.state } },
    h(
      "td.col-worker",
      h("div.worker-name", h(`span.dot.${w.online ? "on" : "off"}`, { title: w.online ? "online" : `last seen ${ago(w.last_seen_at)}` }), w.name),
      h("div.muted.tiny", h("code", shortId(w.id)), ` · ${w.engine || "engine?"} ${w.version || ""}`),
    ),
    h(
      "td",
      { dataset: { label: "GPU" } },
      h("div", w.gpu_name || "—"),
      h("div.muted.tiny", [w.gpu_memory_mb ? `${(w.gpu_memory_mb / 1024).toFixed(0)} GB` : null, w.price_per_hour ? `${usd(w.price_per_hour)}/h` : null].filter(Boolean).join(" · ")),
    ),
    h(
      "td",
      { dataset: { label: "State" } },
      h(`span.state-badge.${stateTone}`, w.state === "active" && !w.online ? "offline" : w.state),
      w.quarantine_reason ? h("div.wait-reason", { title: w.quarantine_reason }, w.quarantine_reason) : null,
      w.quarantined_until ? h("div.muted.tiny", `until ${new Date(w.quarantined_until * 1000).toLocaleTimeString()}`) : null,
    ),
    h("td", { dataset: { label: "Current job" } }, w.current_jobs.length ? w.current_jobs.map((id) => h("code.job-chip", { title: id }, shortId(id))) : h("span.muted", "idle")),
    h(
      "td.col-models",
      { dataset: { label: "Loaded models" } },
      models.slice(0, 4).map((m) => h("span.model-chip", { title: m }, m)),
      models.length > 4 ? h("span.muted.tiny", ` +${models.length - 4}`) : null,
      models.length ? null : h("span.muted", "—"),
    ),
    h("td.num", { dataset: { label: "Done" } }, count(w.jobs_done)),
    h("td.num", { class: w.jobs_failed ? "error-text" : null, dataset: { label: "Failures" } }, count(w.jobs_failed)),
    h("td.num", { dataset: { label: "Engine time" } }, w.engine_seconds ? duration(w.engine_seconds) : "—"),
    h(
      "td.col-actions",
      w.state === "quarantined" ? h("button.secondary.small", { type: "button", onclick: () => unquarantine(w) }, "Unquarantine") : null,
    ),
  );
}

/** "2 in memory · 1 on disk" of ``total`` live workers, or a warning when none holds a model in demand. */
function warmth(m, total) {
  const parts = [];
  if (m.workers_loaded) parts.push(`${m.workers_loaded} in memory`);
  if (m.workers_cached) parts.push(`${m.workers_cached} on disk`);
  if (parts.length) return h("span", { title: `of ${total} live workers` }, parts.join(" · "));
  return m.queued ? h("span.error-text", "none — every job loads it") : h("span.muted", "—");
}

function demandRow(m, total) {
  const wait = (v) => (v == null ? "—" : duration(v));
  return h(
    "tr",
    { dataset: { model: m.name } },
    h("td.col-worker", h("div.worker-name", m.name), h("div.muted.tiny", m.kind || "not in the registry")),
    h("td.num", { dataset: { label: "Queued" } }, count(m.queued)),
    h("td.num", { dataset: { label: "Running" } }, count(m.running)),
    h("td.col-warm", { dataset: { label: "Warm on" } }, warmth(m, total)),
    h(
      "td.num",
      { dataset: { label: "Waiting now" }, title: m.queued ? `longest ${wait(m.queued_wait_max_seconds)}` : null },
      m.queued ? `${wait(m.queued_wait_avg_seconds)} avg · ${wait(m.queued_wait_max_seconds)} max` : "—",
    ),
    h(
      "td.num",
      { dataset: { label: "Wait, last 15 min" } },
      m.recent_jobs ? `${wait(m.recent_wait_avg_seconds)} (${count(m.recent_jobs)} jobs)` : "—",
    ),
  );
}

function showDemand(demand) {
  const models = [...demand.models].sort((a, b) => b.queued - a.queued || b.running - a.running || a.name.localeCompare(b.name));
  render($("#demand-body"), models.map((m) => demandRow(m, demand.workers_online)));
  $("#demand-empty").hidden = models.length > 0;
}

async function refresh() {
  try {
    const [stats, { workers }, demand, tenants] = await Promise.all([
      api("v1/admin/stats"),
      api("v1/admin/workers"),
      api("v1/fleet/models"),
      api("v1/admin/tenants"),
    ]);
    $("#fleet-denied").hidden = true;
    $("#fleet-content").hidden = false;
    showCards(stats, workers);
    showCharts(stats);
    const sorted = [...workers].sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
    render($("#workers-body"), sorted.map(workerRow));
    $("#workers-empty").hidden = workers.length > 0;
    showDemand(demand);
    render($("#tenants-body"), tenants.tenants.map(tenantRow));
    $("#tenants-quota-off").hidden = tenants.enforced;
  } catch (err) {
    if (err.status === 403) {
      $("#fleet-content").hidden = true;
      render(
        $("#fleet-denied"),
        h("h2", "The fleet page is for operators"),
        h("p", `${err.message}. Use an admin key (sdfleet keys create --scope admin) to see workers and statistics.`),
      );
      $("#fleet-denied").hidden = false;
      return;
    }
    throw err;
  }
}

export function initFleet({ isActive }) {
  const load = () => refresh().catch((err) => showError(err, "Fleet"));
  every(3000, load, isActive);
  return { shown: load };
}
