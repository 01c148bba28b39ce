// What is left of the caller's quotas (GET /v1/account → quota), for the header's meter, and the
// tenants' limits for the Fleet tab. A limit of null is unlimited.
import { h } from "./dom.js";
import { count, duration } from "./format.js";

/** Each limited resource as {key, label, left, limit, text}; the fraction left is left / limit. */
export function quotaParts(quota) {
  if (!quota || !quota.enforced) return [];
  const parts = [];
  if (quota.rate) {
    parts.push({
      key: "rate",
      label: "submit burst",
      left: quota.rate.available,
      limit: quota.rate.burst,
      text: `${count(Math.floor(quota.rate.available))} of ${count(quota.rate.burst)} jobs now (refills ${count(quota.rate.per_second)}/s)`,
    });
  }
  const c = quota.concurrent;
  if (c && c.limit !== null) {
    parts.push({ key: "concurrent", label: "queued + running", left: c.available, limit: c.limit, text: `${count(c.live)} of ${count(c.limit)} jobs queued or running` });
  }
  const g = quota.gpu_seconds;
  if (g) {
    parts.push({ key: "gpu", label: "GPU today", left: g.available, limit: g.per_day, text: `${duration(g.available)} of ${duration(g.per_day)} GPU time left (a sliding day)` });
  }
  return parts;
}

/** The header's meter: the tightest limit as a bar, every limit in its tooltip. */
export function quotaMeter(quota) {
  const parts = quotaParts(quota);
  if (!parts.length) return null;
  const tight = parts.reduce((a, b) => (b.left / b.limit < a.left / a.limit ? b : a));
  const fraction = Math.max(0, Math.min(1, tight.left / tight.limit));
  const tone = fraction < 0.1 ? "bad" : fraction < 0.3 ? "warn" : "ok";
  const lines = parts.map((p) => `${p.label}: ${p.text}`);
  if (quota.max_job_gpu_seconds) lines.push(`largest job: ${duration(quota.max_job_gpu_seconds)} of GPU time`);
  return h(
    `span.quota-meter.${tone}`,
    { title: `Your quota\n${lines.join("\n")}`, dataset: { limit: tight.key }, role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(fraction * 100)), "aria-label": `${tight.label} left` },
    h("span.quota-label", tight.label),
    h("span.quota-bar", h("span.quota-fill", { style: { width: `${(fraction * 100).toFixed(1)}%` } })),
    h("span.quota-pct", `${Math.round(fraction * 100)}%`),
  );
}

function limitCell(limits, custom, name, fmt = (v) => count(v)) {
  const value = limits[name];
  return h(
    "td.num",
    { class: custom.includes(name) ? "custom-limit" : null, title: custom.includes(name) ? "set for this tenant" : "the server's default" },
    value === null || value === undefined ? h("span.muted", "∞") : fmt(value),
  );
}

/** One row of the Fleet tab's tenants table (GET /v1/admin/tenants). */
export function tenantRow(t) {
  const { limits, custom } = t;
  return h(
    "tr",
    { dataset: { tenant: t.id } },
    h("td.col-worker", h("div.worker-name", t.id)),
    limitCell(limits, custom, "rate", (v) => `${count(v)}/s`),
    limitCell(limits, custom, "burst"),
    limitCell(limits, custom, "max_concurrent"),
    limitCell(limits, custom, "gpu_seconds_per_day", duration),
    limitCell(limits, custom, "max_job_gpu_seconds", duration),
    limitCell(limits, custom, "weight", (v) => `×${v}`),
  );
}
