// A before/after comparison: the result with the original laid over it, cut at a split the person
// drags (a range input spans the whole picture, so a click or a drag anywhere moves it, and the arrow
// keys too), and a toggle that shows the whole original and back.
import { h, icon } from "./dom.js";

/**
 * `before` and `after` are image URLs; `width`/`height` the result's size (the frame's aspect
 * ratio until the result has loaded). Returns {element, toggle, setSplit(percent)}.
 */
export function compareView({ before, after, width, height, label = "image" }) {
  let split = 50;
  let saved = 50;
  const afterImg = h("img.compare-after", { src: after, alt: `${label}, upscaled`, decoding: "async" });
  const beforeImg = h("img", { src: before, alt: `${label}, original`, decoding: "async" });
  const beforeLayer = h("div.compare-before", beforeImg);
  const range = h("input.compare-range", {
    type: "range",
    min: "0",
    max: "100",
    step: "0.5",
    value: String(split),
    "aria-label": "Before/after split: original on the left, upscaled on the right",
  });
  const frame = h(
    "div.compare",
    { style: { aspectRatio: `${width} / ${height}` } },
    afterImg,
    beforeLayer,
    h("div.compare-handle", { "aria-hidden": "true" }, h("span.compare-knob")),
    h("span.compare-tag.before", { "aria-hidden": "true" }, "Before"),
    h("span.compare-tag.after", { "aria-hidden": "true" }, "After"),
    range,
  );
  frame.style.setProperty("--ratio", String(width / height));
  const toggle = h(
    "button.secondary.small.compare-toggle",
    { type: "button", "aria-pressed": "false", title: "Show the whole original, or go back to the split" },
    icon("compare"),
    h("span", "Before"),
  );

  function setSplit(percent, { fromToggle = false } = {}) {
    split = Math.max(0, Math.min(100, Number(percent)));
    frame.style.setProperty("--split", `${split}%`);
    frame.dataset.split = String(split);
    range.value = String(split);
    range.setAttribute("aria-valuetext", `${Math.round(split)}% original`);
    if (!fromToggle) toggle.setAttribute("aria-pressed", String(split >= 100));
  }

  range.addEventListener("input", () => setSplit(range.value));
  toggle.addEventListener("click", () => {
    const showing = toggle.getAttribute("aria-pressed") === "true";
    if (showing) {
      toggle.setAttribute("aria-pressed", "false");
      setSplit(saved >= 100 ? 50 : saved, { fromToggle: true });
    } else {
      saved = split;
      toggle.setAttribute("aria-pressed", "true");
      setSplit(100, { fromToggle: true });
    }
  });
  // the frame follows the result's real proportions once it is known
  afterImg.addEventListener("load", () => {
    frame.style.aspectRatio = `${afterImg.naturalWidth} / ${afterImg.naturalHeight}`;
    frame.style.setProperty("--ratio", String(afterImg.naturalWidth / afterImg.naturalHeight));
  });
  setSplit(split);
  return { element: frame, toggle, setSplit, afterImg, beforeImg };
}
