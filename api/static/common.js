/* Shared helpers of the loyalty pages: DOM building, the API key, JSON API calls with retries, SVG charts.
   No dependencies and no build step; every page loads this file first. */
"use strict";

const L = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";

  /** el("div", {class: "x", text: "hi", onclick: fn}, child, ...) */
  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const $ = (id) => document.getElementById(id);

  /** A random UUID; crypto.randomUUID exists only on https and localhost, so a LAN till falls back. */
  function uuid() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // --- the API key -----------------------------------------------------------------------------------

  const KEY_PREFIX = "loyalty.key.";

  /** The key bar and key form of a page; ``onKey`` runs whenever a key is set (and at start if one is). */
  function keySetup(slot, label, onKey) {
    const storageKey = KEY_PREFIX + slot;
    const panel = $("key-panel");
    const state = $("key-state");
    const show = () => {
      const key = localStorage.getItem(storageKey);
      state.textContent = key ? `${label} key …${key.slice(-4)}` : "No key";
      state.classList.toggle("ok", Boolean(key));
      panel.hidden = Boolean(key);
      return key;
    };
    $("key-change").addEventListener("click", () => {
      panel.hidden = false;
      $("key-input").focus();
    });
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("key-input").value.trim();
      if (!value) return;
      localStorage.setItem(storageKey, value);
      $("key-input").value = "";
      const key = show();
      if (key) onKey(key);
    });
    const key = show();
    if (key) onKey(key);
    return {
      get: () => localStorage.getItem(storageKey),
      forget: () => {
        localStorage.removeItem(storageKey);
        show();
      },
    };
  }

  // --- the JSON API -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  /** Call the API; resolves to the parsed JSON, rejects with ApiError (HTTP) or TypeError (network). */
  async function api(path, { method = "GET", key, json, text, contentType, headers = {} } = {}) {
    const h = { Accept: "application/json", ...headers };
    if (key) h.Authorization = `Bearer ${key}`;
    let body;
    if (json !== undefined) {
      body = JSON.stringify(json);
      h["Content-Type"] = "application/json";
    } else if (text !== undefined) {
      body = text;
      h["Content-Type"] = contentType || "text/plain";
    }
    const response = await fetch(path, { method, headers: h, body, cache: "no-store" });
    const raw = await response.text();
    let data = null;
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch (_) {
      data = { detail: raw.slice(0, 200) };
    }
    if (!response.ok) throw new ApiError(response.status, data || {});
    return data;
  }

  const RETRIES = 3;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** A till write: the same Idempotency-Key on every attempt, retried when the outcome is unknown
      (network error, 5xx, or 409 "still running"), so a flaky connection never books twice. */
  async function write(path, { key, json, idempotencyKey }) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await api(path, { method: "POST", key, json, headers: { "Idempotency-Key": idempotencyKey } });
      } catch (error) {
        const unknown =
          !(error instanceof ApiError) ||
          error.status >= 500 ||
          (error.problem && String(error.problem.type).endsWith("request-in-progress"));
        if (!unknown || attempt >= RETRIES) throw error;
        await sleep(250 * attempt);
      }
    }
  }

  /** One user action per button: disabled while it runs, so a double tap cannot start it twice. */
  function action(button, run) {
    button.addEventListener("click", async (event) => {
      event.preventDefault();
      if (button.disabled || button.dataset.busy) return;
      button.dataset.busy = "1";
      button.disabled = true;
      button.classList.add("busy");
      try {
        await run(event);
      } finally {
        delete button.dataset.busy;
        button.classList.remove("busy");
        button.disabled = Boolean(button.dataset.lock);
      }
    });
  }

  function describe(error) {
    if (error instanceof ApiError) {
      if (error.status === 401) return "The API key is not valid (or was revoked). Change the key.";
      if (error.status === 403) return "This key may not do that: " + (error.problem.detail || "");
      const extra = (error.problem.errors || [])
        .slice(0, 3)
        .map((e) => e.message || (e.loc ? `${e.loc.join(".")}: ${e.msg}` : JSON.stringify(e)))
        .join("; ");
      return (error.problem.detail || error.problem.title || `HTTP ${error.status}`) + (extra ? ` (${extra})` : "");
    }
    return "The server could not be reached. Try again; nothing is booked twice.";
  }

  function notice(node, message, kind = "error") {
    node.hidden = !message;
    node.textContent = message || "";
    node.className = `notice ${kind}`;
  }

  // --- formatting ---------------------------------------------------------------------------------------

  const fmtInt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const points = (n) => fmtInt.format(Number(n));
  /** Decimal strings from the API ("16.00") shown as they are, trailing zeros trimmed. */
  const decimal = (s) => String(s).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");

  const moneyFormats = new Map();
  function moneyFormat(currency) {
    if (!moneyFormats.has(currency)) {
      moneyFormats.set(currency, new Intl.NumberFormat(undefined, { style: "currency", currency }));
    }
    return moneyFormats.get(currency);
  }

  /** Decimal places of a currency's minor unit as the browser knows them (EUR 2, JPY 0, KWD 3). */
  const minorDigits = (currency) => moneyFormat(currency || "EUR").resolvedOptions().maximumFractionDigits;

  /** An amount in minor units of `currency`, written as the browser's locale writes money. */
  function money(minor, currency) {
    const code = currency || "EUR";
    return moneyFormat(code).format(Number(minor) / 10 ** minorDigits(code));
  }

  /** A price typed at the till -> minor units of `currency`, without floating point: "3.50" or
   *  "3,5" -> 350 for EUR, "350" -> 350 for JPY, "1.250" -> 1250 for KWD; null when it is not one. */
  function parseMinor(text, currency) {
    const digits = minorDigits(currency);
    const pattern = digits ? new RegExp(`^\\s*(\\d{1,9})(?:[.,](\\d{1,${digits}}))?\\s*$`) : /^\s*(\d{1,12})\s*$/;
    const m = pattern.exec(text || "");
    if (!m) return null;
    return Number(m[1]) * 10 ** digits + Number((m[2] || "").padEnd(digits, "0") || "0");
  }

  function when(iso) {
    const d = new Date(iso);
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  /** A <input type=date> value -> ISO instant at local midnight (with the browser's offset). */
  function dayStart(value) {
    const [y, m, d] = value.split("-").map(Number);
    return new Date(y, m - 1, d).toISOString();
  }

  function isoDay(date) {
    const p = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}`;
  }

  // --- charts (inline SVG) -------------------------------------------------------------------------------

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function legend(series) {
    return el(
      "div",
      { class: "legend" },
      series.map((s) => el("span", { class: "legend-item" }, el("i", { class: `swatch ${s.cls}` }), s.name))
    );
  }

  /** Grouped vertical bars: categories along x, one bar per series. */
  function columnChart({ categories, series, height = 240, label = "chart" }) {
    const width = Math.max(320, categories.length * (18 * series.length + 22) + 60);
    const top = 12, bottom = 36, left = 52, right = 8;
    const plotH = height - top - bottom;
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
    const y = (v) => top + plotH - (Math.max(0, v) / max) * plotH;
    const slot = (width - left - right) / Math.max(1, categories.length);
    const barW = Math.max(4, Math.min(22, (slot - 10) / series.length));
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label });
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      chart.append(
        svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }),
        svg("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, points(v))
      );
    }
    categories.forEach((cat, i) => {
      const x0 = left + i * slot + (slot - barW * series.length) / 2;
      series.forEach((s, j) => {
        const v = s.values[i] || 0;
        chart.append(
          svg(
            "rect",
            { x: x0 + j * barW, y: y(v), width: barW - 2, height: Math.max(0, top + plotH - y(v)), class: `bar ${s.cls}` },
            svg("title", {}, `${cat} · ${s.name}: ${points(v)}`)
          )
        );
      });
      chart.append(svg("text", { x: left + i * slot + slot / 2, y: height - bottom + 16, class: "axis", "text-anchor": "middle" }, cat));
    });
    return el("div", { class: "chart-box" }, chart, series.length > 1 ? legend(series) : null);
  }

  /** Horizontal bars, one row per label and one bar per series; negative values extend left of zero. */
  function barChart({ rows, series, label = "chart", format = points, width = 460 }) {
    const barH = 16, gap = 10, right = 56, top = 6;
    const left = Math.min(150, 12 + 7 * Math.max(4, ...rows.map((r) => String(r.label).length)));
    const rowH = barH * series.length + gap;
    const height = top + rows.length * rowH + 6;
    const values = rows.flatMap((r) => r.values.map(Number));
    const lo = Math.min(0, ...values), hi = Math.max(0, ...values);
    const span = hi - lo || 1;
    const x = (v) => left + ((v - lo) / span) * (width - left - right);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, class: "chart", role: "img", "aria-label": label });
    chart.append(svg("line", { x1: x(0), x2: x(0), y1: 0, y2: height, class: "zero" }));
    rows.forEach((row, i) => {
      const y0 = top + i * rowH;
      chart.append(svg("text", { x: left - 8, y: y0 + (barH * series.length) / 2 + 4, class: "axis label", "text-anchor": "end" }, row.label));
      series.forEach((s, j) => {
        const v = Number(row.values[j]) || 0;
        const x1 = Math.min(x(0), x(v)), w = Math.abs(x(v) - x(0));
        chart.append(
          svg("rect", { x: x1, y: y0 + j * barH, width: Math.max(w, v ? 1 : 0), height: barH - 3, class: `bar ${s.cls}` },
            svg("title", {}, `${row.label} · ${s.name}: ${format(v)}`)),
          svg("text", { x: Math.max(x(0), x(v)) + 4, y: y0 + j * barH + barH - 5, class: "axis value" }, format(v))
        );
      });
    });
    return el("div", { class: "chart-box" }, chart, series.length > 1 ? legend(series) : null);
  }

  /** A data table from rows of cells; ``num`` lists the right-aligned columns. */
  function table(head, rows, num = []) {
    return el("div", { class: "table-wrap" }, el(
      "table",
      { class: "data" },
      el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: num.includes(i) ? "num" : null }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: num.includes(i) ? "num" : null }, c)))))
    ));
  }

  return { el, svg, $, uuid, keySetup, api, write, action, ApiError, describe, notice, points, decimal, money, minorDigits, parseMinor, when, dayStart, isoDay, columnChart, barChart, table };
})();
