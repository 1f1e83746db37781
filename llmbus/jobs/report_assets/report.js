// Sorting, filtering and CSV download of the replay report's pairs table. The rows are
// rendered by the server; this only reorders and hides them, so the page reads the same
// without scripts. Nothing is fetched: the page works on a network without internet.
"use strict";
(function () {
  const table = document.getElementById("pairs");
  if (!table) { return; }
  const body = table.tBodies[0];
  const rows = () => Array.from(body.querySelectorAll("tr.pair"));
  const detailOf = (row) => document.getElementById(row.dataset.detail);
  const control = (id) => document.getElementById(id);
  const shown = control("shown");

  function apply() {
    const lo = parseFloat(control("sim-min").value);
    const hi = parseFloat(control("sim-max").value);
    const tenant = control("tenant").value;
    const model = control("model").value;
    const state = control("state").value;
    const text = control("search").value.toLowerCase();
    let count = 0;
    for (const row of rows()) {
      const sim = parseFloat(row.dataset.similarity);
      const ok = (isNaN(lo) || (!isNaN(sim) && sim >= lo))
        && (isNaN(hi) || (!isNaN(sim) && sim <= hi))
        && (!tenant || row.dataset.tenant === tenant)
        && (!model || row.dataset.model === model)
        && (!state || row.dataset.state === state)
        && (!text || detailOf(row).textContent.toLowerCase().includes(text));
      row.hidden = !ok;
      if (!ok) { detailOf(row).hidden = true; }
      count += ok ? 1 : 0;
    }
    shown.textContent = String(count);
  }

  function sortBy(th) {
    const key = th.dataset.key;
    const numeric = th.dataset.type === "number";
    const descending = th.getAttribute("aria-sort") === "ascending";
    for (const other of table.tHead.querySelectorAll("th")) { other.removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    const value = (row) => {
      const raw = row.dataset[key] || "";
      if (!numeric) { return raw; }
      const n = parseFloat(raw);
      return isNaN(n) ? Infinity : n; // unknown values last
    };
    const sorted = rows().sort((a, b) => {
      const x = value(a), y = value(b);
      const order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    for (const row of sorted) { body.append(row, detailOf(row)); }
  }

  function csv() {
    const data = JSON.parse(document.getElementById("pairs-data").textContent);
    const cell = (v) => {
      let s = v === null || v === undefined ? "" : String(v);
      // Text a spreadsheet would run as a formula is quoted, as replay_csv.py does.
      if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) { s = "'" + s; }
      return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    const visible = new Set(rows().filter((r) => !r.hidden).map((r) => r.dataset.id));
    const lines = [data.columns.map(cell).join(",")];
    for (const record of data.rows) {
      if (visible.has(record[0])) { lines.push(record.map(cell).join(",")); }
    }
    const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = data.filename;
    link.click();
    URL.revokeObjectURL(link.href);
  }

  for (const th of table.tHead.querySelectorAll("th[data-key]")) {
    th.addEventListener("click", () => sortBy(th));
  }
  for (const id of ["sim-min", "sim-max", "tenant", "model", "state", "search"]) {
    control(id).addEventListener("input", apply);
  }
  for (const row of rows()) {
    row.addEventListener("click", () => { const d = detailOf(row); d.hidden = !d.hidden; });
  }
  control("csv").addEventListener("click", csv);
  apply();
})();
