// Small SVG charts for the fleet page: bars per minute (stacked) and a line. No library needed.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An axis label: whole numbers as they are, others with one decimal. */
function tick(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function niceMax(value) {
  if (value <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * p) return m * p;
  return 10 * p;
}

function frame(width, height, max, format) {
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img" });
  const pad = { l: 40, r: 8, t: 8, b: 20 };
  for (const f of [0, 0.5, 1]) {
    const y = pad.t + (height - pad.t - pad.b) * (1 - f);
    svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, class: "grid-line" }));
    svg.append(el("text", { x: pad.l - 6, y: y + 4, class: "axis-label", "text-anchor": "end" }, format(max * f)));
  }
  return { svg, pad };
}

function timeLabels(svg, pad, width, height, times) {
  if (!times.length) return;
  const plotW = width - pad.l - pad.r;
  const anchors = [
    [0, "start", pad.l],
    [Math.floor(times.length / 2), "middle", null],
    [times.length - 1, "end", width - pad.r],
  ];
  for (const [i, anchor, fixed] of anchors) {
    const x = fixed ?? pad.l + (plotW * (i + 0.5)) / times.length;
    const label = new Date(times[i] * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    svg.append(el("text", { x, y: height - 4, class: "axis-label", "text-anchor": anchor }, label));
  }
}

/**
 * Stacked bars: series = [{values, className, label}], one value per slot; `times` label the slots.
 */
/** The drawing width: the container's, so text stays readable on narrow screens. */
function widthOf(container) {
  return Math.max(280, Math.round(container.clientWidth || 560));
}

export function barChart(container, { times, series, format = tick, title }) {
  const width = widthOf(container);
  const height = 180;
  const totals = times.map((_, i) => series.reduce((acc, s) => acc + (s.values[i] || 0), 0));
  const max = niceMax(Math.max(2, ...totals));
  const { svg, pad } = frame(width, height, max, format);
  svg.setAttribute("aria-label", title);
  const plotW = width - pad.l - pad.r;
  const plotH = height - pad.t - pad.b;
  const slot = plotW / Math.max(1, times.length);
  times.forEach((t, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (!v) continue;
      const hgt = (plotH * v) / max;
      const rect = el("rect", {
        x: pad.l + i * slot + slot * 0.12,
        y: pad.t + plotH - ((plotH * base) / max) - hgt,
        width: Math.max(1, slot * 0.76),
        height: hgt,
        rx: Math.min(2, slot / 4),
        class: s.className,
      });
      rect.append(el("title", {}, `${new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })} — ${s.label}: ${format(v)}`));
      svg.append(rect);
      base += v;
    }
  });
  timeLabels(svg, pad, width, height, times);
  container.replaceChildren(svg);
}

/** A line with dots; null values leave gaps. */
export function lineChart(container, { times, values, format = (v) => String(Math.round(v)), title, className = "line-a" }) {
  const width = widthOf(container);
  const height = 180;
  const max = niceMax(Math.max(0, ...values.filter((v) => v !== null)));
  const { svg, pad } = frame(width, height, max, format);
  svg.setAttribute("aria-label", title);
  const plotW = width - pad.l - pad.r;
  const plotH = height - pad.t - pad.b;
  const x = (i) => pad.l + (plotW * (i + 0.5)) / times.length;
  const y = (v) => pad.t + plotH - (plotH * v) / max;
  let d = "";
  values.forEach((v, i) => {
    if (v === null) return;
    d += `${d && values[i - 1] !== null && i > 0 ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
  });
  if (d) svg.append(el("path", { d, class: `chart-line ${className}` }));
  values.forEach((v, i) => {
    if (v === null) return;
    const dot = el("circle", { cx: x(i), cy: y(v), r: 2.5, class: `chart-dot ${className}` });
    dot.append(el("title", {}, `${new Date(times[i] * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ${format(v)}`));
    svg.append(dot);
  });
  timeLabels(svg, pad, width, height, times);
  container.replaceChildren(svg);
}
