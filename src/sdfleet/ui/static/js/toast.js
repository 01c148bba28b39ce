// Notifications in the corner: errors stay until dismissed (or 10 s), the rest fade after 4 s.
import { h, icon } from "./dom.js";
import { ApiError } from "./api.js";

let region = null;

function container() {
  if (!region) {
    region = h("div.toasts", { role: "status", "aria-live": "polite" });
    document.body.append(region);
  }
  return region;
}

/** Show a message. kind: "info" | "ok" | "error". */
export function toast(message, { kind = "info", title = null, timeout } = {}) {
  const close = () => {
    el.classList.add("leaving");
    setTimeout(() => el.remove(), 200);
  };
  const el = h(
    `div.toast.${kind}`,
    { role: kind === "error" ? "alert" : null },
    h("div.toast-body", title ? h("strong", title) : null, h("span", message)),
    h("button.icon-button", { type: "button", title: "Dismiss", onclick: close }, icon("x", "Dismiss")),
  );
  container().append(el);
  setTimeout(close, timeout ?? (kind === "error" ? 10000 : 4000));
  return close;
}

const recent = new Map(); // message → when it was last shown
const REPEAT_MS = 15000;

/**
 * Show an error: the API's message and the field it names, or any other error's message. The
 * same message is not repeated within 15 s (pages that refresh on a timer would otherwise pile up).
 */
export function showError(err, context = "") {
  if (err?.name === "AbortError") return;
  console.warn(context, err);
  const api = err instanceof ApiError;
  const title = api ? (context ? `${context}: ${err.code}` : err.code) : context || "Error";
  const message = api ? err.text : String(err?.message || err);
  const key = `${title}|${message}`;
  const now = Date.now();
  if (now - (recent.get(key) || 0) < REPEAT_MS) return;
  recent.set(key, now);
  toast(message, { kind: "error", title });
}
