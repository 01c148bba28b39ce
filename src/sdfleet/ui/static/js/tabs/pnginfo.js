// The PNG info tab: drop, choose or paste any PNG; its text chunks are read in the browser (nothing
// is uploaded), the A1111 "parameters" are shown as a table and can be loaded into Generate.
import { $, h, icon, render, dropZone } from "../dom.js";
import { emit } from "../bus.js";
import { catalog } from "../catalog.js";
import { readPngText, parametersOf } from "../png.js";
import { infotextRows, infotextToParams } from "../infotext.js";
import { blobToDataUrl } from "../images.js";
import { bytes } from "../format.js";
import { showError, toast } from "../toast.js";

const result = $("#png-result");

function button(name, label, onclick, primary = false) {
  return h(`button.${primary ? "primary" : "secondary"}`, { type: "button", onclick }, icon(name), h("span", label));
}

function showResult(info, dataUrl) {
  const infotext = parametersOf(info.chunks);
  const others = info.chunks.filter((c) => c.keyword !== "parameters");
  if (!infotext) {
    render(
      result,
      h("h2", "No generation parameters"),
      h("p.muted", "This PNG has no parameters text chunk — it was not written by sdfleet or AUTOMATIC1111, or the chunk was stripped."),
      others.length ? otherChunks(others) : null,
      h("div.button-row", button("send", "Send image to img2img", () => emit("use-image", { url: dataUrl }))),
    );
    return;
  }
  const { params, notes } = infotextToParams(infotext, catalog);
  render(
    result,
    h("h2", "Parameters"),
    h(
      "div.button-row",
      button("sliders", "Send to Generate", () => emit("use-params", { params, kind: "txt2img" }), true),
      button("send", "Send to img2img", () => emit("use-image", { url: dataUrl, params })),
      button("copy", "Copy", () =>
        navigator.clipboard.writeText(infotext).then(
          () => toast("Infotext copied", { kind: "ok" }),
          () => toast("The browser did not allow copying", { kind: "error" }),
        ),
      ),
    ),
    notes.length ? h("ul.notes", notes.map((n) => h("li", n))) : null,
    h(
      "dl.infotext",
      { id: "png-params" },
      infotextRows(infotext).map(([k, v]) => [h("dt", k), h("dd", { class: k.includes("rompt") ? "prompt-text" : null }, v || "—")]),
    ),
    h("details", h("summary", "Infotext"), h("pre.infotext-raw", { id: "png-infotext" }, infotext)),
    others.length ? otherChunks(others) : null,
  );
}

function otherChunks(chunks) {
  return h(
    "details",
    h("summary", `Other text chunks (${chunks.length})`),
    h("dl.kv", chunks.map((c) => [h("dt", c.keyword), h("dd", h("pre.infotext-raw", c.text.length > 4000 ? `${c.text.slice(0, 4000)}…` : c.text))])),
  );
}

async function take(file) {
  if (!file) return;
  try {
    const info = await readPngText(await file.arrayBuffer());
    const dataUrl = await blobToDataUrl(file);
    $("#png-image").src = dataUrl;
    $("#png-meta").textContent = `${file.name || "pasted image"} · ${info.width}×${info.height} · ${bytes(file.size)}`;
    $("#png-preview").hidden = false;
    $("#png-drop").classList.add("compact");
    showResult(info, dataUrl);
  } catch (err) {
    showError(err, "PNG info");
  }
}

export function initPngInfo() {
  const tab = $("#tab-pnginfo");
  // dropping anywhere on the tab works, not just on the zone
  dropZone($("#png-drop"), $("#png-file"), (files) => take(files[0]), tab);
  document.addEventListener("paste", (e) => {
    if (tab.hidden) return;
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type === "image/png");
    if (file) take(file);
  });
}
