/* The node page: one node's details per cluster, its running jobs (cancel), node actions. */
"use strict";

(() => {
  const { el, fmt } = dispy;
  const key = new URLSearchParams(location.search).get("key") || "";
  const box = document.getElementById("clusters");
  const missing = document.getElementById("missing");
  const results = new Map();  // cluster name -> the .result element (kept across refreshes)
  const checked = new Set();  // uids ticked (kept across refreshes)

  function resultBox(name) {
    if (!results.has(name)) results.set(name, el("div", { class: "result", "data-result": name }));
    return results.get(name);
  }

  function details(n) {
    const a = n.avail_info || {};
    const rows = [
      ["Name", n.name || "–"], ["Address", n.ip_addr], ["Platform", n.platform || "–"],
      ["CPUs used", n.cpus], ["CPUs offered", n.avail_cpus], ["Busy", n.busy],
      ["Available CPU", fmt.pct(a.cpu)], ["Available memory", fmt.bytes(a.memory)],
      ["Available disk", fmt.bytes(a.disk)], ["Available swap", fmt.pct(a.swap)],
      ["Jobs done", n.jobs_done], ["CPU time (s)", fmt.secs(n.cpu_time)], ["Sec/job", fmt.secs(n.sec_per_job)],
      ["Data sent", fmt.bytes(n.tx)], ["Data received", fmt.bytes(n.rx)], ["Last update", fmt.time(n.update_time)],
    ];
    return el("table", { class: "details" }, el("tbody", {},
      rows.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v })))));
  }

  function render(d) {
    missing.textContent = "";
    document.getElementById("node-title").textContent = "Node " + key;
    box.replaceChildren(...d.clusters.map((c) => {
      const result = resultBox(c.name);
      const run = async (action, fields) => {
        dispy.showResult(result, await dispy.act(action, Object.assign({ cluster: c.name }, fields)), action);
        refresh();
      };
      const jobs = c.jobs.map((j) => el("tr", { "data-uid": j.uid },
        el("td", {}, el("input", { type: "checkbox", value: j.uid, checked: checked.has(j.uid),
                                  onchange: (ev) => ev.target.checked ? checked.add(j.uid) : checked.delete(j.uid) })),
        el("td", { text: j.job_id }),
        el("td", { class: "args", text: d.show_job_args ? j.args : "(hidden)" }),
        el("td", { class: "args", text: d.show_job_args ? j.kwargs : "(hidden)" }),
        el("td", { text: fmt.time(j.start_time) })));
      return el("section", { class: "panel", "data-cluster": c.name },
        el("h2", { text: "Cluster " + c.name }),
        el("div", { class: "grid two" },
          el("div", {}, details(c.node)),
          el("div", {},
            el("h2", { text: "Node actions" }),
            el("div", { class: "row" },
              el("button", { class: "secondary", id: "allocate", onclick: () => run("allocate_node", { node: c.node.ip_addr }), text: "Allocate" }),
              el("button", { class: "secondary", id: "deallocate", onclick: () => run("deallocate_node", { node: c.node.ip_addr }), text: "Deallocate" }),
              el("button", { class: "danger", id: "close", onclick: () => run("close_node", { node: c.node.ip_addr }), text: "Close" })),
            result)),
        el("h2", { text: `Running jobs (${c.jobs.length})` }),
        c.jobs.length ? el("div", { class: "table-wrap" }, el("table", { class: "jobs" },
          el("thead", {}, el("tr", {}, el("th", { text: "" }), el("th", { text: "Job id" }), el("th", { text: "Arguments" }),
                                        el("th", { text: "Keyword arguments" }), el("th", { text: "Started" }))),
          el("tbody", {}, jobs))) : el("div", { class: "empty", text: "No job is running here." }),
        el("div", { class: "row" }, el("button", {
          class: "danger", id: "cancel-jobs", disabled: !c.jobs.length, text: "Cancel selected jobs",
          onclick: () => {
            const uids = c.jobs.map((j) => j.uid).filter((u) => checked.has(u));
            if (!uids.length) { dispy.showResult(result, { ok: false, status: 400, body: { error: "tick the jobs to cancel first" } }); return; }
            uids.forEach((u) => checked.delete(u));
            run("cancel_jobs", { uid: uids });
          } })));
    }));
  }

  async function refresh() {
    if (!key) { missing.textContent = "No node given (open this page from the monitor's node table)."; return; }
    const r = await dispy.getJSON("/api/detail?key=" + encodeURIComponent(key));
    if (r.ok) render(r.body);
    else { missing.textContent = r.body.error || "not found"; box.replaceChildren(); }
  }

  // the snapshot stream says when something changed; the details come from /api/detail
  dispy.live(() => refresh());
  refresh();
})();
