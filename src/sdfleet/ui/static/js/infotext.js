// A1111 infotext (the "parameters" text in generated PNGs), read the way A1111 1.10 reads it — a
// port of the essential rules of sdfleet/a1111/infotext.py — and mapped to job parameters.
//
//   <prompt, possibly several lines>
//   Negative prompt: <negative prompt, possibly several lines>
//   Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, …

const NEGATIVE_PREFIX = "Negative prompt:";
// A key (a word character, then word characters, spaces, "-" or "/"), a colon, and a value that is
// either a JSON-quoted string or anything up to the next comma.
const PARAM = /\s*([\p{L}\p{N}_][\p{L}\p{N}_ \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/gu;
const IMAGE_SIZE = /^(\d+)x(\d+)$/;

/** Undo A1111's quoting: a value in double quotes is JSON when it parses as a string. */
export function unquote(text) {
  if (text.length < 2 || text[0] !== '"' || text.at(-1) !== '"') return text;
  try {
    const decoded = JSON.parse(text);
    return typeof decoded === "string" ? decoded : text;
  } catch {
    return text;
  }
}

/**
 * Split an infotext into prompt, negative prompt and the [key, value] pairs of its last line. The
 * last line holds parameters only if the key/value pattern matches it at least 3 times; otherwise
 * it belongs to the prompt. Lines from the one starting with "Negative prompt:" on are the negative.
 */
export function splitInfotext(text) {
  const lines = String(text).replace(/\r\n?/g, "\n").trim().split("\n");
  let last = lines.pop() ?? "";
  if ([...last.matchAll(PARAM)].length < 3) {
    lines.push(last);
    last = "";
  }
  let prompt = "";
  let negative = "";
  let inNegative = false;
  for (const raw of lines) {
    let line = raw.trim();
    if (line.startsWith(NEGATIVE_PREFIX)) {
      inNegative = true;
      line = line.slice(NEGATIVE_PREFIX.length).trim();
    }
    if (inNegative) negative += (negative ? "\n" : "") + line;
    else prompt += (prompt ? "\n" : "") + line;
  }
  const pairs = [];
  for (const [, key, value] of last.matchAll(PARAM)) {
    if (!value) continue; // A1111 skips a pair with an empty value
    pairs.push([key, value[0] === '"' && value.at(-1) === '"' ? unquote(value) : value]);
  }
  return { prompt, negative, pairs };
}

/** A1111's rule: "Size: 512x768" becomes "Size-1": "512" and "Size-2": "768". */
export function splitSizes(pairs) {
  const out = new Map();
  for (const [key, value] of pairs) {
    const size = IMAGE_SIZE.exec(value);
    if (size) {
      out.set(`${key}-1`, size[1]);
      out.set(`${key}-2`, size[2]);
    } else {
      out.set(key, value);
    }
  }
  return out;
}

const fold = (s) => String(s).trim().toLowerCase();

function matchSampler(name, catalog) {
  const samplers = catalog.samplers || [];
  const exact = samplers.find((s) => s.name === name || s.aliases?.includes(name));
  if (exact) return { sampler: exact.name, scheduler: null };
  const folded = samplers.find((s) => fold(s.name) === fold(name) || s.aliases?.some((a) => fold(a) === fold(name)));
  if (folded) return { sampler: folded.name, scheduler: null };
  // A legacy combined name: "DPM++ 2M Karras" is sampler "DPM++ 2M" with the Karras schedule.
  for (const sched of catalog.schedulers || []) {
    const suffix = ` ${sched.label}`;
    if (name.endsWith(suffix)) {
      const base = matchSampler(name.slice(0, -suffix.length), catalog);
      if (base.sampler) return { sampler: base.sampler, scheduler: sched.name };
    }
  }
  return { sampler: null, scheduler: null };
}

function matchScheduler(label, catalog) {
  const found = (catalog.schedulers || []).find(
    (s) => fold(s.label) === fold(label) || fold(s.name) === fold(label) || s.aliases?.some((a) => fold(a) === fold(label)),
  );
  return found ? found.name : null;
}

function matchModel(name, hash, models) {
  if (!models?.length) return null;
  if (hash) {
    const byHash = models.find((m) => m.hash && (m.hash === hash || m.sha256?.startsWith(hash.toLowerCase())));
    if (byHash) return byHash.name;
  }
  const base = (s) => fold(s).replace(/\.(safetensors|ckpt|pt|bin)$/, "");
  return models.find((m) => base(m.name) === base(name))?.name ?? null;
}

const int = (v) => {
  const n = Number.parseInt(v, 10);
  return Number.isFinite(n) ? n : null;
};
const num = (v) => {
  const n = Number.parseFloat(v);
  return Number.isFinite(n) ? n : null;
};

/**
 * Map an infotext to job parameters (GenerationSpec field names). `catalog` has the samplers,
 * schedulers and registry models to match names against. Returns {params, notes}: notes say what
 * could not be used ("checkpoint 'x' is not in the registry").
 */
export function infotextToParams(text, catalog = {}) {
  const { prompt, negative, pairs } = splitInfotext(text);
  const found = splitSizes(pairs);
  const params = { prompt, negative_prompt: negative };
  const notes = [];
  const take = (key, name, convert) => {
    if (!found.has(key)) return;
    const value = convert(found.get(key));
    if (value !== null) params[name] = value;
  };
  take("Steps", "steps", int);
  take("CFG scale", "cfg_scale", num);
  take("Seed", "seed", int);
  take("Size-1", "width", int);
  take("Size-2", "height", int);
  take("Clip skip", "clip_skip", int);
  take("Variation seed", "subseed", int);
  take("Variation seed strength", "subseed_strength", num);
  take("Mask blur", "mask_blur", int);
  take("Eta", "eta", num);
  if (found.has("Sampler")) {
    const { sampler, scheduler } = matchSampler(found.get("Sampler"), catalog);
    if (sampler) params.sampler_name = sampler;
    else notes.push(`sampler "${found.get("Sampler")}" is unknown here`);
    if (scheduler) params.scheduler = scheduler;
  }
  if (found.has("Schedule type")) {
    const scheduler = matchScheduler(found.get("Schedule type"), catalog);
    if (scheduler) params.scheduler = scheduler;
    else notes.push(`schedule type "${found.get("Schedule type")}" is unknown here`);
  }
  const hires = ["Hires upscale", "Hires resize-1", "Hires steps", "Hires upscaler"].some((k) => found.has(k));
  if (hires) {
    params.enable_hr = true;
    take("Hires upscale", "hr_scale", num);
    take("Hires resize-1", "hr_resize_x", int);
    take("Hires resize-2", "hr_resize_y", int);
    take("Hires steps", "hr_second_pass_steps", int);
    take("Hires upscaler", "hr_upscaler", String);
    take("Denoising strength", "hr_denoising_strength", num);
  } else {
    take("Denoising strength", "denoising_strength", num);
  }
  for (const [key, field, kind] of [
    ["Model", "model", "checkpoints"],
    ["VAE", "vae", "vaes"],
  ]) {
    if (!found.has(key)) continue;
    const name = matchModel(found.get(key), found.get(`${key} hash`), catalog[kind]);
    if (name) params[field] = name;
    else notes.push(`${field === "model" ? "checkpoint" : "VAE"} "${found.get(key)}" is not in the registry`);
  }
  return { params, notes };
}

/** The infotext as display rows: prompt, negative prompt, then every key/value as written. */
export function infotextRows(text) {
  const { prompt, negative, pairs } = splitInfotext(text);
  return [["Prompt", prompt], ...(negative ? [["Negative prompt", negative]] : []), ...pairs];
}
