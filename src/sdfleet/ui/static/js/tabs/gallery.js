// The Gallery tab: every output of my succeeded jobs, newest first, a page of jobs at a time
// (the jobs list's cursor), loading more as you scroll. Click an image for the full-size viewer.
import { api } from "../api.js";
import { $ } from "../dom.js";
import { outputItems, imageTile } from "../run-card.js";
import { showError } from "../toast.js";

const PAGE = 24;
const grid = $("#gallery-grid");
let items = [];
let cursor = null;
let loading = false;

async function loadPage(reset = false) {
  if (loading) return;
  loading = true;
  try {
    const page = await api("v1/jobs", { query: { state: "succeeded", limit: PAGE, cursor: reset ? undefined : cursor } });
    if (reset) {
      items = [];
      grid.replaceChildren();
    }
    const start = items.length;
    for (const job of page.jobs) items.push(...outputItems(job));
    // Tiles share one items array, so the viewer can browse across pages.
    grid.append(...items.slice(start).map((_, i) => imageTile(items, start + i, { compact: true })));
    cursor = page.next_cursor;
    $("#gallery-more").hidden = !cursor;
    $("#gallery-empty").hidden = items.length > 0;
    $("#gallery-summary").textContent = `${items.length} image${items.length === 1 ? "" : "s"}${cursor ? " so far" : ""}`;
  } finally {
    loading = false;
  }
}

export function initGallery() {
  $("#gallery-refresh").addEventListener("click", () => loadPage(true).catch((e) => showError(e, "Gallery")));
  $("#gallery-more").addEventListener("click", () => loadPage().catch((e) => showError(e, "Gallery")));
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && cursor && !$("#tab-gallery").hidden) {
      loadPage().catch((e) => showError(e, "Gallery"));
    }
  }, { rootMargin: "600px" }).observe($("#gallery-sentinel"));
  return {
    /** Called when the tab is shown: the first visit loads, later visits pick up new images. */
    shown() {
      loadPage(true).catch((e) => showError(e, "Gallery"));
    },
  };
}
