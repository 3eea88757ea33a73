// Orion Kernel dashboard: polls api/state and renders it into the page.
//
// Plain JavaScript, no framework and no build step.  Everything the kernel
// reports is written with textContent (never innerHTML), so a plugin name or
// an error message is shown, not interpreted.  Rows are keyed and updated in
// place, so tables do not flicker and each row keeps stable attributes
// (data-plugin, data-operation, data-hook) that tests and users can rely on.
"use strict";

(() => {
  const STATE_URL = "api/state";
  const SPARK_SECONDS = 60; // the most the server keeps
  const SPARK_MIN_SECONDS = 10; // the least the x axis spans, so a fresh kernel's line is not a dot
  const SPARK_W = 240;
  const SPARK_H = 40;
  const DASH = "—";

  let pollMs = 1000;
  let updates = 0;

  const byId = (id) => document.getElementById(id);

  // -- formatting -------------------------------------------------------------------

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  function fmtCount(v) {
    return isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH;
  }

  function fmtRate(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return "0";
    if (v < 10) return v.toFixed(2);
    if (v < 100) return v.toFixed(1);
    return Math.round(v).toLocaleString("en-US");
  }

  function fmtSeconds(v) {
    if (!isNum(v)) return DASH;
    if (v < 1e-3) return `${(v * 1e6).toFixed(0)} µs`;
    if (v < 1) return `${(v * 1e3).toFixed(v < 0.01 ? 2 : 1)} ms`;
    return `${v.toFixed(2)} s`;
  }

  function fmtRatio(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return "0%";
    return `${(v * 100).toFixed(v < 0.1 ? 2 : 1)}%`;
  }

  function ratioClass(v) {
    if (!isNum(v) || v === 0) return "";
    return v >= 0.05 ? "ratio-bad" : "ratio-warn";
  }

  function fmtAge(seconds) {
    if (!isNum(seconds) || seconds < 0) return DASH;
    if (seconds < 60) return `${Math.round(seconds)}s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.round(seconds % 60)}s`;
    return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  }

  // -- DOM helpers ----------------------------------------------------------------------

  // Set text (and the raw value, for tests and copy-paste) only when it changed.
  function setText(el, text, value) {
    if (el.textContent !== text) el.textContent = text;
    if (value !== undefined) {
      const raw = value === null || value === undefined ? "" : String(value);
      if (el.dataset.value !== raw) el.dataset.value = raw;
    }
  }

  function setClass(el, base, extra) {
    const cls = extra ? `${base} ${extra}` : base;
    if (el.className !== cls) el.className = cls;
  }

  // Bring tbody's rows in line with `items`: one <tr> per key, in order.
  // columns: [{cls, text(item), value?(item), extra?(item)}]; attrs(item) -> data-* of the row.
  function syncRows(tbody, items, keyOf, attrs, columns) {
    const existing = new Map();
    for (const tr of Array.from(tbody.rows)) existing.set(tr.dataset.key, tr);
    items.forEach((item, index) => {
      const key = keyOf(item);
      let tr = existing.get(key);
      if (tr) {
        existing.delete(key);
      } else {
        tr = document.createElement("tr");
        tr.dataset.key = key;
        for (const [name, val] of Object.entries(attrs(item))) tr.dataset[name] = val;
        for (let i = 0; i < columns.length; i += 1) tr.appendChild(document.createElement("td"));
      }
      columns.forEach((col, i) => {
        const td = tr.cells[i];
        const text = col.text(item);
        setText(td, text, col.value ? col.value(item) : undefined);
        setClass(td, col.cls, [col.extra ? col.extra(item) : "", text === DASH ? "none" : ""].filter(Boolean).join(" "));
      });
      if (tbody.rows[index] !== tr) tbody.insertBefore(tr, tbody.rows[index] || null);
    });
    for (const tr of existing.values()) tr.remove();
  }

  function syncList(ul, items, keyOf, fill) {
    const existing = new Map();
    for (const li of Array.from(ul.children)) existing.set(li.dataset.key, li);
    items.forEach((item, index) => {
      const key = keyOf(item);
      let li = existing.get(key);
      if (li) existing.delete(key);
      else {
        li = document.createElement("li");
        li.dataset.key = key;
      }
      fill(li, item);
      if (ul.children[index] !== li) ul.insertBefore(li, ul.children[index] || null);
    });
    for (const li of existing.values()) li.remove();
  }

  function span(cls, text) {
    const el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  // -- the sections ---------------------------------------------------------------------

  const listText = (xs) => (xs && xs.length ? xs.join(", ") : DASH);
  const latencyColumns = [
    { cls: "num calls", text: (r) => fmtCount(r.calls), value: (r) => r.calls },
    { cls: "num errors", text: (r) => fmtCount(r.errors), value: (r) => r.errors },
    { cls: "num ratio", text: (r) => fmtRatio(r.error_ratio), value: (r) => r.error_ratio, extra: (r) => ratioClass(r.error_ratio) },
    { cls: "num p50", text: (r) => fmtSeconds(r.p50), value: (r) => r.p50 },
    { cls: "num p95", text: (r) => fmtSeconds(r.p95), value: (r) => r.p95 },
  ];

  function renderPlugins(plugins) {
    syncRows(
      document.querySelector("#plugins tbody"),
      plugins,
      (p) => p.name,
      (p) => ({ plugin: p.name }),
      [
        { cls: "name", text: (p) => p.name },
        { cls: "version", text: (p) => p.version || DASH },
        { cls: "state", text: (p) => p.state, value: (p) => p.state, extra: (p) => `state-${p.state}` },
        { cls: "enabled", text: (p) => (p.enabled ? "yes" : "no"), value: (p) => p.enabled },
        { cls: "list hooks", text: (p) => listText(p.hooks) },
        { cls: "list operations", text: (p) => listText(p.operations) },
        { cls: "error", text: (p) => p.last_error || DASH },
      ],
    );
    for (const tr of document.querySelectorAll("#plugins tbody tr")) {
      const state = tr.cells[2].dataset.value;
      if (tr.dataset.state !== state) tr.dataset.state = state;
    }
    const running = plugins.filter((p) => p.state === "running").length;
    const failed = plugins.filter((p) => p.state === "failed" || p.state === "quarantined").length;
    setText(byId("plugin-count"), String(plugins.length), plugins.length);
    return { running, failed };
  }

  function renderOperations(operations) {
    syncRows(
      document.querySelector("#operations tbody"),
      operations,
      (o) => o.operation,
      (o) => ({ operation: o.operation }),
      [
        { cls: "operation", text: (o) => o.operation },
        { cls: "plugin", text: (o) => o.plugin || DASH },
        latencyColumns[0],
        { cls: "num rate", text: (o) => fmtRate(o.rate), value: (o) => o.rate },
        ...latencyColumns.slice(1),
      ],
    );
    byId("operations-empty").hidden = operations.length > 0;
  }

  function renderHooks(hooks) {
    syncRows(
      document.querySelector("#hooks tbody"),
      hooks,
      (h) => `${h.hook} ${h.plugin}`,
      (h) => ({ hook: h.hook, plugin: h.plugin }),
      [{ cls: "hook", text: (h) => h.hook }, { cls: "plugin", text: (h) => h.plugin }, ...latencyColumns],
    );
    byId("hooks-empty").hidden = hooks.length > 0;
  }

  function renderInvokes(inv) {
    setText(byId("invoke-total"), fmtCount(inv.total), inv.total);
    setText(byId("invoke-rate"), fmtRate(inv.rate), inv.rate);
    setText(byId("invoke-errors"), fmtCount(inv.errors), inv.errors);
    setText(byId("invoke-errors-unit"), inv.errors === 1 ? "failed call" : "failed calls");
    setText(byId("invoke-error-ratio"), fmtRatio(inv.error_ratio), inv.error_ratio);
    setClass(byId("invoke-error-ratio"), "", ratioClass(inv.error_ratio));
    setText(byId("invoke-rate-window"), `${inv.window}s`);
    renderSparkline(inv.history || []);
  }

  function renderSparkline(history) {
    const points = history.filter((p) => isNum(p.age) && isNum(p.rate) && p.age >= -SPARK_SECONDS);
    const peak = points.reduce((m, p) => Math.max(m, p.rate), 0);
    setText(byId("invoke-rate-peak"), fmtRate(points.length ? peak : null), points.length ? peak : null);
    // The x axis spans what the server has seen (up to a minute), then rolls.
    const oldest = points.length ? -points[0].age : 0;
    const span = Math.min(SPARK_SECONDS, Math.max(SPARK_MIN_SECONDS, Math.ceil(oldest)));
    setText(byId("invoke-rate-span"), span >= SPARK_SECONDS ? "last minute" : `last ${span}s`);
    const scale = peak > 0 ? peak : 1;
    const xy = points.map((p) => {
      const x = ((span + p.age) / span) * SPARK_W;
      const y = SPARK_H - 2 - (p.rate / scale) * (SPARK_H - 4);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = xy.length >= 2 ? xy.join(" ") : "";
    byId("sparkline-line").setAttribute("points", line);
    const area = xy.length >= 2 ? `${xy[0].split(",")[0]},${SPARK_H} ${line} ${xy[xy.length - 1].split(",")[0]},${SPARK_H}` : "";
    byId("sparkline-area").setAttribute("points", area);
  }

  function renderAlerts(alerts, generatedAt) {
    const firing = alerts.firing || [];
    setText(byId("alert-count"), alerts.available ? String(firing.length) : DASH, alerts.available ? firing.length : null);
    setText(byId("alerts-source"), alerts.available ? (firing.length ? "see below" : "nothing is firing") : "alerts plugin not running");
    byId("alerts-section").hidden = firing.length === 0;
    syncList(
      byId("alerts"),
      firing,
      (a) => `${a.rule} ${JSON.stringify(a.labels)}`,
      (li, a) => {
        li.dataset.rule = a.rule;
        li.dataset.severity = a.severity;
        li.replaceChildren(
          span(`severity severity-${a.severity}`, a.severity),
          span("rule", a.rule),
          span("summary", a.summary),
          span("labels", Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(" ")),
          span("since muted", `for ${fmtAge(generatedAt - a.since)}`),
        );
      },
    );
  }

  function renderLinks(links) {
    const mounts = links.mounts || [];
    syncList(byId("links"), mounts, (m) => m.prefix, (li, m) => {
      li.dataset.prefix = m.prefix;
      const a = document.createElement("a");
      a.href = m.href;
      a.textContent = m.prefix;
      li.replaceChildren(a, document.createTextNode(" "), span("muted", m.plugin));
    });
    byId("links-empty").hidden = mounts.length > 0;
  }

  function renderNotes(notes) {
    syncList(byId("notes"), notes, (n) => n, (li, n) => setText(li, n));
  }

  function render(state) {
    const counts = renderPlugins(state.plugins);
    renderOperations(state.operations);
    renderHooks(state.hooks);
    renderInvokes(state.invokes);
    renderAlerts(state.alerts, state.generated_at);
    renderLinks(state.links);
    renderNotes(state.notes);
    const parts = [
      `${state.plugins.length} plugins`,
      `${counts.running} running`,
      counts.failed ? `${counts.failed} failed` : null,
      `${state.operations.length} operations`,
    ].filter(Boolean);
    setText(byId("summary"), parts.join(" · "));
    setText(byId("updated"), new Date(state.generated_at * 1000).toLocaleTimeString());
    if (isNum(state.poll_interval) && state.poll_interval > 0) pollMs = state.poll_interval * 1000;
    setText(byId("poll-interval"), `api/state every ${pollMs / 1000}s`);
  }

  function setStatus(kind, text) {
    const el = byId("status");
    setClass(el, "status", `status-${kind}`);
    setText(el, text);
  }

  // -- polling --------------------------------------------------------------------------

  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), Math.max(5000, pollMs * 5));
    try {
      const response = await fetch(STATE_URL, {
        cache: "no-store",
        headers: { Accept: "application/json" },
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`api/state answered ${response.status}`);
      const state = await response.json();
      render(state);
      updates += 1;
      document.body.dataset.updates = String(updates);
      setStatus("live", "live");
    } catch (error) {
      console.error("dashboard:", error);
      setStatus("down", `disconnected: ${error && error.message ? error.message : error} (retrying)`);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, pollMs);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", poll);
  else poll();
})();
