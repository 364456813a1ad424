/* dispyadmin's nodes page: every node with its state (or why there is none), changes to
   the ticked nodes (CPUs, service times, serve count), adding a node. */
"use strict";

(() => {
  const { el, fmt } = dispy;
  const body = document.querySelector("#nodes tbody");
  const ticked = new Set();
  let nodes = [];

  const times = (i) => [i.service_start, i.service_stop, i.service_end].map((t) => t || "–").join(" / ");

  function row(n) {
    const link = el("a", { href: "/static/admin_node.html?key=" + encodeURIComponent(n.key), text: n.key });
    const i = n.info;
    if (!i) {
      return el("tr", { "data-key": n.key, class: "no-details" },
        el("td", {}, ""), el("td", {}, link),
        el("td", { colspan: 12, class: "muted reason", text: "no details: " + n.error }));
    }
    const a = i.avail_info || {};
    const serve = i.serve < 0 ? "no limit" : `${i.clients_done} of ${i.serve}`;
    return el("tr", { "data-key": n.key },
      el("td", {}, el("input", { type: "checkbox", class: "tick", checked: ticked.has(n.key),
                                onchange: (ev) => ev.target.checked ? ticked.add(n.key) : ticked.delete(n.key) })),
      el("td", {}, link),
      el("td", { text: i.name }),
      el("td", { class: "num cpus", text: `${i.cpus} of ${i.max_cpus}` }),
      el("td", { class: "num", text: i.busy }),
      el("td", { class: "num", text: i.jobs_done }),
      el("td", { class: "num", text: Number(i.cpu_time).toFixed(1) }),
      el("td", { class: "num serve", text: serve }),
      el("td", { class: "service", text: times(i) }),
      el("td", { class: "num", text: fmt.pct(a.cpu) }),
      el("td", { class: "num", text: fmt.bytes(a.memory) }),
      el("td", { class: "num", text: fmt.bytes(a.disk) }),
      el("td", { class: "state", text: i.state }),
      el("td", { text: fmt.ago(n.updated) }));
  }

  function render(snap) {
    nodes = snap.nodes;
    document.getElementById("no-secret").classList.toggle("show", !snap.secret_set);
    document.getElementById("no-nodes").style.display = nodes.length ? "none" : "";
    for (const key of Array.from(ticked)) if (!nodes.some((n) => n.key === key && n.info)) ticked.delete(key);
    body.replaceChildren(...nodes.map(row));
  }

  // What a change returned, one line per node: its state after the change, or why not.
  function summary(r) {
    if (!r.ok || !Array.isArray(r.body.result)) return r;
    const lines = r.body.result.map((x) => {
      if (!x.ok) return `${x.node}: not changed: ${x.error}`;
      const i = x.info;
      const serve = i.serve < 0 ? "no limit" : `${i.clients_done} of ${i.serve}`;
      const times = [i.service_start, i.service_stop, i.service_end].map((t) => t || "–").join(" / ");
      return `${x.node}: done; now ${i.cpus} of ${i.max_cpus} CPUs, serve ${serve}, service ${times}, ${i.state}`;
    });
    return { ok: true, status: r.status, body: { result: lines.join("\n") } };
  }

  const result = document.getElementById("result");
  async function change(action, fields) {
    if (!ticked.size) {
      dispy.showResult(result, { ok: false, status: 400, body: { error: "tick the nodes to change first" } });
      return;
    }
    dispy.showResult(result, summary(await dispy.act(action, Object.assign({ node: Array.from(ticked) }, fields))));
  }
  const form = (id, action, fields) => document.getElementById(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    change(action, fields(ev.target));
  });
  form("set-cpus", "set_cpus", (f) => ({ cpus: f.cpus.value }));
  form("set-service", "set_service_times", (f) => ({ start: f.start.value, stop: f.stop.value, end: f.end.value }));
  form("set-serve", "set_serve", (f) => ({ serve: f.serve.value }));
  document.getElementById("refresh").addEventListener("click", async () =>
    dispy.showResult(result, await dispy.act("refresh", {})));
  document.getElementById("tick-all").addEventListener("change", (ev) => {
    for (const n of nodes) if (n.info) { if (ev.target.checked) ticked.add(n.key); else ticked.delete(n.key); }
    for (const box of body.querySelectorAll("input.tick")) box.checked = ev.target.checked;
  });
  document.getElementById("add-node").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const fields = { host: f.host.value };
    if (f.port.value) fields.port = f.port.value;
    dispy.showResult(document.getElementById("add-result"), await dispy.act("add_node", fields));
  });

  dispy.live(render);
})();
