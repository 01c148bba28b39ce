// What the page offers in its pickers: samplers, schedulers, upscalers and face restorers (the A1111
// API's read-only lists), registry models by kind, and the caller's account.
import { api } from "./api.js";

export const catalog = {
  samplers: [],
  schedulers: [],
  upscalers: [], // every hires upscaler name: latent modes, built-in resizes, registered upscalers
  latentUpscalers: [], // names of the hires fix's latent modes
  pixelUpscalers: [], // /sdapi/v1/upscalers: the built-in resizes, then each registered net ({name, model_name, scale})
  faceRestorers: [], // registered face restorers ({name, arch}: gfpgan or codeformer)
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
  return { latent: latent.map((u) => u.name), pixel };
}

/** Face restorers: the A1111 list (names) and the registry's face_restorer models (with their family). */
async function loadFaceRestorers() {
  const [listed, models] = await Promise.all([api("sdapi/v1/face-restorers"), loadModels("face_restorer")]);
  const byName = new Map(models.map((m) => [m.name, { name: m.name, arch: m.arch }]));
  // The A1111 list names a registered family by A1111's name (GFPGAN, CodeFormer): already covered.
  const families = new Set(models.map((m) => (m.arch || "").toLowerCase()));
  for (const item of listed) {
    if (!byName.has(item.name) && !families.has(item.name.toLowerCase())) {
      byName.set(item.name, { name: item.name, arch: null });
    }
  }
  return [...byName.values()];
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
    loadFaceRestorers(),
  ]);
  const [samplers, upscalers, checkpoints, vaes, loras, embeddings, account, faces] = results;
  if (samplers.status === "fulfilled") {
    catalog.samplers = samplers.value.samplers;
    catalog.schedulers = samplers.value.schedulers;
  }
  if (upscalers.status === "fulfilled") {
    catalog.latentUpscalers = upscalers.value.latent;
    catalog.pixelUpscalers = upscalers.value.pixel;
    catalog.upscalers = [...upscalers.value.latent, ...upscalers.value.pixel.map((u) => u.name)];
  }
  if (faces.status === "fulfilled") catalog.faceRestorers = faces.value;
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
