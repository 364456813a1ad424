/* The monitor page: counts, charts and the node table of the chosen cluster (or all). */
"use strict";

(() => {
  const { el, fmt } = dispy;
  let snapshot = null;
  const select = document.getElementById("cluster");

  select.addEventListener("change", () => { if (snapshot) render(snapshot); });

  function chosen(snap) {
    const name = select.value;
    return name === "*" || !name ? snap.clusters : snap.clusters.filter((c) => c.name === name);
  }

  function fillSelect(snap) {
    const names = snap.clusters.map((c) => c.name);
    const current = select.value;
    const wanted = (names.length > 1 ? ["*"] : []).concat(names);
    const have = Array.from(select.options).map((o) => o.value);
    if (have.join("\n") !== wanted.join("\n")) {
      select.replaceChildren(...wanted.map((n) => el("option", { value: n, text: n === "*" ? "* (all clusters)" : n })));
      if (wanted.includes(current)) select.value = current;
    }
  }

  // one row per node; a node serving several clusters has its numbers added up
  function mergedNodes(clusters) {
    const byIp = new Map();
    for (const c of clusters) {
      for (const n of c.nodes) {
        const m = byIp.get(n.ip_addr);
        if (!m) { byIp.set(n.ip_addr, Object.assign({}, n)); continue; }
        for (const k of ["cpus", "busy", "jobs_done", "cpu_time", "tx", "rx"]) m[k] += n[k];
        m.update_time = Math.max(m.update_time, n.update_time);
        m.sec_per_job = m.jobs_done ? m.cpu_time / m.jobs_done : 0;
        if (n.avail_info) m.avail_info = n.avail_info;
      }
    }
    return Array.from(byIp.values()).sort((a, b) => a.ip_addr.localeCompare(b.ip_addr, undefined, { numeric: true }));
  }

  function render(snap) {
    snapshot = snap;
    fillSelect(snap);
    const clusters = chosen(snap);
    for (const key of ["submitted", "running", "done", "failed", "pending"]) {
      const total = clusters.reduce((sum, c) => sum + (c.jobs[key] || 0), 0);
      document.getElementById("n-" + key).textContent = total;
    }
    const nodes = mergedNodes(clusters);
    const body = document.querySelector("#nodes tbody");
    body.replaceChildren(...nodes.map((n) => {
      const a = n.avail_info || {};
      const fill = el("span");
      fill.style.width = (n.cpus > 0 ? Math.min(100, 100 * n.busy / n.cpus) : 0) + "%";
      return el("tr", { "data-ip": n.ip_addr },
        el("td", {}, el("a", { href: "/static/node.html?key=" + encodeURIComponent(n.ip_addr), text: n.name || n.ip_addr })),
        el("td", { text: n.ip_addr }),
        el("td", { class: "num cpus", text: n.cpus }),
        el("td", { class: "num busy", text: n.busy }),
        el("td", {}, el("div", { class: "bar" }, fill)),
        el("td", { class: "num", text: fmt.pct(a.cpu) }),
        el("td", { class: "num", text: fmt.bytes(a.memory) }),
        el("td", { class: "num", text: fmt.bytes(a.disk) }),
        el("td", { class: "num", text: fmt.pct(a.swap) }),
        el("td", { class: "num", text: fmt.bytes(n.tx) }),
        el("td", { class: "num", text: fmt.bytes(n.rx) }),
        el("td", { class: "num jobs-done", text: n.jobs_done }),
        el("td", { class: "num", text: fmt.secs(n.sec_per_job) }),
        el("td", { text: fmt.time(n.update_time) }));
    }));
    document.getElementById("no-nodes").style.display = nodes.length ? "none" : "block";

    const series = clusters.map((c) => ({ name: c.name, points: c.history || [] }));
    dispy.lineChart(document.getElementById("chart-finished"), series);
    document.getElementById("legend-finished").replaceChildren(...series.map((s, i) => {
      const swatch = el("i");
      swatch.style.background = dispy.palette[i % dispy.palette.length];
      return el("span", {}, swatch, s.name);
    }));
    dispy.barChart(document.getElementById("chart-load"), nodes.map((n) => ({
      label: n.ip_addr, busy: n.busy, total: n.cpus, note: `${n.busy} / ${n.cpus}`,
    })));
  }

  dispy.live(render);
  // the time axis moves on between snapshots
  setInterval(() => { if (snapshot) render(snapshot); }, 5000);
  window.addEventListener("resize", () => { if (snapshot) render(snapshot); });
})();
