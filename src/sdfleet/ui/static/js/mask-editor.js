// Paint an inpainting mask over an image: brush and eraser (pointer, pen or touch), brush size,
// clear, invert, undo. The mask is kept at the image's own resolution and exported as A1111 wants
// it: white where the image is repainted, black where it is kept.
import { h, icon } from "./dom.js";

const PAINT = "#ff3d7f";
const UNDO_LIMIT = 20;

export class MaskEditor {
  constructor() {
    this.image = h("img.mask-image", { alt: "Image to inpaint", draggable: "false" });
    this.canvas = h("canvas.mask-canvas", { "aria-label": "Mask: drag to paint" });
    this.cursor = h("div.brush-cursor", { hidden: true });
    this.stage = h("div.mask-stage", { tabindex: "0", title: "Paint the area to repaint" }, this.image, this.canvas, this.cursor);
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.size = 40;
    this.erasing = false;
    this.undoStack = [];
    this.last = null;
    this.listeners = new Set();
    this.sizeInput = h("input", {
      type: "range", min: "4", max: "200", value: String(this.size), "aria-label": "Brush size",
      oninput: () => this.setSize(Number(this.sizeInput.value)),
    });
    this.brushButton = h("button.tool.active", { type: "button", title: "Brush (B)", onclick: () => this.setErasing(false) }, icon("brush"), h("span", "Brush"));
    this.eraserButton = h("button.tool", { type: "button", title: "Eraser (E)", onclick: () => this.setErasing(true) }, icon("eraser"), h("span", "Eraser"));
    this.toolbar = h(
      "div.mask-toolbar",
      this.brushButton,
      this.eraserButton,
      h("label.brush-size", h("span", "Size"), this.sizeInput),
      h("button.tool", { type: "button", title: "Undo (Ctrl+Z)", onclick: () => this.undo() }, icon("undo"), h("span", "Undo")),
      h("button.tool", { type: "button", title: "Invert the mask", onclick: () => this.invert() }, icon("invert"), h("span", "Invert")),
      h("button.tool", { type: "button", title: "Clear the mask", onclick: () => this.clear() }, icon("trash"), h("span", "Clear")),
    );
    this.element = h("div.mask-editor", this.stage, this.toolbar);
    this.bind();
  }

  bind() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || !c.width) return;
      c.setPointerCapture(e.pointerId);
      this.snapshot();
      this.last = this.point(e);
      this.stroke(this.last, this.last, e.pressure);
    });
    c.addEventListener("pointermove", (e) => {
      this.moveCursor(e);
      if (!this.last || !(e.buttons & 1)) return;
      const p = this.point(e);
      this.stroke(this.last, p, e.pressure);
      this.last = p;
    });
    const end = () => {
      if (this.last) this.changed();
      this.last = null;
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("pointerleave", () => {
      this.cursor.hidden = true;
    });
    this.stage.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
        e.preventDefault();
        this.undo();
      } else if (e.key === "[" || e.key === "]") {
        this.setSize(this.size + (e.key === "]" ? 6 : -6));
      } else if (e.key.toLowerCase() === "e") {
        this.setErasing(true);
      } else if (e.key.toLowerCase() === "b") {
        this.setErasing(false);
      }
    });
  }

  /** Show `src` (a data: or blob: URL) and size the mask to it; the old mask is dropped. */
  async setImage(src) {
    this.image.src = src;
    await this.image.decode();
    this.canvas.width = this.image.naturalWidth;
    this.canvas.height = this.image.naturalHeight;
    this.undoStack = [];
    this.changed();
  }

  get scale() {
    const rect = this.canvas.getBoundingClientRect();
    return rect.width ? this.canvas.width / rect.width : 1;
  }

  point(e) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: (e.clientX - rect.left) * this.scale, y: (e.clientY - rect.top) * this.scale };
  }

  moveCursor(e) {
    const rect = this.stage.getBoundingClientRect();
    this.cursor.hidden = false;
    this.cursor.style.width = this.cursor.style.height = `${this.size}px`;
    this.cursor.style.left = `${e.clientX - rect.left}px`;
    this.cursor.style.top = `${e.clientY - rect.top}px`;
    this.cursor.classList.toggle("erasing", this.erasing);
  }

  stroke(from, to, pressure) {
    const ctx = this.ctx;
    const width = this.size * this.scale * (pressure > 0 && pressure !== 0.5 ? 0.5 + pressure : 1);
    ctx.save();
    ctx.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = PAINT;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = width;
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
    ctx.restore();
  }

  setSize(size) {
    this.size = Math.max(4, Math.min(200, size));
    this.sizeInput.value = String(this.size);
  }

  setErasing(erasing) {
    this.erasing = erasing;
    this.brushButton.classList.toggle("active", !erasing);
    this.eraserButton.classList.toggle("active", erasing);
  }

  snapshot() {
    if (!this.canvas.width) return;
    this.undoStack.push(this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height));
    if (this.undoStack.length > UNDO_LIMIT) this.undoStack.shift();
  }

  undo() {
    const previous = this.undoStack.pop();
    if (previous) {
      this.ctx.putImageData(previous, 0, 0);
      this.changed();
    }
  }

  clear() {
    this.snapshot();
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.changed();
  }

  invert() {
    if (!this.canvas.width) return;
    this.snapshot();
    const data = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      px[i] = 0xff;
      px[i + 1] = 0x3d;
      px[i + 2] = 0x7f;
      px[i + 3] = 255 - px[i + 3];
    }
    this.ctx.putImageData(data, 0, 0);
    this.changed();
  }

  /** True when anything is painted. */
  hasMask() {
    if (!this.canvas.width) return false;
    const px = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height).data;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 8) return true;
    return false;
  }

  /**
   * The mask as a PNG data URL at the image's resolution: white = repaint, black = keep. A canvas can
   * only write RGBA, and readers differ on RGBA masks (A1111 uses the alpha channel unless it is fully
   * opaque, luminance otherwise), so grey level and alpha both carry the coverage: every rule agrees.
   */
  toDataUrl() {
    const { width, height } = this.canvas;
    const painted = this.ctx.getImageData(0, 0, width, height);
    const px = painted.data;
    for (let i = 0; i < px.length; i += 4) {
      const coverage = px[i + 3];
      px[i] = px[i + 1] = px[i + 2] = coverage;
    }
    const out = h("canvas", { width, height });
    out.getContext("2d").putImageData(painted, 0, 0);
    return out.toDataURL("image/png");
  }

  /** Call `fn()` whenever the mask changes. */
  onChange(fn) {
    this.listeners.add(fn);
  }

  changed() {
    for (const fn of this.listeners) fn();
  }
}
