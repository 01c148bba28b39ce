// Moving images around: files and URLs to data URLs, downloads, loading <img> elements.
import { fetchBlob } from "./api.js";

export function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export async function urlToDataUrl(url) {
  return blobToDataUrl(await fetchBlob(url));
}

/** Load an image element; cross-origin URLs are requested with CORS so canvases stay readable. */
export function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    const url = new URL(src, document.baseURI);
    if (url.protocol.startsWith("http") && url.origin !== location.origin) img.crossOrigin = "anonymous";
    img.decoding = "async";
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load the image ${url.pathname.split("/").pop()}`));
    img.src = src;
  });
}

/** Save a Blob or URL under `filename`. */
export async function download(source, filename) {
  const blob = source instanceof Blob ? source : await fetchBlob(source);
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

/** A file name for an output: sdfleet-<job tail>-<index>-<seed>.png */
export function outputFilename(jobId, output) {
  const ext = (output.content_type || "image/png").split("/")[1].replace("jpeg", "jpg");
  return `sdfleet-${jobId.slice(-8)}-${output.index}${output.seed !== null && output.seed !== undefined ? `-${output.seed}` : ""}.${ext}`;
}
