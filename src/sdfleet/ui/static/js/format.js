// Formatting numbers, times and money for people.

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${s ? `${s} s` : ""}`.trim();
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function ago(epochSeconds) {
  if (!epochSeconds) return "—";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(epochSeconds * 1000).toLocaleDateString();
}

export function clock(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toLocaleTimeString() : "—";
}

export function usd(value) {
  if (!value) return "$0";
  if (value < 0.01) return `$${value.toFixed(5)}`;
  return `$${value.toFixed(value < 10 ? 3 : 2)}`;
}

export function count(n) {
  return Number(n || 0).toLocaleString();
}

export function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function shortId(id) {
  return id ? id.slice(-8) : "";
}

export function truncate(text, n) {
  const s = String(text || "").replace(/\s+/g, " ").trim();
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
