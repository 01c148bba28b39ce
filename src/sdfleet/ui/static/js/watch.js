// Follow jobs live. Each watched job gets a server-sent event stream while connections last (a
// browser allows about six per server over HTTP/1.1, and the page needs some for its own calls);
// the rest are polled together, one list request per second. Either way subscribers see the same
// thing: a `live` record per job and the event that changed it, then a final "done" with the job.
import { api, streamEvents } from "./api.js";
import { emit as announce } from "./bus.js";

const MAX_STREAMS = 3;
const POLL_MS = 1000;
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const EVENT_TYPES = ["queued", "started", "progress", "output", "requeued", "finished"];

const watched = new Map(); // job id → {live, subscribers, source}
let streams = 0;
let pollTimer = 0;

export const isTerminal = (state) => TERMINAL.has(state);

function newLive(id) {
  return {
    id,
    state: "queued",
    step: 0,
    total: 0,
    worker: null,
    reason: null,
    error: null,
    startedAt: null,
    progressAt: null,
    stepRate: null, // steps per second, measured between progress events
    job: null, // the JobView, once known
  };
}

function emit(entry, event) {
  for (const fn of [...entry.subscribers]) fn(entry.live, event);
}

function apply(entry, type, data, at = Date.now() / 1000) {
  const live = entry.live;
  switch (type) {
    case "queued":
      live.state = "queued";
      break;
    case "started":
      live.state = "running";
      live.worker = data.worker || data.worker_id || null;
      live.startedAt = data.at ?? at;
      live.reason = null;
      break;
    case "progress": {
      const now = data.at ?? at;
      if (live.progressAt && data.step > live.step && now > live.progressAt) {
        const rate = (data.step - live.step) / (now - live.progressAt);
        live.stepRate = live.stepRate ? 0.5 * live.stepRate + 0.5 * rate : rate;
      }
      live.state = "running";
      live.step = data.step;
      live.total = data.total;
      live.progressAt = now;
      break;
    }
    case "requeued":
      live.state = "queued";
      live.reason = data.reason || "requeued";
      live.step = 0;
      live.stepRate = null;
      break;
    case "finished":
      live.state = data.state;
      live.error = data.error || null;
      if (data.state === "succeeded" && live.total) live.step = live.total;
      break;
    default:
      break;
  }
  emit(entry, { type, data });
}

async function finish(entry) {
  if (entry.finishing) return;
  entry.finishing = true;
  closeSource(entry);
  try {
    entry.live.job = await api(`v1/jobs/${encodeURIComponent(entry.live.id)}`);
    entry.live.state = entry.live.job.state;
  } catch (err) {
    entry.live.error = entry.live.error || { code: err.code, message: err.message };
  }
  emit(entry, { type: "done", data: entry.live.job });
  watched.delete(entry.live.id);
  announce("job-finished", entry.live.job);
}

function closeSource(entry) {
  if (entry.source) {
    entry.source.close();
    entry.source = null;
    streams -= 1;
  }
}

function openStream(entry) {
  // fetch, not EventSource: the key goes in a header. Dropped connections resume by Last-Event-ID.
  const source = streamEvents(entry.live.id, {
    onEvent({ type, data }) {
      if (!EVENT_TYPES.includes(type)) return;
      apply(entry, type, data && typeof data === "object" ? data : {});
      if (type === "finished") finish(entry);
    },
    onEnd(error) {
      // refused (auth, not found): fall back to polling
      if (error && entry.source === source) {
        closeSource(entry);
        schedulePoll();
      }
    },
  });
  entry.source = source;
  streams += 1;
}

function fromSnapshot(entry, job) {
  const live = entry.live;
  const before = `${live.state}|${live.step}|${live.total}|${live.reason}`;
  live.job = job;
  if (job.state === "running" && live.state !== "running") live.startedAt = job.started_at;
  if (job.progress.step > live.step && live.progressAt) {
    const now = Date.now() / 1000;
    live.stepRate = (job.progress.step - live.step) / Math.max(0.001, now - live.progressAt);
  }
  if (job.progress.step !== live.step) live.progressAt = Date.now() / 1000;
  live.state = job.state;
  live.step = job.progress.step;
  live.total = job.progress.total;
  live.reason = job.wait_reason;
  live.error = job.error;
  if (before !== `${live.state}|${live.step}|${live.total}|${live.reason}`) emit(entry, { type: "snapshot", data: job });
}

async function pollOnce() {
  const polled = [...watched.values()].filter((e) => !e.source && !e.finishing);
  if (!polled.length) return;
  const ids = polled.map((e) => e.live.id).sort();
  // Jobs are listed newest first by id; ids are time-ordered, so "everything up to the newest id
  // we watch" with a little slack covers a batch in one request. Stragglers are fetched one by one.
  const byId = new Map();
  try {
    const page = await api("v1/jobs", { query: { cursor: `${ids.at(-1)}~`, limit: Math.min(500, ids.length + 50) } });
    for (const job of page.jobs) byId.set(job.id, job);
  } catch {
    /* fall through to single fetches */
  }
  for (const id of ids.filter((i) => !byId.has(i)).slice(0, 10)) {
    try {
      byId.set(id, await api(`v1/jobs/${encodeURIComponent(id)}`));
    } catch {
      /* try again next round */
    }
  }
  for (const entry of polled) {
    const job = byId.get(entry.live.id);
    if (!job) continue;
    fromSnapshot(entry, job);
    if (TERMINAL.has(job.state)) finish(entry);
  }
}

function schedulePoll() {
  if (pollTimer) return;
  pollTimer = setTimeout(async () => {
    await pollOnce();
    pollTimer = 0;
    if ([...watched.values()].some((e) => !e.source && !e.finishing)) schedulePoll();
  }, POLL_MS);
}

/**
 * Follow a job: `fn(live, event)` is called on every change, and once more with event type "done"
 * (live.job is then the final JobView). `job` may be a JobView already in hand. Returns an
 * unsubscribe function.
 */
export function watchJob(job, fn) {
  const id = typeof job === "string" ? job : job.id;
  let entry = watched.get(id);
  if (!entry) {
    entry = { live: newLive(id), subscribers: new Set(), source: null, finishing: false };
    watched.set(id, entry);
    if (typeof job === "object") fromSnapshot(entry, job);
    if (typeof job === "object" && TERMINAL.has(job.state)) {
      entry.subscribers.add(fn);
      queueMicrotask(() => finish(entry));
      return () => entry.subscribers.delete(fn);
    }
    if (streams < MAX_STREAMS) openStream(entry);
    else schedulePoll();
  }
  entry.subscribers.add(fn);
  return () => {
    entry.subscribers.delete(fn);
    if (!entry.subscribers.size && !entry.finishing) {
      closeSource(entry);
      watched.delete(id);
    }
  };
}
