// A tiny publish/subscribe hub so tabs can hand work to each other without importing each other:
// "use-params" (load parameters into Generate), "use-image" (an image for img2img), "show-tab".

const handlers = new Map();

export function on(name, fn) {
  if (!handlers.has(name)) handlers.set(name, new Set());
  handlers.get(name).add(fn);
  return () => handlers.get(name).delete(fn);
}

export function emit(name, payload) {
  for (const fn of handlers.get(name) || []) fn(payload);
}
