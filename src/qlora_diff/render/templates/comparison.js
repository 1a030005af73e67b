// Rows table of reports/comparison.html: filter, search, sort and page the rows the pipeline computed.
// Nothing is computed here that the report states; nothing is fetched.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const COL = Object.fromEntries(DATA.columns.map((name, index) => [name, index]));
  const PAGE_SIZE = 50;
  const FIXED_FILTERS = ["set", "category", "stability", "gold", "base", "adapter"];
  const state = { filters: {}, query: "", sort: "", page: 0 };
  const tbody = document.querySelector("#row-table tbody");
  const selects = {};

  const value = (row, name) => {
    const feature = DATA.features.indexOf(name);
    return feature >= 0 ? row[COL.slices][feature] : row[COL[name]];
  };
  const distinct = (name) => [...new Set(DATA.rows.map((row) => value(row, name)))].filter((v) => v !== "").sort();

  function addSelect(name) {
    const label = document.createElement("label");
    label.textContent = name.replace(/_/g, " ") + " ";
    const select = document.createElement("select");
    select.dataset.filter = name;
    select.append(new Option("all", ""));
    for (const option of distinct(name)) select.append(new Option(option, option));
    select.addEventListener("change", () => { setFilter(name, select.value); render(); });
    label.append(select);
    document.getElementById("filters").append(label);
    selects[name] = select;
  }

  function setFilter(name, chosen) {
    if (chosen) state.filters[name] = chosen; else delete state.filters[name];
    selects[name].value = chosen;
    state.page = 0;
  }

  function matches(row) {
    for (const [name, chosen] of Object.entries(state.filters)) {
      if (value(row, name) !== chosen) return false;
    }
    if (!state.query) return true;
    const text = [row[COL.id], ...DATA.fields.map((field) => row[COL[field]])].join(" ").toLowerCase();
    return text.includes(state.query);
  }

  function ordered(rows) {
    if (!state.sort) return rows;
    const sign = state.sort === "rise" ? -1 : 1;
    const change = (row) => row[COL.gold_p_change];
    // Rows without probabilities (generated answers) go last; ties keep file order.
    return rows.map((row, index) => [row, index]).sort((a, b) => {
      const x = change(a[0]), y = change(b[0]);
      if (x === null || y === null) return (x === null) - (y === null) || a[1] - b[1];
      return sign * (x - y) || a[1] - b[1];
    }).map((pair) => pair[0]);
  }

  const fixed = (v, digits) => (v === null || v === undefined ? "n/a" : v.toFixed(digits));

  function cell(tr, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.append(td);
    return td;
  }

  function render() {
    const found = ordered(DATA.rows.filter(matches));
    const pages = Math.max(1, Math.ceil(found.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * PAGE_SIZE;
    const shown = found.slice(first, first + PAGE_SIZE);
    document.getElementById("match-count").textContent = String(found.length);
    document.getElementById("page-info").textContent =
      found.length ? `Showing ${first + 1}-${first + shown.length} (page ${state.page + 1} of ${pages}).` : "";
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
    const fragment = document.createDocumentFragment();
    for (const row of shown) {
      const tr = document.createElement("tr");
      tr.className = "row " + row[COL.category];
      cell(tr, row[COL.set]);
      cell(tr, row[COL.id]);
      for (const field of DATA.fields) cell(tr, row[COL[field]], "text");
      cell(tr, row[COL.gold]);
      cell(tr, `${row[COL.base]} (${fixed(row[COL.base_p], 2)})`);
      cell(tr, `${row[COL.adapter]} (${fixed(row[COL.adapter_p], 2)})`);
      const change = row[COL.gold_p_change];
      cell(tr, change === null ? "n/a" : `${fixed(row[COL.gold_p_base], 2)} → ${fixed(row[COL.gold_p_adapter], 2)} ` +
        `(${change >= 0 ? "+" : ""}${change.toFixed(2)})`);
      cell(tr, `${fixed(row[COL.base_margin], 3)} / ${fixed(row[COL.adapter_margin], 3)}`);
      cell(tr, row[COL.category].replace("_", " "), "category");
      cell(tr, row[COL.stability] ? `${row[COL.seeds_right]} ${row[COL.stability]}` : "n/a (one seed)", "stability");
      const tags = cell(tr, row[COL.tags]);
      tags.title = DATA.features.map((name, i) => `${name}=${row[COL.slices][i]}`).filter((t) => !t.endsWith("=")).join("\n");
      fragment.append(tr);
    }
    tbody.replaceChildren(fragment);
    for (const button of document.querySelectorAll("button.cell")) {
      const d = button.dataset;
      button.classList.toggle("active", state.filters.set === d.set && state.filters.base === d.base &&
        state.filters.adapter === d.adapter);
    }
  }

  function clearFilters() {
    for (const name of Object.keys(selects)) setFilter(name, "");
    state.query = "";
    document.getElementById("search").value = "";
  }

  for (const name of FIXED_FILTERS.concat(DATA.features)) addSelect(name);
  document.getElementById("search").addEventListener("input", (event) => {
    state.query = event.target.value.trim().toLowerCase();
    state.page = 0;
    render();
  });
  document.getElementById("sort").addEventListener("change", (event) => { state.sort = event.target.value; render(); });
  document.getElementById("sort-change").addEventListener("click", () => {
    state.sort = state.sort === "rise" ? "fall" : "rise";
    document.getElementById("sort").value = state.sort;
    render();
  });
  document.getElementById("clear").addEventListener("click", () => { clearFilters(); render(); });
  document.getElementById("prev").addEventListener("click", () => { state.page -= 1; render(); });
  document.getElementById("next").addEventListener("click", () => { state.page += 1; render(); });
  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
  for (const button of document.querySelectorAll("button.cell")) {
    button.addEventListener("click", () => {
      clearFilters();
      setFilter("set", button.dataset.set);
      setFilter("base", button.dataset.base);
      setFilter("adapter", button.dataset.adapter);
      render();
      document.getElementById("rows").scrollIntoView();
    });
  }
  render();
})();
