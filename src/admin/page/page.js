// The status page: /status and /status/history, read every two seconds.
"use strict";
const REFRESH_MS = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function table(target, header, rows) {
  target.replaceChildren(
    el("thead", {}, el("tr", {}, ...header.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells))));
}

// A sparkline of up to two series (null gaps allowed), scaled to their max.
function spark(a, b, label) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 300 28");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const values = a.concat(b || []).filter((v) => v !== null);
  const max = Math.max(1e-9, ...values);
  const path = (series, cls) => {
    let d = "";
    // At least a minute wide, so that the first seconds are not a sliver.
    const span = Math.max(series.length, 60), step = 300 / span;
    const offset = 300 - series.length * step;
    series.forEach((v, i) => {
      if (v === null) return;
      const x = offset + i * step, y = 27 - (v / max) * 26;
      d += (d && series[i - 1] !== null ? "L" : "M") + x + " " + y.toFixed(1);
    });
    const p = document.createElementNS(ns, "path");
    p.setAttribute("class", cls);
    p.setAttribute("d", d);
    svg.append(p);
  };
  path(a, "a");
  if (b) path(b, "b");
  return svg;
}

const fmt = {
  rate: (v) => (v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(1)) + "/s",
  share: (v) => (v === undefined ? "–" : (v * 100).toFixed(1) + " %"),
  ms: (v) => (v === null || v === undefined ? "–" : (v * 1000).toFixed(v < 0.01 ? 2 : 0) + " ms"),
};

function stateOf(b) {
  return b.ejected ? "ejected" : b.healthy ? "healthy" : "unhealthy";
}

function render(status, history) {
  const series = new Map(history.backends.map((s) => [s.upstream + " " + s.backend, s.samples]));
  const total = status.upstreams.reduce((n, u) => n + u.backends.length, 0);
  const usable = status.upstreams.reduce((n, u) => n + u.usable_backends, 0);
  document.getElementById("summary").textContent =
    (status.draining ? "DRAINING · " : "") + usable + " of " + total + " backends usable";
  const upstreams = document.getElementById("upstreams");
  upstreams.replaceChildren(...status.upstreams.map((u) => {
    const rows = u.backends.map((b) => {
      const samples = series.get(u.name + " " + b.address) || [];
      const last = samples[samples.length - 1] || [];
      const col = (i) => samples.map((s) => s[i]);
      const state = stateOf(b);
      return el("tr", { "data-backend": b.address, "data-state": state },
        el("td", {}, b.address + (b.name ? " (" + b.name + ")" : "")),
        el("td", { class: "state " + state }, state),
        el("td", { class: "num" }, b.active_requests),
        el("td", { class: "num" }, b.effective_weight.toFixed(1) + " / " + b.weight),
        el("td", {}, el("div", { class: "cell" }, spark(col(1), null, "requests per second"), el("span", { class: "value" }, fmt.rate(last[1])))),
        el("td", {}, el("div", { class: "cell" }, spark(col(2), null, "error share"), el("span", { class: "value" }, fmt.share(last[2])))),
        el("td", {}, el("div", { class: "cell" }, spark(col(3), col(4), "latency p50 and p99"), el("span", { class: "value" }, fmt.ms(last[3]) + " / " + fmt.ms(last[4])))));
    });
    const t = el("table", { "aria-label": "backends of " + u.name });
    const wrap = el("div", { class: "scroll", tabindex: "0" }, t);
    table(t, ["backend", "state", "in flight", "weight", "requests", "errors", "p50 / p99"], []);
    t.querySelector("tbody").append(...rows);
    return el("div", { "data-upstream": u.name },
      el("h3", {}, u.name + " — " + u.strategy + ", " + u.usable_backends + " of " + u.backends.length + " usable"), wrap);
  }));
  table(document.getElementById("routes"), ["name", "host", "path", "upstream"],
    status.routes.map((r) => [r.name, r.host || "*", r.path_prefix || "/", r.upstream].map((v) => el("td", {}, v))));
  table(document.getElementById("listeners"), ["name", "address", "max connections"],
    status.listeners.map((l) => [l.name, l.address || l.listen, l.max_connections || "unlimited"].map((v) => el("td", {}, v))));
  const events = document.getElementById("events");
  events.replaceChildren(...history.events.slice().reverse().map((e) =>
    el("li", { "data-event": "" }, el("time", { datetime: new Date(e.time * 1000).toISOString() }, new Date(e.time * 1000).toLocaleTimeString()), e.text)));
  if (!history.events.length) events.replaceChildren(el("li", {}, "No health change or reload yet."));
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refresh() {
  try {
    const [status, history] = await Promise.all(
      ["/status", "/status/history"].map((path) => fetch(path, { cache: "no-store" }).then((r) => {
        if (!r.ok) throw new Error(path + ": " + r.status);
        return r.json();
      })));
    render(status, history);
    document.getElementById("error").textContent = "";
  } catch (err) {
    document.getElementById("error").textContent = "weir does not answer: " + err.message;
  }
  setTimeout(refresh, REFRESH_MS);
}
refresh();
