"""The guard against server-side request forgery: webhook URLs reach public addresses only."""

from __future__ import annotations

import pytest

from loyalty.errors import InvalidInput
from loyalty.events.guard import Guard, UnsafeTarget, unsafe_reason

PUBLIC = "93.184.216.34"


def _resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    calls: list[str] = []

    async def resolve(host: str, _port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/hook",
        "https://10.0.0.5/hook",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "http://[::ffff:10.0.0.1]/hook",
        "http://[2002:7f00:1::1]/hook",  # 6to4 of 127.0.0.1
        "http://169.254.169.254/latest/meta-data",  # the cloud's metadata service
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://100.64.0.1/",  # carrier-grade NAT: not global
        "http://240.0.0.1/",  # reserved
    ],
)
async def test_private_literals_are_refused(url: str) -> None:
    """A URL naming a private, loopback, link-local, multicast, reserved or unspecified address (or
    an IPv6 form of one) is refused without any lookup."""
    resolve = _resolver({})
    with pytest.raises(UnsafeTarget, match="public addresses only"):
        await Guard(allow_private=False, resolver=resolve).check(url)
    assert resolve.calls == []  # type: ignore[attr-defined]


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    """``localhost`` (resolved by the operating system) points at loopback: refused."""
    with pytest.raises(UnsafeTarget, match=r"resolves to .* loopback"):
        await Guard(allow_private=False).check("http://localhost:9/hook")


async def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    """A client may connect to any address of a name, so one private address refuses it all."""
    guard = Guard(allow_private=False, resolver=_resolver({"mixed.example": [PUBLIC, "10.1.1.1"]}))
    with pytest.raises(UnsafeTarget, match=r"10\.1\.1\.1 is a private address"):
        await guard.check("https://mixed.example/hook")


async def test_public_targets_pass() -> None:
    """A public literal, and a name resolving only to public addresses, are accepted."""
    guard = Guard(allow_private=False, resolver=_resolver({"hooks.example": [PUBLIC, "2606:4700::1111"]}))
    await guard.check(f"http://{PUBLIC}/hook")
    await guard.check("https://hooks.example:8443/in?x=1")


async def test_an_unresolvable_name_is_refused() -> None:
    with pytest.raises(UnsafeTarget, match="cannot be resolved"):
        await Guard(allow_private=False, resolver=_resolver({})).check("https://nowhere.example/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://127.0.0.1:6379/_INFO", "http:// or https://"),
        ("hooks.example/hook", "http:// or https://"),
        ("https://user:pw@hooks.example/", "user name or password"),
        ("https://user@hooks.example/", "user name or password"),
        ("http:///hook", "name a host"),
        ("https://hooks.example:99999/", "port"),
        ("http://[::1", "malformed"),
        ("http://[zzz]/hook", "malformed"),
        ("https://hooks.example/a b", "spaces"),
        ("", "1 to 2000"),
        ("https://hooks.example/" + "a" * 2000, "1 to 2000"),
    ],
)
async def test_malformed_urls_are_refused(url: str, message: str) -> None:
    """Only http(s) URLs with a host and no credentials; the refusal is an InvalidInput (a 422)."""
    with pytest.raises(InvalidInput, match=message):
        await Guard(allow_private=True).check(url)


async def test_the_operator_may_allow_private_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Private targets pass when the process allows them: the flag, or the environment setting."""
    await Guard(allow_private=True).check("http://127.0.0.1:9/hook")
    monkeypatch.setenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", "1")
    await Guard().check("http://[::1]/hook")
    monkeypatch.setenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", "0")
    with pytest.raises(UnsafeTarget):
        await Guard().check("http://[::1]/hook")


async def test_a_changed_record_is_noticed_after_the_cache_time() -> None:
    """A delivery's check may reuse a host's verdict for seconds only: a record that turned private
    (DNS rebinding) is refused once the cached verdict is older than that."""
    table = {"flip.example": [PUBLIC]}
    ticks = [0.0]
    guard = Guard(allow_private=False, resolver=_resolver(table), monotonic=lambda: ticks[0])
    await guard.check("https://flip.example/", cached=True)
    table["flip.example"] = ["127.0.0.1"]
    await guard.check("https://flip.example/", cached=True)  # within the cache time
    with pytest.raises(UnsafeTarget):
        await guard.check("https://flip.example/")  # an uncached check (creation) resolves again
    ticks[0] = 11.0
    with pytest.raises(UnsafeTarget, match=r"127\.0\.0\.1"):
        await guard.check("https://flip.example/", cached=True)


def test_embedded_addresses_are_judged_by_what_they_embed() -> None:
    import ipaddress

    assert unsafe_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert "loopback" in (unsafe_reason(ipaddress.ip_address("::ffff:127.0.0.1")) or "")


async def test_a_slow_resolver_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name whose DNS answer does not come in time is refused, not waited for."""
    import asyncio

    from loyalty.events import guard as guard_module

    async def slow(_host: str, _port: int) -> list[str]:
        await asyncio.sleep(5)
        return [PUBLIC]

    monkeypatch.setattr(guard_module, "RESOLVE_TIMEOUT_SECONDS", 0.05)
    with pytest.raises(UnsafeTarget, match="no answer in"):
        await Guard(allow_private=False, resolver=slow).check("https://slow.example/")
