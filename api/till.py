"""Till endpoints for a cashier key bound to one outlet: scan, activate, post, refund, redeem, cancel."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.params import JSONBody

from api import schemas
from api.auth import Principal, requires
from api.context import caller, db_of, now_of, secrets_of
from api.idempotency import IdempotencyKey, idempotent
from loyalty import lookup, members, redemptions, transactions
from loyalty.errors import NotAllowed
from rules.context import Item


async def _card(request: Request[Any, Any, Any], principal: Principal, code: str) -> str:
    ref = lookup.parse_code(code, secrets_of(request), principal.tenant_id, now=now_of(request))
    return await lookup.card_number(db_of(request), principal.tenant_id, ref)


class TillController(Controller):
    path = "/v1/till"
    tags = ["till"]
    guards = [requires("cashier")]

    @post("/lookup", operation_id="tillLookup", status_code=200)
    async def lookup_card(
        self, request: Request[Any, Any, Any], data: JSONBody[schemas.LookupRequest]
    ) -> lookup.Scan:
        """Scan or type a card: the card, its member, balance, tier, stamp cards and rewards in reach."""
        principal = await caller(request)
        ref = lookup.parse_code(data.code, secrets_of(request), principal.tenant_id, now=now_of(request))
        return await lookup.scan(db_of(request), principal.tenant_id, ref, now=now_of(request))

    @post("/activations", operation_id="tillActivateCard")
    async def activate(
        self,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey,
        data: JSONBody[schemas.ActivateRequest],
    ) -> Response[Any]:
        """Bind a blank card to a new member (its first use)."""
        principal = await caller(request)

        async def run() -> Any:
            number = await _card(request, principal, data.card)
            member = await members.resolve_card(
                db_of(request), principal.tenant_id, number, now=now_of(request)
            )
            return {"card": number, "member": member}

        return await idempotent(request, run)

    @post("/transactions", operation_id="tillPostTransaction")
    async def post_transaction(
        self,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey,
        data: JSONBody[schemas.PostTransactionRequest],
    ) -> Response[Any]:
        """Post a basket: points with the rule-by-rule explanation, and the member's new balance."""
        principal = await caller(request)
        assert principal.outlet_id is not None

        async def run() -> Any:
            db, now = db_of(request), now_of(request)
            # Parsed and verified here; the posting's own transaction finds the card by number or id.
            ref = lookup.parse_code(data.card, secrets_of(request), principal.tenant_id, now=now)
            items = [Item(i.sku, i.unit_price, i.quantity, i.category, tuple(i.tags)) for i in data.items]
            posting = await transactions.post_transaction(
                db,
                principal.tenant_id,
                outlet_id=principal.outlet_id or 0,
                external_id=data.external_id,
                occurred_at=data.occurred_at,
                items=items,
                now=now,
                card_number=ref.number,
                card_id=ref.card_id,
                channel=data.channel,
            )
            # The member's new figures; the full balance view (expiring, rewards) is what a lookup is for.
            return {
                "transaction": posting,
                "balance": await members.get_member(db, principal.tenant_id, posting.member_id),
            }

        return await idempotent(request, run)

    @post("/transactions/{transaction_id:int}/refunds", operation_id="tillRefund")
    async def refund(
        self,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey,
        transaction_id: schemas.PathId,
        data: JSONBody[schemas.RefundRequest],
    ) -> Response[Any]:
        """Return some items of a purchase made at this outlet (or all of them)."""
        principal = await caller(request)

        async def run() -> Any:
            db, now = db_of(request), now_of(request)
            await lookup.transaction_at_outlet(db, principal.tenant_id, transaction_id, principal.outlet_id)
            lines = {line.line: line.quantity for line in data.lines} if data.lines is not None else None
            result = await transactions.refund(
                db, principal.tenant_id, transaction_id, now=now, lines=lines, external_id=data.external_id
            )
            return {
                "refund": result,
                "balance": await members.get_member(db, principal.tenant_id, result.member_id),
            }

        return await idempotent(request, run)

    @post("/redemptions", operation_id="tillRedeem")
    async def redeem(
        self,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey,
        data: JSONBody[schemas.RedeemRequest],
    ) -> Response[Any]:
        """Spend points on a reward: never overdraws, however many tills try at once."""
        principal = await caller(request)

        async def run() -> Any:
            db, now = db_of(request), now_of(request)
            card = await members.get_card(db, principal.tenant_id, await _card(request, principal, data.card))
            if card.member_id is None:
                raise NotAllowed("this card has not been activated yet")
            result = await redemptions.redeem(
                db,
                principal.tenant_id,
                card.member_id,
                data.reward,
                now=now,
                outlet_id=principal.outlet_id,
                transaction_id=data.transaction_id,
            )
            return {
                "redemption": result,
                "balance": await members.get_member(db, principal.tenant_id, card.member_id),
            }

        return await idempotent(request, run)

    @post("/redemptions/{redemption_id:int}/cancellations", operation_id="tillCancelRedemption")
    async def cancel(
        self, request: Request[Any, Any, Any], idempotency_key: IdempotencyKey, redemption_id: schemas.PathId
    ) -> Response[Any]:
        """Undo a redemption made at this outlet today; the exact lots get their points back."""
        principal = await caller(request)

        async def run() -> Any:
            db = db_of(request)
            await lookup.redemption_at_outlet(db, principal.tenant_id, redemption_id, principal.outlet_id)
            return await redemptions.cancel(db, principal.tenant_id, redemption_id, now=now_of(request))

        return await idempotent(request, run)
