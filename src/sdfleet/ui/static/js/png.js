// Read the text chunks of any PNG in the browser: tEXt (Latin-1), zTXt (deflate-compressed Latin-1)
// and iTXt (UTF-8, optionally compressed). A1111 and sdfleet keep the infotext in "parameters".

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export class PngError extends Error {}

async function inflate(bytes) {
  // zlib stream ("deflate" in the Compression Streams API).
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

function nul(bytes, from) {
  const i = bytes.indexOf(0, from);
  if (i < 0) throw new PngError("a text chunk is malformed");
  return i;
}

async function decodeChunk(type, data) {
  if (type === "tEXt") {
    const end = nul(data, 0);
    return [latin1.decode(data.subarray(0, end)), latin1.decode(data.subarray(end + 1))];
  }
  if (type === "zTXt") {
    const end = nul(data, 0);
    return [latin1.decode(data.subarray(0, end)), latin1.decode(await inflate(data.subarray(end + 2)))];
  }
  // iTXt: keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
  const keyEnd = nul(data, 0);
  const compressed = data[keyEnd + 1] === 1;
  const langEnd = nul(data, keyEnd + 3);
  const transEnd = nul(data, langEnd + 1);
  const body = data.subarray(transEnd + 1);
  return [latin1.decode(data.subarray(0, keyEnd)), utf8.decode(compressed ? await inflate(body) : body)];
}

/**
 * The text chunks of a PNG as [{keyword, text}], in file order, plus its size. Throws PngError
 * when the bytes are not a PNG.
 */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new PngError("this file is not a PNG");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks = [];
  let width = 0;
  let height = 0;
  for (let pos = 8; pos + 8 <= bytes.length; ) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const start = pos + 8;
    if (start + length > bytes.length) break; // truncated file: keep what was read
    const data = bytes.subarray(start, start + length);
    if (type === "IHDR") {
      width = view.getUint32(start);
      height = view.getUint32(start + 4);
    } else if (type === "tEXt" || type === "zTXt" || type === "iTXt") {
      try {
        const [keyword, text] = await decodeChunk(type, data);
        chunks.push({ keyword, text });
      } catch (err) {
        chunks.push({ keyword: `(${type} unreadable)`, text: String(err.message || err) });
      }
    } else if (type === "IEND") {
      break;
    }
    pos = start + length + 4; // skip the CRC
  }
  return { width, height, chunks };
}

/** The A1111 infotext of a PNG: its "parameters" chunk, or null. */
export function parametersOf(chunks) {
  return chunks.find((c) => c.keyword === "parameters")?.text ?? null;
}
