/* The manage page: per cluster, its nodes with editable CPUs and node actions; add a node. */
"use strict";

(() => {
  const { el } = dispy;
  const box = document.getElementById("clusters");
  const results = new Map();   // cluster name -> .result element
  const editing = new Map();   // "cluster|ip" -> CPUs typed and not yet applied
  const ticked = new Set();    // "cluster|ip" of ticked nodes

  function resultBox(name) {
    if (!results.has(name)) results.set(name, el("div", { class: "result", "data-result": name }));
    return results.get(name);
  }

  function render(snap) {
    const addCluster = document.getElementById("add-cluster");
    const names = snap.clusters.map((c) => c.name);
    const wanted = (names.length > 1 ? ["*"] : []).concat(names);
    if (Array.from(addCluster.options).map((o) => o.value).join("\n") !== wanted.join("\n")) {
      const current = addCluster.value;
      addCluster.replaceChildren(...wanted.map((n) => el("option", { value: n, text: n === "*" ? "* (all clusters)" : n })));
      if (wanted.includes(current)) addCluster.value = current;
    }
    box.replaceChildren(...snap.clusters.map((c) => {
      const result = resultBox(c.name);
      const run = async (action, fields) => dispy.showResult(result, await dispy.act(action, Object.assign({ cluster: c.name }, fields)), action);
      const selected = () => c.nodes.map((n) => n.ip_addr).filter((ip) => ticked.has(c.name + "|" + ip));
      const rows = c.nodes.map((n) => {
        const id = c.name + "|" + n.ip_addr;
        const cpus = el("input", { type: "number", class: "cpus", value: editing.has(id) ? editing.get(id) : n.cpus,
                                   oninput: (ev) => editing.set(id, ev.target.value) });
        return el("tr", { "data-ip": n.ip_addr },
          el("td", {}, el("input", { type: "checkbox", checked: ticked.has(id),
                                    onchange: (ev) => ev.target.checked ? ticked.add(id) : ticked.delete(id) })),
          el("td", {}, el("a", { href: "/static/node.html?key=" + encodeURIComponent(n.ip_addr), text: n.name || n.ip_addr })),
          el("td", { text: n.ip_addr }),
          el("td", { class: "num", text: n.avail_cpus }),
          el("td", { class: "num", text: n.busy }),
          el("td", {}, cpus, " ",
             el("button", { class: "secondary set-cpus", text: "Set CPUs", onclick: async () => {
               await run("set_cpus", { node: n.ip_addr, cpus: cpus.value });
               editing.delete(id);
             } })));
      });
      const nodeAction = (action) => () => {
        const nodes = selected();
        if (!nodes.length) { dispy.showResult(result, { ok: false, status: 400, body: { error: "tick the nodes first" } }); return; }
        run(action, { node: nodes });
      };
      return el("section", { class: "panel", "data-cluster": c.name },
        el("h2", { text: "Cluster " + c.name }),
        c.nodes.length ? el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, el("th", { text: "" }), el("th", { text: "Node" }), el("th", { text: "Address" }),
            el("th", { class: "num", text: "CPUs offered" }), el("th", { class: "num", text: "Busy" }), el("th", { text: "CPUs used" }))),
          el("tbody", {}, rows))) : el("div", { class: "empty", text: "No node has joined yet." }),
        el("div", { class: "row" },
          el("span", { class: "muted", text: "Ticked nodes:" }),
          el("button", { class: "secondary", text: "Allocate", onclick: nodeAction("allocate_node") }),
          el("button", { class: "secondary", text: "Deallocate", onclick: nodeAction("deallocate_node") }),
          el("button", { class: "danger", text: "Close", onclick: nodeAction("close_node") })),
        result);
    }));
  }

  document.getElementById("add-node").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const fields = { cluster: form.cluster.value || "*", host: form.host.value, cpus: form.cpus.value || "0" };
    if (form.port.value) fields.port = form.port.value;
    dispy.showResult(document.getElementById("add-result"), await dispy.act("add_node", fields), "add_node");
  });

  // Re-rendering while someone types in a CPUs box would lose the caret: wait until they leave it.
  let pending = null;
  const typing = () => {
    const a = document.activeElement;
    return box.contains(a) && a.tagName === "INPUT" && a.type === "number";
  };
  dispy.live((snap) => {
    pending = snap;
    if (!typing()) { render(snap); pending = null; }
  });
  box.addEventListener("focusout", () => setTimeout(() => {
    if (pending && !typing()) { render(pending); pending = null; }
  }, 0));
})();
