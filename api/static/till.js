/* The till: scan a card, post a basket, redeem, refund. Every write carries an Idempotency-Key made once
   per user action and reused when that same action is retried, so a double tap or a retry books once. */
"use strict";

(() => {
  const { el, $ } = L;
  const RECENT_KEY = "loyalty.till.recent";
  const RECENT_MAX = 10;
  let currency = "EUR"; // the program's, read once the key is known (GET /v1/till/program)

  let key = null;
  let card = null; // {number, member, balance}
  let basket = null; // {externalId, rows: [{sku, category, price, qty}], attempt}

  const keys = L.keySetup("cashier", "Cashier", (k) => {
    key = k;
    $("scan-input").focus();
    L.api("/v1/till/program", { key })
      .then((program) => {
        currency = program.currency;
        if (basket) renderBasket();
      })
      .catch(() => {}); // the first scan says what is wrong with the key
  });

  const say = (message, kind = "error") => L.notice($("notice"), message, kind);

  // --- writes: one Idempotency-Key per action, reused while the outcome is unknown ----------------------

  const unsettled = new Map();

  async function book(path, json) {
    const fingerprint = `${path} ${JSON.stringify(json)}`;
    const idempotencyKey = unsettled.get(fingerprint) || L.uuid();
    unsettled.set(fingerprint, idempotencyKey);
    try {
      const answer = await L.write(path, { key, json, idempotencyKey });
      unsettled.delete(fingerprint);
      return answer;
    } catch (error) {
      // A definite answer (a 4xx) is final; otherwise the next tap retries with the same key.
      if (error instanceof L.ApiError && error.status < 500 && error.status !== 409) unsettled.delete(fingerprint);
      throw error;
    }
  }

  function requireKey() {
    if (key) return true;
    say("Enter the cashier key first.");
    $("key-panel").hidden = false;
    return false;
  }

  // --- scanning ------------------------------------------------------------------------------------------

  async function lookup(code) {
    const found = await L.api("/v1/till/lookup", { method: "POST", key, json: { code } });
    card = { number: found.card.number, member: found.member, balance: found.balance, state: found.card.state };
    renderCard();
    return found;
  }

  $("scan-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("scan-button").click();
  });

  L.action($("scan-button"), async () => {
    const code = $("scan-input").value.trim();
    if (!code || !requireKey()) return;
    try {
      await lookup(code);
      say("");
      $("scan-input").value = "";
    } catch (error) {
      say(L.describe(error));
    }
  });

  $("clear-card").addEventListener("click", () => {
    card = null;
    renderCard();
    newBasket();
    $("result").hidden = true;
    $("scan-input").focus();
  });

  L.action($("activate-button"), async () => {
    try {
      await book("/v1/till/activations", { card: card.number });
      await lookup(card.number);
      say("Card activated.", "ok");
    } catch (error) {
      say(L.describe(error));
    }
  });

  // The camera, where the browser can read QR codes itself.
  let stream = null;
  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    $("camera-button").hidden = false;
    $("camera-button").addEventListener("click", startCamera);
    $("camera-stop").addEventListener("click", stopCamera);
  }

  async function startCamera() {
    try {
      const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      const video = $("camera-video");
      video.srcObject = stream;
      await video.play();
      $("camera").hidden = false;
      const tick = async () => {
        if (!stream) return;
        try {
          const codes = await detector.detect(video);
          if (codes.length) {
            $("scan-input").value = codes[0].rawValue;
            stopCamera();
            $("scan-button").click();
            return;
          }
        } catch (_) {
          /* a frame that could not be read; try the next one */
        }
        setTimeout(tick, 200);
      };
      tick();
    } catch (error) {
      say(`The camera is not available: ${error.message}`);
      stopCamera();
    }
  }

  function stopCamera() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    $("camera").hidden = true;
  }

  // --- the member -----------------------------------------------------------------------------------------

  function renderCard() {
    $("member-panel").hidden = !card;
    updatePostButton();
    if (!card) return;
    $("card-number").textContent = card.number.replace(/(\d{4})(?=\d)/g, "$1 ");
    const blank = !card.member;
    $("blank-card").hidden = !blank;
    $("member-figures").hidden = blank;
    $("member-id").textContent = blank ? "—" : `#${card.member.id}`;
    const b = card.balance;
    const tier = b && b.tier ? b.tier.tier : card.member && card.member.tier;
    $("member-tier").textContent = tier || "";
    $("member-tier").hidden = !tier;
    if (blank) return;
    setFigures(b.available, b.pending, b.debt);
    const t = b.tier;
    $("tier-line").textContent = t
      ? t.next_tier
        ? `${t.tier}: ${t.qualify_on === "spend" ? L.money(t.missing, currency) : `${L.points(t.missing)} ${t.qualify_on}`} to ${t.next_tier}`
        : `${t.tier}: top tier`
      : "";
    $("stamp-cards").replaceChildren(
      ...b.stamp_cards.map((s) =>
        el(
          "div",
          { class: "stamps", title: `${s.card}: ${s.stamps} of ${s.reward_at || "?"}` },
          el("span", { class: "stamps-name" }, s.card),
          ...Array.from({ length: s.reward_at || s.stamps }, (_, i) => el("i", { class: i < s.stamps ? "stamp on" : "stamp" })),
          s.reward ? el("span", { class: "muted small" }, ` → ${s.reward}`) : null
        )
      )
    );
    const vouchers = new Map();
    for (const v of b.vouchers) vouchers.set(v.reward_code, (vouchers.get(v.reward_code) || 0) + 1);
    $("vouchers").replaceChildren(
      ...[...vouchers].map(([code, count]) =>
        el("div", { class: "voucher" }, el("span", {}, `Voucher: ${code}`, count > 1 ? el("strong", {}, ` × ${count}`) : null), redeemButton(code, "Use", true))
      )
    );
    $("rewards").replaceChildren(
      ...b.rewards.map((r) =>
        el(
          "li",
          { class: r.affordable ? "reward ok" : "reward" },
          el("span", { class: "grow" }, el("strong", {}, r.name), el("span", { class: "muted" }, ` ${L.points(r.cost)} pts`)),
          r.affordable ? redeemButton(r.code, "Redeem", true) : el("span", { class: "muted small" }, `${L.points(r.missing)} more`)
        )
      )
    );
  }

  function setFigures(available, pending, debt) {
    $("bal-available").textContent = L.points(available);
    $("bal-pending").textContent = L.points(pending);
    $("bal-debt").textContent = L.points(debt);
    $("bal-debt-box").hidden = !debt;
  }

  function redeemButton(code, label, enabled) {
    const button = el("button", { class: "btn primary", type: "button", disabled: !enabled, dataset: { reward: code } }, label);
    L.action(button, async () => {
      try {
        const answer = await book("/v1/till/redemptions", { card: card.number, reward: code });
        say(`Redeemed ${code}: ${L.points(answer.redemption.cost)} points. ${L.points(answer.balance.available)} left.`, "ok");
        await lookup(card.number);
      } catch (error) {
        say(L.describe(error));
      }
    });
    return button;
  }

  // --- the basket -------------------------------------------------------------------------------------------

  function newBasket() {
    basket = { externalId: `web-${L.uuid()}`, rows: [], attempt: null };
    addRow();
  }

  function addRow(values = {}) {
    basket.rows.push({ sku: "", category: "", price: "", qty: "1", ...values });
    renderBasket();
  }

  function renderBasket() {
    const body = $("basket-rows");
    body.replaceChildren(
      ...basket.rows.map((row, i) => {
        const input = (field, attrs) =>
          el("input", {
            ...attrs,
            value: row[field],
            "aria-label": `${field} of line ${i + 1}`,
            dataset: { field, line: String(i) },
            oninput: (e) => {
              row[field] = e.target.value;
              updateTotal();
            },
          });
        return el(
          "tr",
          {},
          el("td", {}, input("sku", { placeholder: "SKU", class: "sku" })),
          el("td", {}, input("category", { placeholder: "category", list: "categories" })),
          el("td", { class: "num" }, input("price", { placeholder: "0.00", inputmode: "decimal", class: "price" })),
          el("td", { class: "num" }, input("qty", { inputmode: "numeric", class: "qty" })),
          el("td", {}, el("button", { class: "btn ghost small", type: "button", "aria-label": `remove line ${i + 1}`, onclick: () => removeRow(i) }, "✕"))
        );
      })
    );
    updateTotal();
  }

  function removeRow(i) {
    basket.rows.splice(i, 1);
    if (!basket.rows.length) addRow();
    else renderBasket();
  }

  function items() {
    const out = [];
    for (const row of basket.rows) {
      if (!row.sku.trim() && !row.price.trim()) continue;
      const price = L.parseMinor(row.price, currency);
      const qty = Number(row.qty);
      if (!row.sku.trim() || price === null || !Number.isInteger(qty) || qty < 1) return null;
      out.push({ sku: row.sku.trim(), category: row.category.trim(), unit_price: price, quantity: qty });
    }
    return out.length ? out : null;
  }

  function updateTotal() {
    const list = items();
    $("basket-total").textContent = list ? L.money(list.reduce((sum, i) => sum + i.unit_price * i.quantity, 0), currency) : "—";
    updatePostButton();
  }

  function updatePostButton() {
    const ready = Boolean(card && card.member !== undefined && items());
    const button = $("post-basket");
    if (ready) delete button.dataset.lock;
    else button.dataset.lock = "1";
    if (!button.dataset.busy) button.disabled = !ready;
  }

  $("add-item").addEventListener("click", () => {
    addRow();
    const skus = document.querySelectorAll("#basket-rows input.sku");
    skus[skus.length - 1].focus();
  });

  L.action($("post-basket"), async () => {
    const list = items();
    if (!list || !card || !requireKey()) return;
    const fingerprint = JSON.stringify([card.number, list]);
    // Pressing again after an unknown outcome is the same action: same body, same key.
    if (!basket.attempt || basket.attempt.fingerprint !== fingerprint) {
      basket.attempt = {
        fingerprint,
        body: { card: card.number, external_id: basket.externalId, occurred_at: new Date().toISOString(), items: list },
      };
    }
    try {
      const answer = await book("/v1/till/transactions", basket.attempt.body);
      showResult(answer, list);
      remember(answer.transaction, list);
      newBasket();
      say("");
      lookup(card.number).catch(() => {});
    } catch (error) {
      if (error instanceof L.ApiError && error.status < 500 && error.status !== 409) basket.attempt = null;
      say(L.describe(error));
    }
  });

  function showResult(answer, list) {
    const tx = answer.transaction;
    const ev = tx.evaluation;
    $("result").hidden = false;
    $("result-points").textContent = L.points(tx.points);
    $("result-meta").textContent = `Transaction #${tx.transaction_id} · ${L.money(tx.amount, currency)}${tx.replayed ? " · already booked" : ""}`;
    $("result-balance").textContent = `New balance: ${L.points(answer.balance.available)} available, ${L.points(answer.balance.pending)} pending`;
    setFigures(answer.balance.available, answer.balance.pending, answer.balance.debt);
    const rows = ev.explanation.map((r) =>
      el(
        "tr",
        { class: r.matched ? "matched" : "unmatched" },
        el("td", {}, el("strong", {}, r.rule)),
        el("td", {}, r.kind),
        el("td", { class: "num" }, String(r.applications)),
        el("td", { class: "num" }, r.matched ? L.decimal(r.points) : "—"),
        el("td", { class: "muted small code" }, r.matched ? "matched" : r.decided_by || "not matched")
      )
    );
    if (ev.tier_multiplier && ev.tier_multiplier !== "1") {
      rows.push(el("tr", {}, el("td", {}, `tier ${ev.tier}`), el("td", {}, `× ${ev.tier_multiplier}`), el("td"), el("td", { class: "num" }, L.decimal(ev.tier_points)), el("td")));
    }
    rows.push(el("tr", { class: "sum" }, el("td", {}, "Total"), el("td", {}, "rounded"), el("td"), el("td", { class: "num" }, String(ev.total)), el("td", { class: "muted small" }, `exact ${L.decimal(ev.exact)}`)));
    $("result-rules").replaceChildren(...rows);
    if (ev.stamps && Object.keys(ev.stamps).length) {
      $("result-meta").textContent += ` · stamps ${Object.entries(ev.stamps).map(([c, n]) => `${c} +${n}`).join(", ")}`;
    }
  }

  // --- recent purchases and refunds ---------------------------------------------------------------------------

  function recent() {
    try {
      return JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    } catch (_) {
      return [];
    }
  }

  function saveRecent(list) {
    localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, RECENT_MAX)));
    renderRecent();
  }

  function remember(tx, list) {
    const others = recent().filter((r) => r.id !== tx.transaction_id);
    saveRecent([{ id: tx.transaction_id, at: tx.occurred_at, card: card.number, amount: tx.amount, points: tx.points, items: list, refunded: {} }, ...others]);
  }

  function renderRecent() {
    const list = recent();
    $("recent-empty").hidden = list.length > 0;
    $("recent").replaceChildren(...list.map(recentEntry));
  }

  function recentEntry(tx) {
    const lines = el("div", { class: "refund-lines", hidden: true });
    const quantities = tx.items.map((item, i) => {
      const left = item.quantity - (tx.refunded[i] || 0);
      const input = el("input", { type: "number", min: "0", max: String(left), value: "0", class: "qty", "aria-label": `return quantity of ${item.sku}`, disabled: left <= 0 });
      lines.append(
        el("label", { class: "refund-line" }, el("span", { class: "grow" }, `${item.sku} × ${item.quantity}`, left < item.quantity ? el("span", { class: "muted small" }, ` (${item.quantity - left} returned)`) : null), input)
      );
      return input;
    });
    const go = el("button", { class: "btn danger", type: "button" }, "Refund selected");
    lines.append(go);
    L.action(go, async () => {
      const chosen = quantities.map((q, line) => ({ line, quantity: Number(q.value) })).filter((l) => l.quantity > 0);
      if (!chosen.length) return say("Choose the quantities the customer returns.");
      await refund(tx, chosen);
    });
    const toggle = el("button", { class: "btn", type: "button", onclick: () => (lines.hidden = !lines.hidden) }, "Refund…");
    return el(
      "li",
      { class: "recent-item", dataset: { transaction: String(tx.id) } },
      el("div", { class: "row" }, el("span", { class: "grow" }, el("strong", {}, `#${tx.id}`), ` ${L.when(tx.at)} · ${L.money(tx.amount, currency)} · ${L.points(tx.points)} pts`), toggle),
      lines
    );
  }

  async function refund(tx, lines) {
    try {
      const answer = await book(`/v1/till/transactions/${tx.id}/refunds`, lines ? { lines } : {});
      const r = answer.refund;
      say(`Refunded ${L.money(r.amount, currency)}: ${L.points(r.points)} points reversed${r.debt ? `, ${L.points(r.debt)} owed` : ""}.`, "ok");
      if (tx.items) {
        const list = recent();
        const mine = list.find((x) => x.id === tx.id);
        if (mine) for (const [line, qty] of Object.entries(r.lines)) mine.refunded[line] = (mine.refunded[line] || 0) + qty;
        saveRecent(list);
      }
      if (card) await lookup(card.number);
    } catch (error) {
      say(L.describe(error));
    }
  }

  $("refund-by-id").addEventListener("submit", (event) => {
    event.preventDefault();
    $("refund-id-button").click();
  });
  L.action($("refund-id-button"), async () => {
    const id = Number($("refund-id").value);
    if (!Number.isInteger(id) || id < 1 || !requireKey()) return say("Type the transaction number from the receipt.");
    await refund({ id }, null);
    $("refund-id").value = "";
  });

  document.body.append(
    el("datalist", { id: "categories" }, ["coffee", "bakery", "organic", "carwash", "tobacco", "giftcard"].map((c) => el("option", { value: c })))
  );
  newBasket();
  renderRecent();
  renderCard();
  void keys;
})();
