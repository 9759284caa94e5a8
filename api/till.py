"""Till endpoints for a cashier key bound to one outlet: scan, activate, post, refund, redeem, cancel."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import JSONBody

from api import metrics, schemas
from api.auth import Principal, requires
from api.context import Caller, CardKeys, Db, Now
from api.idempotency import IdempotencyKey, IdempotentAnswer, idempotent
from loyalty.admin.access import Answer
from loyalty.cards.secrets import Secrets
from loyalty.members import lookup, membership
from loyalty.points import balances, posting, redemptions, refunds, transactions
from loyalty.programs import versions
from loyalty.storage.db import Database
from rules.context import Item
from rules.money import minor_digits


async def _card(db: Database, secrets: Secrets, principal: Principal, code: str, now: datetime) -> str:
    """The printed number behind what the till scanned or typed."""
    ref = lookup.parse_code(code, secrets, principal.tenant_id, now=now)
    return await lookup.number_of(db, principal.tenant_id, ref)


def _key_id(answer: Answer) -> str:
    """A till write's natural key when the till sends none: its Idempotency-Key, per API key (hashed:
    a key may be longer than the column)."""
    digest = hashlib.sha256(f"{answer.api_key_id}:{answer.key}".encode()).hexdigest()[:40]
    return f"idem:{digest}"


class TillController(Controller):
    path = "/v1/till"
    tags = ["till"]
    guards = [requires("cashier")]
    #: Answers carry a member's balance: never cached by a browser or proxy.
    cache_control = CacheControlHeader(no_store=True)

    @get("/program", operation_id="tillProgram")
    async def program(self, principal: Caller, db: Db, now: Now) -> dict[str, Any]:
        """The program in force: its name, and the currency the till shows and takes prices in
        (amounts in the API are integer minor units: cents for EUR, yen for JPY)."""
        priced = await versions.current(db, principal.tenant_id, now)
        document = priced.program.document
        return {
            "program": document.program,
            "currency": document.currency,
            "minor_digits": minor_digits(document.currency),
        }

    @post("/lookup", operation_id="tillLookup", status_code=200)
    async def lookup_card(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        secrets: CardKeys,
        data: JSONBody[schemas.LookupRequest],
    ) -> balances.Scan:
        """Scan or type a card: the card, its member, balance, tier, stamp cards and rewards in reach."""
        ref = lookup.parse_code(data.code, secrets, principal.tenant_id, now=now)
        return await balances.scan(db, principal.tenant_id, ref, now=now)

    @post("/activations", operation_id="tillActivateCard", **idempotent(by_nature=True))
    async def activate(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        secrets: CardKeys,
        idempotency_key: IdempotencyKey,
        data: JSONBody[schemas.ActivateRequest],
    ) -> schemas.ActivationAnswer:
        """Bind a blank card to a new member (its first use)."""
        number = await _card(db, secrets, principal, data.card, now)
        member = await membership.resolve_card(db, principal.tenant_id, number, now=now)
        return schemas.ActivationAnswer(number, member)

    @post("/transactions", operation_id="tillPostTransaction", **idempotent(schemas.PostingAnswer.of))
    async def post_transaction(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        secrets: CardKeys,
        answer: IdempotentAnswer,
        idempotency_key: IdempotencyKey,
        data: JSONBody[schemas.PostTransactionRequest],
    ) -> schemas.PostingAnswer:
        """Post a basket: points with the rule-by-rule explanation, and the member's new balance."""
        assert principal.outlet_id is not None
        ref = lookup.parse_code(data.card, secrets, principal.tenant_id, now=now)
        items = tuple(Item(i.sku, i.unit_price, i.quantity, i.category, tuple(i.tags)) for i in data.items)
        receipt = posting.Receipt(
            principal.outlet_id,
            data.external_id,
            data.occurred_at,
            items,
            card_id=ref.card_id,
            card_number=ref.number,
            channel=data.channel,
        )
        posted = await posting.post(db, principal.tenant_id, receipt, now=now, answer=answer)
        metrics.booked("posting", replayed=posted.posting.replayed)
        return schemas.PostingAnswer.of(posted)

    @post(
        "/transactions/{transaction_id:int}/refunds",
        operation_id="tillRefund",
        **idempotent(schemas.RefundAnswer.of),
    )
    async def refund(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        answer: IdempotentAnswer,
        idempotency_key: IdempotencyKey,
        transaction_id: schemas.PathId,
        data: JSONBody[schemas.RefundRequest],
    ) -> schemas.RefundAnswer:
        """Return some items of a purchase made at this outlet (or all of them)."""
        await transactions.transaction_at_outlet(db, principal.tenant_id, transaction_id, principal.outlet_id)
        lines = {line.line: line.quantity for line in data.lines} if data.lines is not None else None
        refunded = await refunds.refund_with_member(
            db,
            principal.tenant_id,
            transaction_id,
            now=now,
            lines=lines,
            external_id=data.external_id or _key_id(answer),
            answer=answer,
        )
        metrics.booked("refund", replayed=refunded.refund.replayed)
        return schemas.RefundAnswer.of(refunded)

    @post("/redemptions", operation_id="tillRedeem", **idempotent(schemas.RedemptionAnswer.of))
    async def redeem(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        secrets: CardKeys,
        answer: IdempotentAnswer,
        idempotency_key: IdempotencyKey,
        data: JSONBody[schemas.RedeemRequest],
    ) -> schemas.RedemptionAnswer:
        """Spend points on a reward: never overdraws, however many tills try at once."""
        ref = lookup.parse_code(data.card, secrets, principal.tenant_id, now=now)
        redeemed = await redemptions.redeem_with_member(
            db,
            principal.tenant_id,
            reward_code=data.reward,
            now=now,
            card=ref,
            outlet_id=principal.outlet_id,
            transaction_id=data.transaction_id,
            external_id=data.external_id or _key_id(answer),
            answer=answer,
        )
        metrics.booked("redemption", replayed=redeemed.redemption.replayed)
        return schemas.RedemptionAnswer.of(redeemed)

    @post(
        "/redemptions/{redemption_id:int}/cancellations",
        operation_id="tillCancelRedemption",
        **idempotent(),
    )
    async def cancel(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        answer: IdempotentAnswer,
        idempotency_key: IdempotencyKey,
        redemption_id: schemas.PathId,
    ) -> redemptions.CancelResult:
        """Undo a redemption made at this outlet today; the exact lots get their points back."""
        await transactions.redemption_at_outlet(db, principal.tenant_id, redemption_id, principal.outlet_id)
        cancelled = await redemptions.cancel(db, principal.tenant_id, redemption_id, now=now, answer=answer)
        metrics.booked("cancellation")
        return cancelled
