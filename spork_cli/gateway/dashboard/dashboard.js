// The spork dashboard: polls this admin listener's API and metrics, and renders them.
// No framework and nothing fetched from anywhere else; data only ever enters the page as text.
"use strict";

(() => {
  const POLL_MS = 1000;
  const TOKEN_KEY = "spork-admin-token";
  const metricsPath = document.querySelector('meta[name="spork-metrics"]').content;
  let previous = null; // the last scrape's totals, for rates: {at, total, errors}
  let polls = 0;

  class NeedsToken extends Error {}

  // A token in the fragment (never sent to the server, so never logged) moves to this tab's
  // storage and out of the address bar.
  function takeTokenFromFragment() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  async function get(path, json = true) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) throw new NeedsToken(`${path} needs the admin token`);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return json ? response.json() : response.text();
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  function badge(text) {
    return el("span", { class: `badge ${text}` }, text);
  }

  function sectionError(id, error) {
    const note = document.querySelector(`#${id} .section-error`);
    note.hidden = !error;
    note.textContent = error ? String(error.message || error) : "";
  }

  function ago(epochSeconds) {
    if (epochSeconds === null || epochSeconds === undefined) return "never";
    const seconds = Math.max(0, Date.now() / 1000 - epochSeconds);
    return seconds < 60 ? `${seconds.toFixed(1)} s ago` : `${Math.round(seconds / 60)} min ago`;
  }

  function clock(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString();
  }

  // -- metrics ------------------------------------------------------------------------------

  function parseLabels(text) {
    const labels = {};
    const pattern = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      labels[match[1]] = match[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    return labels;
  }

  // Sums of spork_requests_total: all of it, the 5xx part, and both per route.
  function requestTotals(text) {
    const totals = { total: 0, errors: 0, routes: new Map() };
    for (const line of text.split("\n")) {
      if (!line.startsWith("spork_requests_total{")) continue;
      const close = line.lastIndexOf("}");
      const labels = parseLabels(line.slice("spork_requests_total{".length, close));
      const value = Number.parseFloat(line.slice(close + 1).trim().split(/\s+/)[0]);
      if (!Number.isFinite(value)) continue;
      const failed = (labels.status || "").startsWith("5");
      totals.total += value;
      if (failed) totals.errors += value;
      const route = totals.routes.get(labels.route) || { total: 0, errors: 0 };
      route.total += value;
      if (failed) route.errors += value;
      totals.routes.set(labels.route, route);
    }
    return totals;
  }

  function showNumber(id, value, digits) {
    const node = document.getElementById(id);
    node.dataset.value = value === null ? "" : String(value);
    node.textContent = value === null ? "–" : value.toFixed(digits);
    node.classList.toggle("nonzero", value !== null && value > 0);
  }

  function renderMetrics(totals) {
    if (totals === null) {
      for (const id of ["rate-requests", "rate-errors", "total-requests", "total-errors"]) {
        showNumber(id, null, 0);
        const node = document.getElementById(id);
        node.textContent = "off";
        node.title = "metrics are off ([metrics] enabled = false)";
      }
      previous = null;
      return;
    }
    const now = performance.now();
    showNumber("total-requests", totals.total, 0);
    showNumber("total-errors", totals.errors, 0);
    // A counter that went down was restarted (a worker, or the whole gateway): no rate yet.
    if (previous && now > previous.at && totals.total >= previous.total) {
      const seconds = (now - previous.at) / 1000;
      showNumber("rate-requests", (totals.total - previous.total) / seconds, 1);
      showNumber("rate-errors", Math.max(0, totals.errors - previous.errors) / seconds, 1);
    } else {
      showNumber("rate-requests", null, 1);
      showNumber("rate-errors", null, 1);
    }
    previous = { at: now, total: totals.total, errors: totals.errors };
  }

  // -- sections -----------------------------------------------------------------------------

  function renderServices(data) {
    const body = document.querySelector("#services tbody");
    const rows = [];
    let available = 0;
    for (const service of data.services) {
      if (service.healthy) available += 1;
      const breaker = service.breaker ? service.breaker.state : null;
      service.endpoints.forEach((endpoint, index) => {
        const state = endpoint.available ? "up" : endpoint.ejected ? "ejected" : "down";
        const row = el(
          "tr",
          { data: { service: service.service, endpoint: endpoint.url, state } },
          index === 0 ? el("td", {}, service.service) : el("td"),
          index === 0
            ? el("td", { class: "breaker", data: { breaker: breaker || "" } },
                breaker ? badge(breaker) : "–")
            : el("td"),
          el("td", { class: "url" }, endpoint.url),
          el("td", { class: "state" }, badge(state)),
          el("td", {}, service.health_check ? ago(endpoint.last_check) : "not checked"),
          el(
            "td",
            { class: "num" },
            endpoint.last_latency_ms === null ? "–" : `${endpoint.last_latency_ms} ms`,
          ),
          el("td", { class: "num" }, endpoint.in_flight),
          el("td", { class: "error" }, endpoint.last_error || ""),
        );
        rows.push(row);
      });
    }
    body.replaceChildren(...rows);
    const summary = document.getElementById("summary-services");
    summary.textContent = `${available} / ${data.services.length}`;
    summary.dataset.available = String(available);
    summary.dataset.total = String(data.services.length);
  }

  function renderRoutes(data, totals) {
    const body = document.querySelector("#routes tbody");
    const rows = data.routes.map((route) => {
      const counted = totals ? totals.routes.get(route.route) || { total: 0, errors: 0 } : null;
      return el(
        "tr",
        { data: { route: route.route } },
        el("td", {}, route.route),
        el("td", { class: "path" }, route.path),
        el("td", {}, route.methods.join(" ")),
        el("td", {}, route.service),
        el("td", {}, route.auth),
        el("td", {}, route.features.join(", ")),
        el("td", { class: "num requests" }, counted ? counted.total : "–"),
        el("td", { class: "num errors" }, counted ? counted.errors : "–"),
      );
    });
    body.replaceChildren(...rows);
  }

  function renderReloads(data) {
    const list = document.querySelector("#reloads ol");
    document.querySelector("#reloads .empty").hidden = data.reloads.length > 0;
    const items = data.reloads.map((reload) => {
      const errors = (reload.errors || []).map((e) => {
        const where = e.file ? `${e.file}:${e.line}:${e.column}: ` : "";
        const what = e.path ? `${e.path}: ${e.message}` : e.message;
        return el("li", {}, `${where}${what}`);
      });
      const restart = reload.needs_restart && reload.needs_restart.length
        ? el("span", { class: "restart" }, ` needs restart: ${reload.needs_restart.join(", ")}`)
        : null;
      return el(
        "li",
        { data: { result: reload.result } },
        el("span", { class: "when" }, clock(reload.at)),
        badge(reload.result),
        ` ${reload.trigger}`,
        restart,
        errors.length ? el("ul", {}, ...errors) : null,
      );
    });
    list.replaceChildren(...items);
    const last = data.reloads[0];
    const summary = document.getElementById("summary-reload");
    summary.replaceChildren(last ? badge(last.result) : "none");
    summary.dataset.result = last ? last.result : "";
  }

  // -- the loop -----------------------------------------------------------------------------

  async function scrape() {
    if (!metricsPath) return null;
    try {
      return requestTotals(await get(metricsPath, false));
    } catch (error) {
      if (String(error.message).endsWith("HTTP 404")) return null; // metrics are off
      throw error;
    }
  }

  async function refresh() {
    const [routes, services, reloads, metrics] = await Promise.allSettled([
      get("/api/routes"),
      get("/api/services"),
      get("/api/reloads"),
      scrape(),
    ]);
    const totals = metrics.status === "fulfilled" ? metrics.value : null;
    if (metrics.status === "fulfilled") renderMetrics(totals);
    const parts = { routes, services, reloads };
    const render = { routes: (d) => renderRoutes(d, totals), services: renderServices,
      reloads: renderReloads };
    const failures = [];
    for (const [id, result] of Object.entries(parts)) {
      if (result.status === "fulfilled") {
        render[id](result.value);
        sectionError(id, null);
      } else {
        sectionError(id, result.reason);
        failures.push(result.reason);
      }
    }
    if (metrics.status === "rejected") failures.push(metrics.reason);
    const needsToken = failures.some((f) => f instanceof NeedsToken);
    document.getElementById("token-form").hidden = !needsToken;
    document.getElementById("token-forget").hidden = !sessionStorage.getItem(TOKEN_KEY);
    const status = document.getElementById("status");
    status.classList.toggle("failing", failures.length > 0);
    if (failures.length) {
      status.textContent = needsToken
        ? "the admin API needs its token"
        : `cannot reach the gateway: ${failures[0].message}`;
    } else {
      polls += 1;
      document.body.dataset.polls = String(polls);
      status.textContent = `live, updated ${new Date().toLocaleTimeString()}`;
    }
  }

  async function tick() {
    try {
      await refresh();
    } catch (error) {
      document.getElementById("status").textContent = `dashboard error: ${error.message}`;
    } finally {
      setTimeout(tick, POLL_MS);
    }
  }

  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token-input");
    sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = "";
    refresh();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    refresh();
  });

  takeTokenFromFragment();
  tick();
})();
