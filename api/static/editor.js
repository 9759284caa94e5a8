/* The marketer's rules editor: a textarea with a line-number gutter, problems shown at their line and
   column as the marketer types (debounced validation through the API), drafts, simulation, backtest
   and publishing. */
"use strict";

(() => {
  const { el, $ } = L;
  const VALIDATE_DELAY_MS = 350;
  const LINE_PX = 20;

  let key = null;
  let draft = null; // the last saved draft: {id, number, text}
  let problems = [];
  let validation = 0; // sequence number: a slow answer to an older text is ignored
  let timer = null;

  const area = $("document");
  const say = (message, kind = "error") => L.notice($("notice"), message, kind);

  L.keySetup("marketer", "Marketer", (k) => {
    key = k;
    loadVersions(true).catch((error) => say(L.describe(error)));
  });

  // --- the editor surface -----------------------------------------------------------------------------------

  function lines() {
    return area.value.split("\n");
  }

  function render() {
    const text = lines();
    const byLine = new Map();
    for (const p of problems) if (p.line) byLine.set(p.line, [...(byLine.get(p.line) || []), p]);
    $("gutter").replaceChildren(
      ...text.map((_, i) => {
        const found = byLine.get(i + 1);
        return el("span", { class: found ? "err" : null, title: found ? found.map((p) => p.message).join("\n") : null, dataset: { line: String(i + 1) } }, String(i + 1));
      })
    );
    $("backdrop").replaceChildren(
      ...text.map((line, i) => {
        const found = byLine.get(i + 1);
        if (!found) return el("span", { class: "line" }, line || " ");
        // Underline from the reported column to the end of the name or value that starts there.
        const start = Math.max(0, Math.min(line.length, (found[0].column || 1) - 1));
        const rest = line.slice(start);
        const length = Math.max(1, (/^[\w.\-"']+/.exec(rest) || [""])[0].length);
        return el(
          "span",
          { class: "line err", dataset: { line: String(i + 1) } },
          line.slice(0, start),
          el("mark", { dataset: { line: String(i + 1), column: String(start + 1) } }, line.slice(start, start + length) || " "),
          line.slice(start + length) || " "
        );
      })
    );
    syncScroll();
  }

  function syncScroll() {
    $("gutter").scrollTop = area.scrollTop;
    $("backdrop").scrollTop = area.scrollTop;
    $("backdrop").scrollLeft = area.scrollLeft;
  }

  function showCursor() {
    const before = area.value.slice(0, area.selectionStart).split("\n");
    $("cursor").textContent = `Ln ${before.length}, Col ${before[before.length - 1].length + 1}`;
  }

  function goTo(line, column) {
    const text = lines();
    let offset = 0;
    for (let i = 0; i < Math.min(line - 1, text.length); i++) offset += text[i].length + 1;
    offset += Math.max(0, (column || 1) - 1);
    area.focus();
    area.setSelectionRange(offset, offset);
    area.scrollTop = Math.max(0, (line - 5) * LINE_PX);
    syncScroll();
    showCursor();
  }

  area.addEventListener("scroll", syncScroll);
  area.addEventListener("keyup", showCursor);
  area.addEventListener("click", showCursor);
  area.addEventListener("keydown", (event) => {
    // YAML is indented with spaces: Tab inserts two (Shift+Tab still leaves the editor).
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey) {
      event.preventDefault();
      area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
      changed();
    }
  });
  area.addEventListener("input", changed);

  function changed() {
    render();
    updateDraftState();
    clearTimeout(timer);
    setStatus("busy", "Checking…");
    timer = setTimeout(validate, VALIDATE_DELAY_MS);
  }

  function setStatus(kind, text) {
    const node = $("status");
    node.className = `status ${kind}`;
    node.textContent = text;
  }

  function setProblems(list) {
    problems = list;
    render();
    $("problems").replaceChildren(
      ...list.map((p) =>
        el(
          "li",
          { onclick: () => p.line && goTo(p.line, p.column), dataset: { line: String(p.line || ""), column: String(p.column || "") } },
          el("span", { class: "where" }, p.line ? `Line ${p.line}, column ${p.column || 1}` : "Document"),
          p.path ? el("span", { class: "muted code" }, `${p.path}: `) : null,
          p.message,
          p.hint ? el("span", { class: "hint" }, p.hint) : null
        )
      )
    );
  }

  // --- checking and saving ---------------------------------------------------------------------------------

  async function validate() {
    if (!key) return;
    const mine = ++validation;
    const text = area.value;
    try {
      const summary = await L.api("/v1/program/validate", { method: "POST", key, text, contentType: "application/yaml" });
      if (mine !== validation) return;
      setProblems([]);
      setStatus("ok", `✓ Valid · ${summary.rules.length} rules · ${summary.rewards.length} rewards · ${summary.tiers.length} tiers`);
    } catch (error) {
      if (mine !== validation) return;
      if (error instanceof L.ApiError && error.status === 422 && error.problem.errors) {
        setProblems(error.problem.errors);
        const n = error.problem.errors.length;
        setStatus("bad", `✗ ${n} problem${n === 1 ? "" : "s"}`);
      } else {
        setStatus("bad", "Could not check");
        say(L.describe(error));
      }
    }
  }

  function updateDraftState() {
    $("draft-state").textContent = draft ? (draft.text === area.value ? `Draft v${draft.number} saved` : `Draft v${draft.number} · unsaved changes`) : "Not saved";
    $("publish").textContent = draft && draft.text === area.value ? `Publish draft v${draft.number}…` : "Publish draft…";
  }

  async function loadVersions(openNewest) {
    const versions = await L.api("/v1/program/versions", { key });
    versions.sort((a, b) => b.number - a.number);
    const select = $("version-select");
    select.replaceChildren(
      ...versions.map((v) =>
        el("option", { value: String(v.id) }, `v${v.number} · ${v.status}${v.valid_from ? ` from ${new Date(v.valid_from).toLocaleDateString()}` : ""}`)
      )
    );
    select.onchange = () => {
      const v = versions.find((x) => String(x.id) === select.value);
      if (v) open(v);
    };
    if (openNewest && versions.length) open(versions[0]);
  }

  function open(version) {
    area.value = version.document;
    draft = version.status === "draft" ? { id: version.id, number: version.number, text: version.document } : null;
    $("version-select").value = String(version.id);
    area.scrollTop = 0;
    changed();
  }

  async function saveDraft() {
    const text = area.value;
    try {
      const v = await L.api("/v1/program/drafts", { method: "POST", key, text, contentType: "application/yaml" });
      draft = { id: v.id, number: v.number, text };
      updateDraftState();
      await loadVersions(false);
      $("version-select").value = String(v.id);
      return draft;
    } catch (error) {
      if (error instanceof L.ApiError && error.status === 422 && error.problem.errors) {
        setProblems(error.problem.errors);
        setStatus("bad", `✗ ${error.problem.errors.length} problem(s): fix them to save`);
      }
      throw error;
    }
  }

  /** The draft holding exactly the editor's text, saved now if it changed. */
  async function currentDraft() {
    if (draft && draft.text === area.value) return draft;
    return saveDraft();
  }

  L.action($("save-draft"), async () => {
    if (!key) return say("Enter the marketer key first.");
    try {
      const d = await saveDraft();
      say(`Draft v${d.number} saved.`, "ok");
    } catch (error) {
      say(L.describe(error));
    }
  });

  // --- simulation -------------------------------------------------------------------------------------------

  $("basket").value = JSON.stringify(
    {
      occurred_at: new Date().toISOString(),
      items: [
        { sku: "LATTE", category: "coffee", unit_price: 350, quantity: 2 },
        { sku: "APPLE", category: "organic", unit_price: 120, quantity: 3 },
        { sku: "WASH", category: "carwash", unit_price: 900, quantity: 1 },
      ],
      member: { visits: 3 },
    },
    null,
    2
  );

  L.action($("simulate"), async () => {
    let basket;
    try {
      basket = JSON.parse($("basket").value);
    } catch (error) {
      return say(`The basket is not valid JSON: ${error.message}`);
    }
    try {
      const d = await currentDraft();
      const result = await L.api(`/v1/program/versions/${d.id}/simulations`, { method: "POST", key, json: { basket } });
      say("");
      $("simulation").replaceChildren(
        el("p", {}, el("strong", { class: "points-earned" }, `${L.points(result.total)} points`), el("span", { class: "muted" }, ` exact ${L.decimal(result.exact)} · tier ${result.tier || "—"} × ${result.tier_multiplier}`)),
        L.table(
          ["Rule", "Kind", "Applied", "Points", "Why"],
          result.explanation.map((r) => [r.rule, r.kind, String(r.applications), r.matched ? L.decimal(r.points) : "—", el("span", { class: "muted small code" }, r.matched ? "matched" : r.decided_by || "not matched")]),
          [2, 3]
        ),
        Object.keys(result.stamps || {}).length ? el("p", { class: "muted" }, `Stamps: ${Object.entries(result.stamps).map(([c, n]) => `${c} +${n}`).join(", ")}`) : null
      );
    } catch (error) {
      say(L.describe(error));
    }
  });

  // --- backtest ---------------------------------------------------------------------------------------------

  const today = new Date();
  $("bt-until").value = L.isoDay(today);
  $("bt-since").value = L.isoDay(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 30));

  L.action($("backtest"), async () => {
    if (!$("bt-since").value || !$("bt-until").value) return say("Choose the period to replay.");
    const since = L.dayStart($("bt-since").value);
    const until = new Date(new Date(L.dayStart($("bt-until").value)).getTime() + 86400000).toISOString();
    try {
      const d = await currentDraft();
      const report = await L.api(`/v1/program/versions/${d.id}/backtests`, { method: "POST", key, json: { since, until } });
      say("");
      renderBacktest(report);
    } catch (error) {
      say(L.describe(error));
    }
  });

  function renderBacktest(r) {
    const share = r.difference_share === null ? "" : ` (${r.difference_share >= 0 ? "+" : ""}${(r.difference_share * 100).toFixed(1)}%)`;
    const diffClass = (v) => (Number(v) > 0 ? "diff-pos" : Number(v) < 0 ? "diff-neg" : null);
    const figure = (label, value, cls) => el("div", { class: "figure" }, el("span", { class: "label" }, label), el("span", { class: `value ${cls || ""}` }, value));
    $("backtest-result").replaceChildren(
      el(
        "div",
        { class: "summary" },
        figure("Members", L.points(r.members)),
        figure("Purchases", L.points(r.transactions)),
        figure("Booked", L.points(r.actual_points)),
        figure("Draft", L.points(r.draft_points)),
        figure("Difference", `${r.difference >= 0 ? "+" : ""}${L.points(r.difference)}${share}`, diffClass(r.difference))
      ),
      r.rules.length
        ? L.barChart({
            label: "Points per rule: booked and under the draft",
            rows: r.rules.map((x) => ({ label: x.rule, values: [Number(x.actual), Number(x.draft)] })),
            series: [
              { name: "Booked", cls: "actual" },
              { name: "Draft", cls: "draft" },
            ],
            format: (v) => L.decimal(v.toFixed(2)),
            width: 640,
          })
        : el("p", { class: "muted" }, "No purchases in this period."),
      r.rules.length
        ? L.table(
            ["Rule", "Booked ×", "Booked", "Draft ×", "Draft", "Difference"],
            r.rules.map((x) => [x.rule, String(x.actual_applications), L.decimal(x.actual), String(x.draft_applications), L.decimal(x.draft), el("span", { class: diffClass(x.difference) }, `${Number(x.difference) > 0 ? "+" : ""}${L.decimal(x.difference)}`)]),
            [1, 2, 3, 4, 5]
          )
        : null,
      el("p", { class: "muted small" }, `${L.points(r.members_changed)} of ${L.points(r.members)} members change; ${L.points(r.tier_changes)} change tier. Points per rule are before the tier multiplier and rounding.`)
    );
  }

  // --- publishing -------------------------------------------------------------------------------------------

  const soon = new Date(Date.now() + 3600000);
  soon.setMinutes(0, 0, 0);
  $("valid-from").value = `${L.isoDay(soon)}T${String(soon.getHours()).padStart(2, "0")}:00`;

  $("publish").addEventListener("click", () => {
    if (!$("valid-from").value) return say("Choose when the new version takes effect.");
    if (problems.length) return say("Fix the problems before publishing.");
    const from = new Date($("valid-from").value);
    $("publish-question").textContent = `Publish ${draft && draft.text === area.value ? `draft v${draft.number}` : "this document"} from ${from.toLocaleString()}? Published versions never change.`;
    $("publish-confirm").hidden = false;
  });
  $("publish-no").addEventListener("click", () => ($("publish-confirm").hidden = true));
  L.action($("publish-yes"), async () => {
    try {
      const d = await currentDraft();
      const v = await L.api(`/v1/program/versions/${d.id}/publications`, { method: "POST", key, json: { valid_from: new Date($("valid-from").value).toISOString() } });
      $("publish-confirm").hidden = true;
      draft = null;
      await loadVersions(false);
      $("version-select").value = String(v.id);
      updateDraftState();
      say(`Version v${v.number} is published from ${new Date(v.valid_from).toLocaleString()}.`, "ok");
    } catch (error) {
      say(L.describe(error));
    }
  });

  render();
  updateDraftState();
})();
