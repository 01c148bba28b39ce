// Tiny DOM helpers: an element builder and query shortcuts. No framework, no virtual DOM.

/**
 * Build an element: h("button.primary#go", {onclick, title: "…", dataset: {id: 1}}, "Go", child…).
 * Attributes: `class`, `dataset`, `style` (object), `on<event>` handlers, booleans (true → present,
 * false/null → absent), anything else set as an attribute. Children: strings, nodes, arrays, null.
 */
export function h(spec, attrs = {}, ...children) {
  const [, tag = "div", id, classes] = /^([\w-]*)(?:#([\w-]+))?((?:\.[\w-]+)*)$/.exec(spec) || [];
  const el = document.createElement(tag || "div");
  if (id) el.id = id;
  if (classes) el.className = classes.slice(1).replaceAll(".", " ");
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.classList.add(...String(value).split(/\s+/).filter(Boolean));
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** Replace an element's children. */
export function render(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An inline SVG icon from the sprite in index.html. */
export function icon(name, label) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", label ? "false" : "true");
  if (label) svg.setAttribute("aria-label", label);
  const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

/**
 * Make `zone` a file drop zone for the file `input`: click or Enter/Space opens the chooser, and
 * files chosen or dropped (on `target`, the zone unless given) go to `onFiles(fileList)`.
 */
export function dropZone(zone, input, onFiles, target = zone) {
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  input.addEventListener("change", () => {
    onFiles(input.files);
    input.value = ""; // choosing the same file again is a change too
  });
  target.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  target.addEventListener("dragleave", (e) => {
    if (!target.contains(e.relatedTarget)) zone.classList.remove("over");
  });
  target.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles(e.dataTransfer.files);
  });
}

/** Run `fn` at most once per `ms`, with the last arguments (trailing call guaranteed). */
export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Call `fn` every `ms` while the page is visible and `active()` says so; returns a stop function. */
export function every(ms, fn, active = () => true) {
  let stopped = false;
  let timer = 0;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden && active()) {
      try {
        await fn();
      } catch (err) {
        console.warn(err);
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, 0);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
