/* dispy web pages: what every page shares (monitor, node, manage, admin).
   No framework, no third-party code: the server's API (dispy_core.web) and small SVG charts.

   dispy.live(onSnapshot)          every snapshot, pushed by Server-Sent Events (/api/events),
                                   with polling of /api/snapshot as a fallback
   dispy.act(action, fields)       POST /api/act/<action> with the page's CSRF value;
                                   resolves to {ok, status, body}
   dispy.getJSON(url)              GET, resolves to {ok, status, body}
   dispy.showResult(el, resp, lbl) what an action returned, shown in a .result element
   dispy.el(tag, attrs, ...kids)   build DOM nodes (text is always text, never markup)
   dispy.lineChart(svg, series, o) / dispy.barChart(svg, bars, o): SVG pictures
   dispy.fmt.*                     bytes, seconds, percentages, times
*/
"use strict";

const dispy = (() => {
  function meta(name) {
    const m = document.querySelector(`meta[name="${name}"]`);
    return m ? m.getAttribute("content") : "";
  }
  const csrf = meta("dispy-csrf");
  const pollMs = Math.max(1000, parseInt(meta("dispy-poll-ms"), 10) || 10000);

  function el(tag, attrs, ...kids) {
    const node = document.createElementNS(
      attrs && attrs.svg ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "svg" || value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "checked") node.checked = !!value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.appendChild(typeof kid === "object" ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  async function request(url, options) {
    let response;
    try {
      response = await fetch(url, Object.assign({ credentials: "same-origin", cache: "no-store" }, options));
    } catch (err) {
      return { ok: false, status: 0, body: { error: "the server can't be reached: " + err.message } };
    }
    const text = await response.text();
    let body;
    try { body = JSON.parse(text); } catch (_) { body = { error: text.trim() || response.statusText }; }
    return { ok: response.ok, status: response.status, body };
  }

  function getJSON(url) { return request(url, { method: "GET" }); }

  function act(action, fields) {
    return request("/api/act/" + encodeURIComponent(action), {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Dispy-CSRF": csrf },
      body: JSON.stringify(fields || {}),
    });
  }

  // label: what was done ("set_cpus"); the text says what the method returned, per cluster
  function showResult(target, response, label) {
    target.classList.add("show");
    target.classList.toggle("error", !response.ok);
    const what = response.ok ? response.body.result : response.body.error;
    const head = label ? label + " " : "";
    target.textContent = head + (response.ok ? "returned: " : `error (${response.status}): `) +
      (typeof what === "string" ? what : JSON.stringify(what, null, 2));
  }

  // -- live state: one EventSource; polling while it is down ---------------------------
  function setStatus(state, text) {
    const dot = document.getElementById("live-dot");
    const label = document.getElementById("live-text");
    if (dot) dot.className = "dot " + state;
    if (label) label.textContent = text;
  }

  function live(onSnapshot) {
    let version = -1;
    let timer = null;
    let stopped = false;
    const take = (snap) => {
      if (!snap || typeof snap.version !== "number" || snap.version === version) return;
      version = snap.version;
      onSnapshot(snap);
      setStatus("live", "live · updated " + new Date().toLocaleTimeString());
    };
    const poll = async () => {
      if (stopped) return;
      const r = await getJSON("/api/snapshot");
      if (r.ok) take(r.body); else setStatus("down", "server not reachable");
    };
    const startPolling = () => { if (!timer && !stopped) timer = setInterval(poll, pollMs); };
    const stopPolling = () => { if (timer) { clearInterval(timer); timer = null; } };
    if (window.EventSource) {
      const source = new EventSource("/api/events");
      source.addEventListener("snapshot", (ev) => { stopPolling(); take(JSON.parse(ev.data)); });
      source.addEventListener("closed", () => {
        stopped = true; stopPolling(); source.close();
        setStatus("down", "the server stopped (this is its final state)");
      });
      source.addEventListener("error", () => {
        if (!stopped) { setStatus("down", "reconnecting…"); startPolling(); }
      });
    } else {
      poll();
      startPolling();
    }
  }

  // -- formatting -------------------------------------------------------------------------
  const fmt = {
    bytes(n) {
      if (n === null || n === undefined) return "–";
      const units = ["B", "KB", "MB", "GB", "TB", "PB"];
      let i = 0;
      n = Number(n);
      while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
      return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + " " + units[i];
    },
    pct(n) { return n === null || n === undefined ? "–" : Number(n).toFixed(1) + " %"; },
    secs(n) { return Number(n || 0).toFixed(3); },
    time(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; },
    ago(t) {
      if (!t) return "–";
      const s = Math.max(0, Date.now() / 1000 - t);
      if (s < 60) return Math.round(s) + " s ago";
      if (s < 3600) return Math.round(s / 60) + " min ago";
      return Math.round(s / 3600) + " h ago";
    },
  };

  // -- SVG pictures -------------------------------------------------------------------------
  const palette = ["#2f6fed", "#1f9d55", "#d97706", "#9b51e0", "#d92d20", "#0e9aa7", "#6b7280"];

  // the top of a count axis with 4 whole-number steps
  function niceMax(v) {
    const step = v / 4;
    if (step <= 1) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(step)));
    for (const m of [1, 2, 5, 10]) if (m * p >= step) return 4 * m * p;
    return 40 * p;
  }

  function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

  // series: [{name, points: [[t, y], ...]}] (t in seconds); the x axis ends at opts.now.
  function lineChart(svg, series, opts) {
    opts = opts || {};
    clear(svg);
    const W = svg.clientWidth || 600, H = svg.clientHeight || 220;
    const m = { l: 44, r: 12, t: 10, b: 24 };
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const now = opts.now || Date.now() / 1000;
    let t0 = now;
    let ymax = 0;
    for (const s of series) for (const [t, y] of s.points) { t0 = Math.min(t0, t); ymax = Math.max(ymax, y); }
    if (now - t0 < 10) t0 = now - 10;
    ymax = niceMax(ymax);
    const x = (t) => m.l + (W - m.l - m.r) * (t - t0) / (now - t0);
    const y = (v) => H - m.b - (H - m.t - m.b) * v / ymax;
    const g = (tag, attrs, ...kids) => el(tag, Object.assign({ svg: true }, attrs), ...kids);
    for (let i = 0; i <= 4; i++) {
      const v = ymax * i / 4;
      svg.appendChild(g("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: i ? "grid" : "axis" }));
      svg.appendChild(g("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", text: Number.isInteger(v) ? v : v.toFixed(1) }));
    }
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (now - t0) * i / 4;
      svg.appendChild(g("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle",
                                  text: new Date(t * 1000).toLocaleTimeString() }));
    }
    series.forEach((s, i) => {
      if (!s.points.length) return;
      const color = palette[i % palette.length];
      // a step line: the count holds until the next change, and up to now
      let d = "";
      let last = null;
      for (const [t, v] of s.points) {
        d += d ? ` L${x(t).toFixed(1)},${y(last).toFixed(1)} L${x(t).toFixed(1)},${y(v).toFixed(1)}` :
                 `M${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        last = v;
      }
      d += ` L${x(now).toFixed(1)},${y(last).toFixed(1)}`;
      const first = s.points[0];
      svg.appendChild(g("path", { d: d + ` L${x(now).toFixed(1)},${y(0)} L${x(first[0]).toFixed(1)},${y(0)} Z`,
                                  class: "area", fill: color }));
      svg.appendChild(g("path", { d, class: "line", stroke: color }));
    });
    return palette;
  }

  // bars: [{label, busy, total, note}] drawn horizontally: busy of total, one row each.
  function barChart(svg, bars, opts) {
    opts = opts || {};
    clear(svg);
    const W = svg.clientWidth || 600;
    const row = 26, m = { l: 130, r: 70, t: 6, b: 6 };
    const H = Math.max(60, m.t + m.b + row * bars.length);
    svg.style.height = H + "px";
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const g = (tag, attrs, ...kids) => el(tag, Object.assign({ svg: true }, attrs), ...kids);
    if (!bars.length) {
      svg.appendChild(g("text", { x: 10, y: 30, text: opts.empty || "no nodes yet" }));
      return;
    }
    const width = W - m.l - m.r;
    bars.forEach((b, i) => {
      const top = m.t + i * row;
      const frac = b.total > 0 ? Math.min(1, b.busy / b.total) : 0;
      svg.appendChild(g("text", { x: m.l - 8, y: top + 16, "text-anchor": "end", text: b.label }));
      svg.appendChild(g("rect", { x: m.l, y: top + 5, width, height: 14, rx: 3, class: "bar-free" }));
      svg.appendChild(g("rect", { x: m.l, y: top + 5, width: Math.max(0, width * frac), height: 14, rx: 3, class: "bar-busy" },
                        g("title", { text: `${b.label}: ${b.note || ""}` })));
      svg.appendChild(g("text", { x: W - m.r + 8, y: top + 16, text: b.note || "" }));
    });
  }

  function markNav() {
    const here = location.pathname.split("/").pop() || "";
    for (const a of document.querySelectorAll("header.top nav a")) {
      const target = a.getAttribute("href").split("?")[0].split("/").pop();
      if (target === here || (here === "" && a.dataset.start !== undefined)) a.classList.add("active");
    }
  }
  document.addEventListener("DOMContentLoaded", markNav);

  return { csrf, pollMs, el, getJSON, act, showResult, live, fmt, lineChart, barChart, palette, setStatus };
})();
