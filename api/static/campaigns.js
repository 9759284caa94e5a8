/* Campaigns: the rules with a control group, and each one's lift: treated against control members on
   visits, revenue, retention and points cost, with 95% intervals (a forest plot: the dot is the lift,
   the whisker its interval, the line zero). */
"use strict";

(() => {
  const { el, svg, $ } = L;
  let key = null;
  let currency = "EUR";

  const say = (message, kind = "error") => L.notice($("notice"), message, kind);

  const guarded = (run) => async () => {
    try {
      await run();
    } catch (error) {
      say(L.describe(error));
    }
  };

  L.keySetup("campaigns", "Campaigns", (k) => {
    key = k;
    guarded(load)();
  });
  L.action($("show"), guarded(() => show()));

  async function load() {
    try {
      currency = (await L.api("/v1/program", { key })).currency || currency;
    } catch {
      // nothing published: the list below says so
    }
    const campaigns = await L.api("/v1/campaigns", { key });
    $("campaign").replaceChildren(...campaigns.map((c) => el("option", { value: c.rule }, `${c.rule} (${Math.round(c.holdout * 100)}% held out)`)));
    if (!campaigns.length) return say("The program in force has no rule with a holdout share.", "info");
    await show();
  }

  const formats = {
    visits: (v) => v.toFixed(2),
    revenue: (v) => L.money(Math.round(v), currency),
    retention: (v) => `${(v * 100).toFixed(1)} %`,
    points_cost: (v) => L.points(Math.round(v)),
  };
  const labels = { visits: "Visits", revenue: "Revenue", retention: "Came back", points_cost: "Points cost" };

  async function show() {
    const rule = $("campaign").value;
    if (!key || !rule) return;
    say("");
    const days = Number($("days").value) || 60;
    const lift = await L.api(`/v1/campaigns/${encodeURIComponent(rule)}/lift?days=${days}`, { key });
    $("lift-panel").hidden = false;
    $("lift-title").textContent = `Lift of ${lift.rule}`;
    $("lift-meta").textContent =
      `${L.points(lift.treated)} members got the effect, ${L.points(lift.control)} were held out ` +
      `(${Math.round(lift.holdout * 100)} %); exposed ${new Date(lift.since).toLocaleDateString()} to ` +
      `${new Date(lift.until).toLocaleDateString()}, each followed ${lift.horizon_days} days; ` +
      `${L.points(lift.points_given)} points given.`;
    if (!lift.enough) {
      $("lift-chart").replaceChildren(el("p", { class: "muted" }, "Too few members exposed to compare the groups yet (at least two in each)."));
      $("lift-table").replaceChildren();
      return;
    }
    $("lift-chart").replaceChildren(forest(lift.metrics));
    $("lift-table").replaceChildren(
      L.table(
        ["", "Treated", "Control", "Lift", "95% interval", "Relative"],
        lift.metrics.map((m) => {
          const f = formats[m.name];
          const relative = m.relative === null ? "" : `${m.relative >= 0 ? "+" : ""}${(m.relative * 100).toFixed(0)} %`;
          return [labels[m.name], f(m.treated), f(m.control), f(m.difference), `${f(m.low)} … ${f(m.high)}`, relative];
        }),
        [1, 2, 3, 4, 5]
      )
    );
  }

  /** One row per metric on its own scale: zero line, interval whisker, and the lift as a dot. */
  function forest(metrics) {
    const width = 640, rowH = 46, left = 120, right = 24, top = 8;
    const height = top + metrics.length * rowH;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, class: "chart forest", role: "img", "aria-label": "Lift with 95% intervals" });
    metrics.forEach((m, i) => {
      const y = top + i * rowH + rowH / 2;
      const lo = Math.min(0, m.low), hi = Math.max(0, m.high);
      const pad = (hi - lo) * 0.1 || 1;
      const x = (v) => left + ((v - lo + pad) / (hi - lo + 2 * pad)) * (width - left - right);
      const f = formats[m.name];
      const cls = m.low > 0 ? "up" : m.high < 0 ? "down" : "flat";
      chart.append(
        svg("text", { x: left - 10, y: y + 4, class: "axis label", "text-anchor": "end" }, labels[m.name]),
        svg("line", { x1: x(0), x2: x(0), y1: y - rowH / 2 + 4, y2: y + rowH / 2 - 4, class: "zero" }),
        svg("line", { x1: x(m.low), x2: x(m.high), y1: y, y2: y, class: `whisker ${cls}` }),
        svg("line", { x1: x(m.low), x2: x(m.low), y1: y - 6, y2: y + 6, class: `whisker ${cls}` }),
        svg("line", { x1: x(m.high), x2: x(m.high), y1: y - 6, y2: y + 6, class: `whisker ${cls}` }),
        svg("circle", { cx: x(m.difference), cy: y, r: 5, class: `lift ${cls}` }, svg("title", {}, `${labels[m.name]}: ${f(m.difference)} (${f(m.low)} … ${f(m.high)})`)),
        svg("text", { x: x(m.difference), y: y - 10, class: "axis value", "text-anchor": "middle" }, f(m.difference))
      );
    });
    return el("div", { class: "chart-box" }, chart);
  }
})();
