/* dispyadmin's page of one node (?key=ip:port): its whole state and the changes to it. */
"use strict";

(() => {
  const { el, fmt } = dispy;
  const key = new URLSearchParams(location.search).get("key") || "";
  const result = document.getElementById("result");
  let filled = false;  // the forms get the node's values once, then keep what is typed

  function fill(i) {
    if (filled) return;
    filled = true;
    document.getElementById("cpus").value = i.cpus;
    document.getElementById("start").value = i.service_start || "";
    document.getElementById("stop").value = i.service_stop || "";
    document.getElementById("end").value = i.service_end || "";
    document.getElementById("serve").value = i.serve;
  }

  function render(snap) {
    const n = snap.nodes.find((x) => x.key === key);
    const reason = document.getElementById("reason");
    document.getElementById("node-title").textContent = "Node " + key;
    if (!n) {
      reason.textContent = `dispyadmin does not manage a node ${key}`;
      reason.classList.add("show");
      return;
    }
    const i = n.info;
    reason.textContent = i ? "" : "no details: " + n.error;
    reason.classList.toggle("show", !i);
    document.getElementById("details-panel").style.display = i ? "" : "none";
    document.getElementById("changes").style.display = i ? "" : "none";
    if (!i) return;
    fill(i);
    document.getElementById("node-title").textContent = `Node ${i.name} (${key})`;
    const a = i.avail_info || {};
    const rows = [
      ["Name", i.name], ["Address", `${i.ip_addr}:${i.port}`], ["CPUs", `${i.cpus} of ${i.max_cpus}`],
      ["Busy (jobs running)", i.busy], ["Jobs done", i.jobs_done], ["CPU time (s)", Number(i.cpu_time).toFixed(1)],
      ["Serve clients", i.serve < 0 ? "no limit" : i.serve], ["Clients done", i.clients_done],
      ["Service start", i.service_start || "–"], ["Service stop", i.service_stop || "–"],
      ["Service end", i.service_end || "–"], ["State", i.state],
      ["Used by", i.clients.length ? i.clients.join(", ") : "no client"],
      ["Free CPU", fmt.pct(a.cpu)], ["Free memory", fmt.bytes(a.memory)], ["Free disk", fmt.bytes(a.disk)],
      ["Free swap", fmt.pct(a.swap)], ["Software", i.software], ["Platform", i.platform],
      ["Updated", fmt.time(n.updated)],
    ];
    document.querySelector("#details tbody").replaceChildren(...rows.map(([k, v]) =>
      el("tr", {}, el("th", { text: k }), el("td", { text: v }))));
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

  const form = (id, action, fields) => document.getElementById(id).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    dispy.showResult(result, summary(await dispy.act(action, Object.assign({ node: [key] }, fields(ev.target)))));
  });
  form("set-cpus", "set_cpus", (f) => ({ cpus: f.cpus.value }));
  form("set-service", "set_service_times", (f) => ({ start: f.start.value, stop: f.stop.value, end: f.end.value }));
  form("set-serve", "set_serve", (f) => ({ serve: f.serve.value }));
  document.getElementById("refresh").addEventListener("click", async () =>
    dispy.showResult(result, await dispy.act("refresh", { node: [key] })));

  dispy.live(render);
})();
