// The X/Y/Z plot's axes: what each one changes, and A1111's value syntax —
//   "1, 5, 9"      a list            "1-5"          1, 2, 3, 4, 5
//   "1-10 (+3)"    1, 4, 7, 10        "1-2 [5]"      5 evenly spaced values from 1 to 2
// Lists of names are comma-separated; quote a name that contains a comma ("a, b").

export class AxisError extends Error {}

const RANGE_STEP = /^\s*(-?\d+(?:\.\d*)?)\s*-\s*(-?\d+(?:\.\d*)?)\s*\(\s*([+-]?\d+(?:\.\d*)?)\s*\)\s*$/;
const RANGE_COUNT = /^\s*(-?\d+(?:\.\d*)?)\s*-\s*(-?\d+(?:\.\d*)?)\s*\[\s*(\d+)\s*\]\s*$/;
const RANGE = /^\s*(-?\d+)\s*-\s*(-?\d+)\s*$/;

/** Split "a, \"b, c\", d" into ["a", "b, c", "d"]. */
export function splitList(text) {
  const out = [];
  let cur = "";
  let quoted = false;
  for (const c of text) {
    if (c === '"') quoted = !quoted;
    else if (c === "," && !quoted) {
      out.push(cur.trim());
      cur = "";
    } else cur += c;
  }
  out.push(cur.trim());
  return out.filter((v) => v !== "");
}

const round = (v) => Math.round(v * 1e6) / 1e6;

/** Numbers with A1111's range syntax; `integer` rounds (and checks) them. */
export function parseNumbers(text, integer) {
  const values = [];
  for (const part of splitList(text)) {
    let m;
    if ((m = RANGE_STEP.exec(part))) {
      const [a, b, step] = [Number(m[1]), Number(m[2]), Number(m[3])];
      if (!step || Math.sign(step) !== Math.sign(b - a || step)) throw new AxisError(`"${part}": the step goes the wrong way`);
      for (let v = a; step > 0 ? v <= b + 1e-9 : v >= b - 1e-9; v += step) values.push(round(v));
    } else if ((m = RANGE_COUNT.exec(part))) {
      const [a, b, n] = [Number(m[1]), Number(m[2]), Number(m[3])];
      if (n < 1) throw new AxisError(`"${part}": the count must be at least 1`);
      for (let i = 0; i < n; i += 1) values.push(round(n === 1 ? a : a + ((b - a) * i) / (n - 1)));
    } else if ((m = RANGE.exec(part)) && integer) {
      const [a, b] = [Number(m[1]), Number(m[2])];
      for (let v = a; a <= b ? v <= b : v >= b; v += a <= b ? 1 : -1) values.push(v);
    } else {
      const v = Number(part);
      if (part === "" || !Number.isFinite(v)) throw new AxisError(`"${part}" is not a number`);
      values.push(v);
    }
  }
  if (integer) {
    return values.map((v) => {
      if (Math.abs(v - Math.round(v)) > 1e-6) throw new AxisError(`${v} is not a whole number`);
      return Math.round(v);
    });
  }
  return values;
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Set the weight of <lora:name:…> in a prompt, adding the tag when it is not there. */
export function setLoraWeight(prompt, name, weight) {
  const tag = new RegExp(`<lora:${escapeRegExp(name)}(:[^>]*)?>`);
  const replacement = `<lora:${name}:${weight}>`;
  return tag.test(prompt) ? prompt.replace(tag, replacement) : `${prompt} ${replacement}`.trim();
}

/** LoRA names used in a prompt's <lora:name:w> tags. */
export function lorasInPrompt(prompt) {
  return [...String(prompt).matchAll(/<lora:([^:>]+)/g)].map((m) => m[1]);
}

/**
 * The axis types. parse(text, ctx) → values; apply(params, value, ctx) changes a copy's params;
 * options(ctx) lists the names a "fill in all" button offers.
 */
export const AXIS_TYPES = {
  seed: { label: "Seed", placeholder: "1, 2, 3 or 100-104", parse: (t) => parseNumbers(t, true), apply: (p, v) => (p.seed = v) },
  steps: { label: "Steps", placeholder: "10, 20, 30 or 10-40 (+10)", parse: (t) => parseNumbers(t, true), apply: (p, v) => (p.steps = v) },
  cfg: { label: "CFG scale", placeholder: "4, 7, 10 or 3-12 [4]", parse: (t) => parseNumbers(t, false), apply: (p, v) => (p.cfg_scale = v) },
  sampler: {
    label: "Sampler",
    placeholder: "Euler a, DPM++ 2M",
    options: (ctx) => ctx.catalog.samplers.map((s) => s.name),
    parse: (t, ctx) => {
      const names = ctx.catalog.samplers.map((s) => s.name);
      return splitList(t).map((v) => {
        const found = names.find((n) => n.toLowerCase() === v.toLowerCase());
        if (!found) throw new AxisError(`unknown sampler "${v}"`);
        return found;
      });
    },
    apply: (p, v) => (p.sampler_name = v),
  },
  checkpoint: {
    label: "Checkpoint",
    placeholder: "names from the registry",
    options: (ctx) => ctx.catalog.checkpoints.map((m) => m.name),
    parse: (t, ctx) => {
      const names = ctx.catalog.checkpoints.map((m) => m.name);
      if (!names.length) throw new AxisError("the model registry has no checkpoints");
      return splitList(t).map((v) => {
        if (!names.includes(v)) throw new AxisError(`no checkpoint "${v}" in the registry`);
        return v;
      });
    },
    apply: (p, v) => (p.model = v),
  },
  lora: {
    label: "LoRA weight",
    placeholder: "0, 0.5, 1 or 0-1 [5]",
    needsLora: true,
    parse: (t, ctx, axis) => {
      if (!axis.lora) throw new AxisError("pick the LoRA whose weight changes");
      return parseNumbers(t, false);
    },
    apply: (p, v, ctx, axis) => (p.prompt = setLoraWeight(p.prompt || "", axis.lora, v)),
  },
  prompt_sr: {
    label: "Prompt S/R",
    placeholder: "dog, cat, fox — the first is searched for",
    parse: (t, ctx) => {
      const values = splitList(t);
      if (values.length < 1) return values;
      const prompt = `${ctx.base.prompt || ""}\n${ctx.base.negative_prompt || ""}`;
      if (!prompt.includes(values[0])) throw new AxisError(`"${values[0]}" is not in the prompt`);
      return values;
    },
    apply: (p, v, ctx, axis) => {
      const search = axis.values[0];
      p.prompt = (p.prompt || "").replaceAll(search, v);
      p.negative_prompt = (p.negative_prompt || "").replaceAll(search, v);
    },
  },
};

/** A value as a grid label: "Steps: 20", "Sampler: Euler a". */
export function axisLabel(axis, value) {
  const type = AXIS_TYPES[axis.type];
  if (axis.type === "lora") return `${axis.lora}: ${value}`;
  return `${type.label}: ${value}`;
}
