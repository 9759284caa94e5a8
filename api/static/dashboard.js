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
  L.action($("run-segments"), async () => {
    if (!key) return say("Enter an admin or marketer key first.");
    try {
      const run = await L.api("/v1/customers/segment-runs", { key, method: "POST" });
      say(`Segment run: ${L.points(run.members)} members, ${L.points(run.moves)} moved.`, "ok");
    } catch (error) {
      return say(L.describe(error));
    }
    await customers();
  });

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
      await draw(target, await L.api(path, { key }));
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
      customers(),
      panel("webhooks", "/v1/admin/webhooks", drawWebhooks),
    ]);
  }

  /** The delivery log: per endpoint, its latest deliveries with the last attempt's status and latency. */
  async function drawWebhooks(target, endpoints) {
    if (!endpoints.length) {
      return target.replaceChildren(el("p", { class: "muted" }, "No endpoints yet: loyalty webhooks create URL, or POST /v1/admin/webhooks."));
    }
    const blocks = await Promise.all(
      endpoints.map(async (e) => {
        const deliveries = await L.api(`/v1/admin/webhooks/${e.id}/deliveries?limit=10`, { key });
        const head = el(
          "h3",
          { class: "endpoint" },
          `${e.url} `,
          el("span", { class: `state ${e.state}` }, e.state),
          el("span", { class: "muted small" }, ` · ${e.event_types.length ? e.event_types.join(", ") : "every event"}`)
        );
        if (!deliveries.length) return [head, el("p", { class: "muted" }, "Nothing sent yet.")];
        const rows = deliveries.map((d) => [
          new Date(d.created_at).toLocaleString(),
          d.event_type,
          String(d.member_id),
          d.state === "dead" ? redeliverButton(d) : d.state,
          L.points(d.attempts),
          d.last_status === null ? d.last_error || "—" : String(d.last_status),
          d.last_latency_ms === null ? "—" : `${d.last_latency_ms} ms`,
        ]);
        return [head, L.table(["Queued", "Event", "Member", "State", "Attempts", "Last answer", "Latency"], rows, [4, 6])];
      })
    );
    target.replaceChildren(...blocks.flat());
  }

  function redeliverButton(d) {
    const button = el("button", { class: "btn small", type: "button", title: d.last_error || "" }, "dead · send again");
    L.action(button, async () => {
      try {
        await L.api(`/v1/admin/webhook-deliveries/${d.id}/redelivery`, { key, method: "POST" });
        say(`Delivery ${d.id} is queued again.`, "ok");
      } catch (error) {
        return say(L.describe(error));
      }
      await panel("webhooks", "/v1/admin/webhooks", drawWebhooks);
    });
    return button;
  }

  async function customers() {
    await Promise.all([
      panel("segments", "/v1/customers/segments", drawSegments),
      panel("value", "/v1/customers/value", drawValue),
      panel("segment-history", "/v1/customers/segment-runs", drawSegmentHistory),
      panel("moves", "/v1/customers/segment-moves", drawMoves),
      panel("at-risk", "/v1/customers/at-risk?limit=20", drawAtRisk),
    ]);
  }

  const segmentName = (name) => name || "none";

  function drawSegments(target, rows) {
    if (!rows.length) return target.replaceChildren(el("p", { class: "muted" }, "No members yet."));
    target.replaceChildren(
      L.barChart({
        label: "Members per segment",
        rows: rows.map((r) => ({ label: segmentName(r.segment), values: [r.members] })),
        series: [{ name: "Members", cls: "tier" }],
      })
    );
  }

  function drawValue(target, bands) {
    if (!bands.length) return target.replaceChildren(el("p", { class: "muted" }, "No segment run yet: run segments to see the value distribution."));
    target.replaceChildren(
      L.barChart({
        label: "Spend and predicted value per decile of members",
        rows: bands.map((b) => ({ label: `D${b.decile} · ${L.money(b.high, currency)}`, values: [b.spend, b.predicted_value] })),
        series: [{ name: "Spent", cls: "actual" }, { name: "Predicted, next 12 months", cls: "draft" }],
        format: (v) => L.money(v, currency),
      }),
      el("p", { class: "muted small" }, "Each band is a tenth of the purchasing members, by net spend in the window; its label is the band's highest spend.")
    );
  }

  function drawSegmentHistory(target, runs) {
    if (!runs.length) return target.replaceChildren(el("p", { class: "muted" }, "No segment run yet."));
    $("last-run").textContent = `Last run ${L.when(runs[runs.length - 1].at)}`;
    const names = [...new Set(runs.flatMap((r) => Object.keys(r.sizes)))].sort();
    const classes = ["issued", "redeemed", "expired", "actual", "draft", "tier"];
    const chart = L.columnChart({
        label: "Members per segment at each run",
        categories: runs.map((r) => new Date(r.at).toLocaleDateString(undefined, { day: "numeric", month: "short" })),
        series: names.map((name, i) => ({ name: segmentName(name), cls: classes[i % classes.length], values: runs.map((r) => r.sizes[name] || 0) })),
      });
    // A few runs make a narrow chart: draw it at its own width instead of stretching it.
    const drawing = chart.querySelector("svg");
    drawing.setAttribute("width", drawing.viewBox.baseVal.width);
    target.replaceChildren(chart);
  }

  function drawMoves(target, rows) {
    if (!rows.length) return target.replaceChildren(el("p", { class: "muted" }, "Nobody moved."));
    target.replaceChildren(L.table(["From", "To", "Members"], rows.map((r) => [segmentName(r.from_segment), segmentName(r.to_segment), L.points(r.members)]), [2]));
  }

  function drawAtRisk(target, rows) {
    if (!rows.length) return target.replaceChildren(el("p", { class: "muted" }, "Nobody is drifting away."));
    target.replaceChildren(
      L.table(
        ["Member", "RFM", "Last purchase", "Usual interval", "Overdue", "Spend"],
        rows.map((r) => [
          String(r.member_id),
          r.rfm,
          new Date(r.last_purchase_at).toLocaleDateString(),
          `${Math.round(r.interval_days)} d`,
          `${Math.round(-r.expected_visit_in_days)} d`,
          L.money(r.spend, currency),
        ]),
        [3, 4, 5]
      ),
      el("p", { class: "muted small" }, "Silent for more than twice their own usual interval; highest spend first. Export: loyalty report customers --at-risk --format csv.")
    );
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
