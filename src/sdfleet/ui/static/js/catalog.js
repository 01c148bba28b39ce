// What the page offers in its pickers: samplers, schedulers and hires upscalers (the A1111 API's
// read-only lists), registry models by kind, and the caller's account.
import { api } from "./api.js";

export const catalog = {
  samplers: [],
  schedulers: [],
  upscalers: [],
  checkpoints: [],
  vaes: [],
  loras: [],
  embeddings: [],
  account: null,
};

const listeners = new Set();

/** Call `fn(catalog)` now and whenever the catalog changes. */
export function onCatalog(fn) {
  listeners.add(fn);
  fn(catalog);
  return () => listeners.delete(fn);
}

function changed() {
  for (const fn of listeners) fn(catalog);
}

async function loadSamplers() {
  const [samplers, schedulers] = await Promise.all([api("sdapi/v1/samplers"), api("sdapi/v1/schedulers")]);
  return { samplers, schedulers };
}

async function loadUpscalers() {
  const [latent, pixel] = await Promise.all([api("sdapi/v1/latent-upscale-modes"), api("sdapi/v1/upscalers")]);
  return [...latent, ...pixel].map((u) => u.name);
}

async function loadModels(kind) {
  return (await api("v1/models", { query: { kind } })).models;
}

/** (Re)load everything; errors are returned, not thrown, so one failure does not hide the rest. */
export async function refreshCatalog() {
  const results = await Promise.allSettled([
    loadSamplers(),
    loadUpscalers(),
    loadModels("checkpoint"),
    loadModels("vae"),
    loadModels("lora"),
    loadModels("embedding"),
    api("v1/account"),
  ]);
  const [samplers, upscalers, checkpoints, vaes, loras, embeddings, account] = results;
  if (samplers.status === "fulfilled") {
    catalog.samplers = samplers.value.samplers;
    catalog.schedulers = samplers.value.schedulers;
  }
  if (upscalers.status === "fulfilled") catalog.upscalers = upscalers.value;
  if (checkpoints.status === "fulfilled") catalog.checkpoints = checkpoints.value;
  if (vaes.status === "fulfilled") catalog.vaes = vaes.value;
  if (loras.status === "fulfilled") catalog.loras = loras.value;
  if (embeddings.status === "fulfilled") catalog.embeddings = embeddings.value;
  if (account.status === "fulfilled") catalog.account = account.value;
  changed();
  return results.filter((r) => r.status === "rejected").map((r) => r.reason);
}

/** Re-read just the account (usage changes as jobs finish). */
export async function refreshAccount() {
  catalog.account = await api("v1/account");
  changed();
}
