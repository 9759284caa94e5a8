/* The dashboard: monthly movements, liability, points per rule, tiers and partner settlement, drawn as
   inline SVG. Admin-only figures say so when the key is a marketer's. */
"use strict";

(() => {
  const { el, $ } = L;
  let key = null;
  let currency = "EUR"; // the program in force's (GET /v1/program), for the sales column

  const say = (message, kind = "error") => L.notice($("notice"), message, kind);

  const today = new Date();
  $("until").value = L.isoDay(today);
  $("since").value = L.isoDay(new Date(today.getFullYear(), today.getMonth() - 3, today.getDate()));

  L.keySetup("dashboard", "Dashboard", (k) => {
    key = k;
    refresh();
  });

  L.action($("refresh"), () => refresh());

  function period() {
    const since = L.dayStart($("since").value);
    const until = new Date(new Date(L.dayStart($("until").value)).getTime() + 86400000).toISOString();
    return new URLSearchParams({ since, until }).toString();
  }

  /** Fill one panel; a 403 says which key it needs instead of failing the page. */
  async function panel(id, path, draw) {
    const target = $(id);
    target.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    try {
      draw(target, await L.api(path, { key }));
      target.dataset.loaded = "1";
    } catch (error) {
      if (error instanceof L.ApiError && error.status === 403) {
        target.replaceChildren(el("div", { class: "needs-admin" }, "Needs an admin key."));
      } else {
        target.replaceChildren(el("p", { class: "notice error" }, L.describe(error)));
      }
    }
  }

  async function refresh() {
    if (!key) return say("Enter an admin or marketer key first.");
    if (!$("since").value || !$("until").value) return say("Choose a period.");
    say("");
    const q = period();
    try {
      currency = (await L.api("/v1/program", { key })).currency || currency;
    } catch {
      // nothing published yet: the panels say what is missing
    }
    await Promise.all([
      panel("liability", "/v1/admin/reports/liability", drawLiability),
      panel("tiers", "/v1/dashboard/tiers", drawTiers),
      panel("monthly", "/v1/admin/reports/monthly?months=12", drawMonthly),
      panel("rules", `/v1/program/rule-points?${q}`, drawRules),
      panel("partners", `/v1/admin/reports/partners?${q}`, drawPartners),
    ]);
  }

  function figure(label, value) {
    return el("div", { class: "figure" }, el("span", { class: "label" }, label), el("span", { class: "value" }, L.points(value)));
  }

  function drawLiability(target, l) {
    target.replaceChildren(figure("Net points owed", l.net), figure("Available", l.available), figure("Pending", l.pending), figure("Members' debt", l.debt), figure("Members", l.members));
  }

  function drawTiers(target, rows) {
    if (!rows.length) return target.replaceChildren(el("p", { class: "muted" }, "No members yet."));
    target.replaceChildren(
      L.barChart({
        label: "Members per tier",
        rows: rows.map((r) => ({ label: r.tier || "members", values: [r.members] })),
        series: [{ name: "Members", cls: "tier" }],
      })
    );
  }

  function drawMonthly(target, months) {
    const label = (m) => {
      const [y, n] = m.split("-").map(Number);
      return new Date(y, n - 1, 1).toLocaleDateString(undefined, { month: "short", year: "2-digit" });
    };
    target.replaceChildren(
      L.columnChart({
        label: "Points issued, redeemed and expired per month",
        categories: months.map((m) => label(m.month)),
        series: [
          { name: "Issued", cls: "issued", values: months.map((m) => m.issued - m.reversed) },
          { name: "Redeemed", cls: "redeemed", values: months.map((m) => m.redeemed) },
          { name: "Expired", cls: "expired", values: months.map((m) => m.expired) },
        ],
      }),
      L.table(
        ["Month", "Issued", "Reversed", "Redeemed", "Expired", "Adjusted"],
        months.slice(-6).reverse().map((m) => [m.month, L.points(m.issued), L.points(m.reversed), L.points(m.redeemed), L.points(m.expired), L.points(m.adjusted)]),
        [1, 2, 3, 4, 5]
      )
    );
  }

  function drawRules(target, rows) {
    const earning = rows.filter((r) => Number(r.points) !== 0 || r.applications);
    if (!earning.length) return target.replaceChildren(el("p", { class: "muted" }, "No points earned in this period."));
    target.replaceChildren(
      L.barChart({
        label: "Points per rule",
        rows: earning.map((r) => ({ label: r.rule, values: [Number(r.points)] })),
        series: [{ name: "Points", cls: "issued" }],
        format: (v) => L.points(Math.round(v)),
      }),
      el("p", { class: "muted small" }, "Before the tier multiplier and rounding.")
    );
  }

  function drawPartners(target, rows) {
    if (!rows.length) return target.replaceChildren(el("p", { class: "muted" }, "No partners yet."));
    target.replaceChildren(
      L.table(
        ["Partner", "Purchases", "Sales", "Points issued", "Points redeemed"],
        rows.map((r) => [r.partner, L.points(r.transactions), L.money(r.spend, currency), L.points(r.points_issued), L.points(r.points_redeemed)]),
        [1, 2, 3, 4]
      )
    );
  }
})();
