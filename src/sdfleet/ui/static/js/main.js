// The page's entry point: tabs (with the URL hash), the API key dialog, the account chip, the
// queue badge and keyboard shortcuts. Each tab lives in its own module under tabs/.
import { api, auth } from "./api.js";
import { $, debounce, every, render } from "./dom.js";
import { on } from "./bus.js";
import { catalog, onCatalog, refreshCatalog, refreshAccount } from "./catalog.js";
import { count, usd } from "./format.js";
import { quotaMeter } from "./quota.js";
import { showError, toast } from "./toast.js";
import { initGenerate, generate } from "./tabs/generate.js";
import { initQueue } from "./tabs/queue.js";
import { initGallery } from "./tabs/gallery.js";
import { initPngInfo } from "./tabs/pnginfo.js";
import { initXyz } from "./tabs/xyz.js";
import { initFleet } from "./tabs/fleet.js";
import { initTrain } from "./tabs/train.js";
import { initExtras } from "./tabs/extras.js";

const TABS = ["generate", "queue", "gallery", "extras", "pnginfo", "xyz", "train", "fleet"];
let active = null;
const views = {};

function showTab(name, { focus = false } = {}) {
  if (!TABS.includes(name)) name = "generate";
  if (name === active) return;
  active = name;
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`#tabbtn-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`#tab-${tab}`).hidden = !selected;
  }
  $(`#tabbtn-${name}`).scrollIntoView({ block: "nearest", inline: "nearest" });
  if (focus) $(`#tabbtn-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  document.title = `${$(`#tabbtn-${name}`).firstChild.textContent.trim()} · sdfleet`;
  views[name]?.shown?.();
}

function bindTabs() {
  const list = $(".tabs");
  list.addEventListener("click", (e) => {
    const button = e.target.closest("[data-tab]");
    if (button) showTab(button.dataset.tab);
  });
  list.addEventListener("keydown", (e) => {
    const i = TABS.indexOf(active);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    showTab(TABS[(next + TABS.length) % TABS.length], { focus: true });
  });
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
  on("show-tab", (name) => showTab(name));
}

// ------------------------------------------------------------------ API key

const dialog = $("#key-dialog");

function askForKey(reason) {
  if (dialog.open) return;
  $("#key-reason").textContent = reason || "This server needs an API key. It is kept in this browser only.";
  $("#key-input").value = auth.key;
  $("#key-error").hidden = true;
  dialog.showModal();
  $("#key-input").focus();
}

function bindKeyDialog() {
  $("#key-button").addEventListener("click", () =>
    askForKey(auth.key ? "The API key this browser uses. Replace it, or forget it." : "Calls go without a key (this server allows it on loopback while it has no API keys). Set one to act as a tenant."),
  );
  $("#key-cancel").addEventListener("click", () => dialog.close());
  $("#key-clear").addEventListener("click", () => {
    auth.set("");
    dialog.close();
    toast("The API key is forgotten in this browser.");
  });
  $("#key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = $("#key-input").value.trim();
    const previous = auth.key;
    auth.set(key);
    try {
      await api("v1/account");
      dialog.close();
      toast("Key saved", { kind: "ok" });
    } catch (err) {
      auth.set(previous);
      $("#key-error").textContent = err.text || err.message;
      $("#key-error").hidden = false;
    }
  });
  window.addEventListener("sdfleet:auth-required", (e) =>
    askForKey(auth.key ? `The server refused the saved key: ${e.detail.message}` : "This server needs an API key. It is kept in this browser only."),
  );
  window.addEventListener("sdfleet:key-changed", () => {
    refreshCatalog().then(reportCatalogErrors);
  });
}

function reportCatalogErrors(errors) {
  for (const err of errors) if (err.status !== 401) showError(err, "Loading");
}

// ------------------------------------------------------------------ header

function showAccount() {
  const a = catalog.account;
  const chip = $("#account-chip");
  if (!a) {
    chip.textContent = "";
    render($("#quota-slot"));
    return;
  }
  chip.textContent = `${a.tenant} · ${count(a.usage.images)} images · ${usd(a.usage.cost_usd)}`;
  chip.title = `Tenant ${a.tenant} (${a.scopes.join(", ")}): ${count(a.usage.jobs)} jobs, ${count(a.usage.images)} images, ${usd(a.usage.cost_usd)} of GPU time`;
  render($("#quota-slot"), quotaMeter(a.quota));
  $("#tabbtn-fleet").hidden = !a.scopes.includes("admin");
}

async function updateBadge() {
  const { jobs } = await api("v1/jobs", { query: { state: ["queued", "running"], limit: 100 } });
  const badge = $("#queue-badge");
  badge.hidden = !jobs.length;
  badge.textContent = jobs.length >= 100 ? "99+" : String(jobs.length);
}

// ------------------------------------------------------------------ keyboard

function bindKeys() {
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      if (active === "generate") {
        e.preventDefault();
        generate();
      } else if (active === "xyz") {
        e.preventDefault();
        views.xyz.submit();
      } else if (active === "extras") {
        e.preventDefault();
        views.extras.submit();
      }
    }
  });
}

async function main() {
  bindTabs();
  bindKeyDialog();
  bindKeys();
  onCatalog(showAccount);
  initGenerate();
  views.queue = initQueue({ isActive: () => active === "queue" });
  views.gallery = initGallery();
  views.extras = initExtras();
  initPngInfo();
  views.xyz = initXyz();
  views.train = initTrain({ isActive: () => active === "train" });
  views.fleet = initFleet({ isActive: () => active === "fleet" });
  showTab(location.hash.slice(1) || "generate");
  reportCatalogErrors(await refreshCatalog());
  every(4000, updateBadge);
  every(30000, refreshAccount);
  on("job-submitted", () => updateBadge().catch(() => {}));
  on("job-submitted", debounce(() => refreshAccount().catch(() => {}), 400)); // the quota meter
  on(
    "job-finished",
    debounce(() => {
      updateBadge().catch(() => {});
      refreshAccount().catch(() => {});
    }, 400),
  );
}

main();
