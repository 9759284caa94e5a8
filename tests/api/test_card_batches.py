"""Card batches: ordered for an outlet, recorded, printed as a PDF whose QR URLs work at the till."""

from __future__ import annotations

import io

from pypdf import PdfReader

from loyalty.cards.numbers import format_card_number, make_card_number

from .conftest import Api


def test_an_ordered_batch_is_recorded_and_prints_every_card(api: Api) -> None:
    """Ordering 12 cards records a batch; its sheet holds every number and a till can scan them."""
    h = api.a.headers("admin")
    r = api.client.post("/v1/admin/card-batches", json={"count": 12, "outlet_id": api.a.outlet_id}, headers=h)
    assert r.status_code == 201, r.text
    batch = r.json()
    assert batch["count"] == 12 and batch["outlet_id"] == api.a.outlet_id
    assert [b["id"] for b in api.client.get("/v1/admin/card-batches", headers=h).json()][-1] == batch["id"]
    sheet = api.client.get(f"/v1/admin/card-batches/{batch['id']}/sheet", headers=h)
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(sheet.content)).pages)
    first = batch["first_serial"]
    card = api.client.get("/v1/admin/cards/" + make_card_number("6012", first), headers=h).json()
    assert card["state"] == "blank" and card["outlet_id"] == api.a.outlet_id
    assert format_card_number(card["number"]) in text
    assert text.count("6012 ") == 12


def test_a_batch_of_another_tenant_is_not_found(api: Api) -> None:
    """Tenant A cannot print tenant B's batch."""
    b = api.client.post("/v1/admin/card-batches", json={"count": 1}, headers=api.b.headers("admin")).json()
    r = api.client.get(f"/v1/admin/card-batches/{b['id']}/sheet", headers=api.a.headers("admin"))
    assert r.status_code == 404


def test_a_batch_for_another_tenants_outlet_is_refused(api: Api) -> None:
    """An outlet id of another tenant is not found, and no cards are issued."""
    h = api.a.headers("admin")
    before = len(api.client.get("/v1/admin/card-batches", headers=h).json())
    r = api.client.post("/v1/admin/card-batches", json={"count": 3, "outlet_id": api.b.outlet_id}, headers=h)
    assert r.status_code == 404
    assert len(api.client.get("/v1/admin/card-batches", headers=h).json()) == before
