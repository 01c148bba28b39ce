// The prompt box: a textarea over a highlighted copy of its text, so the A1111 prompt language
// stays plain text while (emphasis:1.2), [edit:ing:0.5], <lora:name:0.8>, BREAK and unbalanced
// brackets are easy to see. Ctrl+↑/↓ changes the weight of the selection (or the word at the caret).

const escapeHtml = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const span = (cls, text) => `<span class="${cls}">${escapeHtml(text)}</span>`;

const NETWORK = /^<(lora|lyco|hypernet):([^:>]+)(?::([^:>]*))?(?::([^>]*))?>/;
const WEIGHT = /^:\s*-?(?:\d+\.?\d*|\.\d+)\s*(?=\))/;
const EDIT_STEP = /^:\s*(?:\d+\.?\d*|\.\d+)\s*(?=\])/;
const KEYWORD = /^(?:BREAK|AND)(?![\w])/;
const CLOSE = { ")": "(", "]": "[" };

/** The prompt as HTML with highlight spans (text is escaped). */
export function highlight(text) {
  const tokens = [];
  const stack = [];
  let plain = "";
  const flush = () => {
    if (plain) tokens.push(escapeHtml(plain));
    plain = "";
  };
  for (let i = 0; i < text.length; ) {
    const c = text[i];
    const rest = text.slice(i);
    let m;
    if (c === "\\" && i + 1 < text.length) {
      flush();
      tokens.push(span("t-esc", text.slice(i, i + 2)));
      i += 2;
    } else if (c === "<" && (m = NETWORK.exec(rest))) {
      flush();
      const [all, kind, name, weight] = m;
      const tail = all.slice(kind.length + name.length + 2, all.length - 1);
      tokens.push(
        `<span class="t-net">&lt;${span("t-net-kind", kind)}:${span("t-net-name", name)}` +
          `${weight !== undefined ? span("t-weight", tail) : ""}&gt;</span>`,
      );
      i += all.length;
    } else if (c === "(" || c === "[") {
      flush();
      stack.push({ c, index: tokens.length });
      tokens.push(span(`t-br d${(stack.length - 1) % 4}`, c));
      i += 1;
    } else if (c === ")" || c === "]") {
      flush();
      if (stack.length && stack.at(-1).c === CLOSE[c]) {
        stack.pop();
        tokens.push(span(`t-br d${stack.length % 4}`, c));
      } else {
        tokens.push(span("t-bad", c));
      }
      i += 1;
    } else if (c === ":" && stack.at(-1)?.c === "(" && (m = WEIGHT.exec(rest))) {
      flush();
      tokens.push(span("t-weight", m[0]));
      i += m[0].length;
    } else if ((c === ":" || c === "|") && stack.at(-1)?.c === "[") {
      flush();
      m = c === ":" ? EDIT_STEP.exec(rest) : null;
      tokens.push(span("t-edit", m ? m[0] : c));
      i += m ? m[0].length : 1;
    } else if ((c === "B" || c === "A") && !/\w/.test(text[i - 1] || "") && (m = KEYWORD.exec(rest))) {
      flush();
      tokens.push(span("t-kw", m[0]));
      i += m[0].length;
    } else if (c === ",") {
      flush();
      tokens.push(span("t-comma", c));
      i += 1;
    } else {
      plain += c;
      i += 1;
    }
  }
  flush();
  for (const open of stack) tokens[open.index] = span("t-bad", open.c); // never closed
  return tokens.join("");
}

function formatWeight(w) {
  return String(Math.round(w * 100) / 100);
}

function replaceRange(textarea, start, end, text, selectStart, selectEnd) {
  textarea.focus();
  textarea.setSelectionRange(start, end);
  // insertText keeps the browser's undo history; setRangeText is the fallback.
  if (!document.execCommand || !document.execCommand("insertText", false, text)) {
    textarea.setRangeText(text, start, end, "end");
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
  }
  textarea.setSelectionRange(selectStart, selectEnd);
}

/** Ctrl+↑/↓: A1111's emphasis editing. `delta` is ±0.1. */
export function adjustWeight(textarea, delta) {
  const v = textarea.value;
  let s = textarea.selectionStart;
  let e = textarea.selectionEnd;
  // Inside "(text:1.2)" already: change its weight (1.0 removes the parentheses).
  const open = v.lastIndexOf("(", s - (s > 0 && v[s - 1] === "(" ? 1 : 0));
  const close = v.indexOf(")", Math.max(e, open + 1));
  if (open >= 0 && close > 0) {
    const inner = v.slice(open + 1, close);
    const m = /^([^()]*):\s*(-?(?:\d+\.?\d*|\.\d+))\s*$/.exec(inner);
    if (m && open < s + 1 && close >= e) {
      const weight = Number(m[2]) + delta;
      if (Math.abs(weight - 1) < 1e-9) {
        replaceRange(textarea, open, close + 1, m[1], open, open + m[1].length);
      } else {
        const text = `(${m[1]}:${formatWeight(weight)})`;
        replaceRange(textarea, open, close + 1, text, open + 1, open + 1 + m[1].length);
      }
      return;
    }
  }
  if (s === e) {
    // No selection: the word at the caret.
    const stop = /[\s,()[\]<>]/;
    while (s > 0 && !stop.test(v[s - 1])) s -= 1;
    while (e < v.length && !stop.test(v[e])) e += 1;
  }
  while (s < e && /\s/.test(v[s])) s += 1;
  while (e > s && /\s/.test(v[e - 1])) e -= 1;
  if (s === e) return;
  const selected = v.slice(s, e);
  const text = `(${selected}:${formatWeight(1 + delta)})`;
  replaceRange(textarea, s, e, text, s + 1, s + 1 + selected.length);
}

/** Turn a textarea into a highlighted prompt editor. Returns {sync, insert}. */
export function promptEditor(textarea) {
  const wrap = document.createElement("div");
  wrap.className = "prompt-editor";
  const pre = document.createElement("pre");
  pre.className = "prompt-highlight";
  pre.setAttribute("aria-hidden", "true");
  textarea.replaceWith(wrap);
  wrap.append(pre, textarea);

  const sync = () => {
    pre.innerHTML = `${highlight(textarea.value)}\n`;
    textarea.style.height = "auto";
    textarea.style.height = `${Math.min(textarea.scrollHeight + 2, window.innerHeight * 0.45)}px`;
    pre.scrollTop = textarea.scrollTop;
  };
  textarea.addEventListener("input", sync);
  textarea.addEventListener("scroll", () => {
    pre.scrollTop = textarea.scrollTop;
  });
  textarea.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      event.preventDefault();
      adjustWeight(textarea, event.key === "ArrowUp" ? 0.1 : -0.1);
      sync();
    }
  });
  new ResizeObserver(sync).observe(wrap);

  /** Insert text at the caret (or the end), separated from its neighbours by a space or comma. */
  const insert = (text) => {
    const v = textarea.value;
    const at = document.activeElement === textarea ? textarea.selectionEnd : v.length;
    const before = v.slice(0, at);
    const sep = !before || /[\s,(]$/.test(before) ? "" : before.trimEnd().endsWith(",") ? " " : ", ";
    replaceRange(textarea, at, at, sep + text, at + sep.length + text.length, at + sep.length + text.length);
    sync();
  };
  sync();
  return { sync, insert };
}
