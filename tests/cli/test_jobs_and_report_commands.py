"""`loyalty jobs run` and `loyalty report liability|monthly|partners`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from loyalty.cards.numbers import make_card_number
from tests.cli.conftest import Cli, count, ok, one_line_error

CARD = make_card_number("7301", 7)


@pytest.fixture
def history(shop: Path, tmp_path: Path, cli: Cli) -> Path:
    """Two purchases in March 2025 (pending 14 days, expiring after 12 months) for one member."""
    path = tmp_path / "h.csv"
    path.write_text(
        "external_id,outlet,card,occurred_at,sku,category,quantity,unit_price\n"
        f"h1,cafe-1,{CARD},2025-03-03T09:00:00+01:00,LATTE,coffee,2,390\n"
        f"h2,bakery-1,{CARD},2025-03-20T09:00:00+01:00,RYE,bread,1,1000\n"
    )
    ok(cli("import", "transactions", path))
    return shop


def test_jobs_release_pending_points_as_of_a_date(history: Path, cli: Cli) -> None:
    """`jobs run pending --as-of` releases only what is due by the end of that day, and is idempotent."""
    done = ok(cli("jobs", "run", "pending", "--as-of", "2025-03-17"))
    assert "job release" in done.out and "1 lots, 7 points, 1 members" in done.out
    assert count(history, "point_lots", "state = 'available'") == 1
    assert "0 lots" in ok(cli("jobs", "run", "pending", "--as-of", "2025-03-17")).out


def test_jobs_run_all_expires_old_lots(history: Path, cli: Cli) -> None:
    """`jobs run all` releases, expires (12 months, end of month), evaluates tiers and sends expiry
    reminders, with a summary each."""
    done = ok(cli("jobs", "run", "all", "--as-of", "2026-04-01"))
    assert [line.split()[1] for line in done.out.splitlines()] == ["release", "expiry", "tiers", "reminders"]
    assert count(history, "point_lots", "state = 'expired'") == 2
    assert "2 lots, 17 points" in done.out.splitlines()[1]


def test_jobs_reject_an_unknown_job_or_date(history: Path, cli: Cli) -> None:
    """An unknown job name or a malformed date is one error line and no job run is recorded."""
    one_line_error(cli("jobs", "run", "everything"), "everything")
    one_line_error(cli("jobs", "run", "expiry", "--as-of", "31.12.2025"), "--as-of", "not a date")
    assert count(history, "job_runs") == 0


def test_report_liability_in_three_formats(history: Path, cli: Cli) -> None:
    """The liability report is a table, a CSV and JSON with the same figures."""
    assert "liability" in ok(cli("report", "liability")).out
    rows = list(csv.DictReader(io.StringIO(ok(cli("report", "liability", "--format", "csv")).out)))
    assert rows == [{"members": "1", "available": "0", "pending": "17", "debt": "0", "net": "17"}]
    assert json.loads(ok(cli("report", "liability", "--format", "json")).out)[0]["net"] == 17


def test_report_monthly_and_partners(history: Path, cli: Cli) -> None:
    """Monthly movements cover the asked months; the partner report sums a period's sales per partner."""
    months = json.loads(ok(cli("report", "monthly", "--months", "3", "--format", "json")).out)
    assert len(months) == 3 and set(months[0]) == {
        "month",
        "issued",
        "reversed",
        "redeemed",
        "expired",
        "adjusted",
    }
    partners = json.loads(
        ok(cli("report", "partners", "--from", "2025-03-01", "--to", "2025-03-31", "--format", "json")).out
    )
    by_code = {p["partner"]: p for p in partners}
    assert by_code["cafe"]["spend"] == 780 and by_code["bakery"]["points_issued"] == 10
    assert by_code["carwash"]["transactions"] == 0
    assert "7.80" in ok(cli("report", "partners", "--from", "2025-03-01", "--to", "2025-03-31")).out


def test_reports_reject_bad_options(history: Path, cli: Cli) -> None:
    """A reversed period, an unknown format or too many months: one error line each."""
    one_line_error(cli("report", "partners", "--from", "2025-04-01", "--to", "2025-03-01"), "after --from")
    one_line_error(cli("report", "liability", "--format", "xml"), "xml")
    one_line_error(cli("report", "monthly", "--months", "99"), "--months")


def test_report_customers_lists_figures_and_exports_the_at_risk(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """One member every week, then silent for a month: at risk by their own rhythm, and the CSV a
    CRM takes lists them; a member seen last week is not."""
    lapsing, regular = make_card_number("7301", 7), make_card_number("7301", 8)
    path = tmp_path / "weekly.csv"
    lines = ["external_id,outlet,card,occurred_at,sku,category,quantity,unit_price"]
    weekly = ("02-03", "02-10", "02-17", "02-24")
    lines += [
        f"l{i},cafe-1,{lapsing},2025-{day}T09:00:00+01:00,LATTE,coffee,1,390" for i, day in enumerate(weekly)
    ]
    steady = ("02-24", "03-03", "03-10", "03-17", "03-20")
    lines += [
        f"r{i},cafe-1,{regular},2025-{day}T10:00:00+01:00,RYE,bread,1,500" for i, day in enumerate(steady)
    ]
    path.write_text("\n".join(lines) + "\n")
    ok(cli("import", "transactions", path))
    everyone = json.loads(ok(cli("report", "customers", "--as-of", "2025-03-24", "--format", "json")).out)
    assert len(everyone) == 2 and {row["purchase_days"] for row in everyone} == {4, 5}
    risky = list(
        csv.DictReader(
            io.StringIO(
                ok(cli("report", "customers", "--at-risk", "--as-of", "2025-03-24", "--format", "csv")).out
            )
        )
    )
    assert len(risky) == 1 and risky[0]["purchase_days"] == "4" and risky[0]["at_risk"] == "True"
    assert risky[0]["interval_days"] == "7.0"
    one_line_error(cli("report", "customers", "--as-of", "someday"), "--as-of", "not a date")


def test_segments_run_show_and_export(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """A run places the members in the coalition's segments; `show` counts them, `export` lists one
    segment for a CRM, and a misspelt segment is one error line."""
    lapsing, regular = make_card_number("7301", 7), make_card_number("7301", 8)
    path = tmp_path / "weekly.csv"
    lines = ["external_id,outlet,card,occurred_at,sku,category,quantity,unit_price"]
    weekly = ("02-03", "02-10", "02-17", "02-24")
    lines += [
        f"l{i},cafe-1,{lapsing},2025-{d}T09:00:00+01:00,LATTE,coffee,1,390" for i, d in enumerate(weekly)
    ]
    steady = ("02-24", "03-03", "03-10", "03-17", "03-20")
    lines += [f"r{i},cafe-1,{regular},2025-{d}T10:00:00+01:00,RYE,bread,1,500" for i, d in enumerate(steady)]
    path.write_text("\n".join(lines) + "\n")
    ok(cli("import", "transactions", path))
    done = ok(cli("segments", "run", "--as-of", "2025-03-24")).out
    assert "2 members, 2 moved" in done and "too few repeat buyers" in done
    sizes = {
        row["segment"]: row["members"]
        for row in json.loads(ok(cli("segments", "show", "--format", "json")).out)
    }
    assert sizes == {"at_risk": 1, "champions": 1}
    risky = list(csv.DictReader(io.StringIO(ok(cli("segments", "export", "at_risk")).out)))
    assert [(r["last_purchase"], r["at_risk"]) for r in risky] == [("2025-02-24", "True")]
    assert "0 moved" in ok(cli("segments", "run", "--as-of", "2025-03-24")).out
    one_line_error(cli("segments", "export", "at-risk"), "unknown segment 'at-risk'", "did you mean at_risk?")
    for far in ("0001-01-01", "9999-12-31"):
        one_line_error(cli("segments", "run", "--as-of", far), "--as-of", "outside the years")
    one_line_error(cli("campaign", "lift", "win-back", "--to", "9999-12-31"), "--to", "outside the years")
