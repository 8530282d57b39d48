"""The gateway's sticky modes over real HTTP on loopback: ``none`` (the default) draws
every request by weight even for clients that keep cookies, ``header`` buckets by the
key header only, ``cookie`` pins a client with a cookie (the behaviour before modes)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from bertops.server.gateway.app import create_gateway
from bertops.server.gateway.routes import Routes, choose
from tests.server.conftest import LiveServer
from tests.server.helpers import Stub

KEY = "x-bertops-key"


def sticky_routes(stable: str, canary: str, weight: float, mode: str | None) -> Routes:
    document: dict[str, object] = {
        "stable": {"name": "v1", "url": stable},
        "canary": {"name": "v2", "url": canary},
        "canaryWeight": weight,
    }
    if mode is not None:  # None: the default mode
        document["sticky"] = {"mode": mode}
    return Routes.model_validate(document)


@pytest.fixture
def backends(serve: Callable[..., LiveServer]) -> tuple[str, str]:
    return serve(Stub("v1", "positive").app()).url, serve(Stub("v2", "negative").app()).url


def gateway_for(
    serve: Callable[..., LiveServer], backends: tuple[str, str], weight: float, mode: str | None
) -> str:
    table = sticky_routes(*backends, weight, mode)
    return serve(create_gateway(table, expose_headers=True)).url


def send(client: httpx.Client, n: int, **headers: str) -> list[httpx.Response]:
    return [client.post("/predict", json={"texts": ["x"]}, headers=headers) for _ in range(n)]


def canary_share(answers: list[httpx.Response]) -> float:
    return sum(a.headers["x-bertops-variant"] == "canary" for a in answers) / len(answers)


def test_choose_reads_the_key_the_mode_names() -> None:
    headers, cookies = {KEY: "user-1"}, {"bertops-key": "user-2"}
    rng = random.Random(7)
    for mode in ("none", "header", "cookie"):
        table = sticky_routes("http://a", "http://b", 50, mode)
        keyed = {choose(table, headers, cookies, rng) for _ in range(50)}
        cookied = {choose(table, {}, cookies, rng) for _ in range(50)}
        bare = [choose(table, {}, {}, rng) for _ in range(50)]
        if mode == "none":  # no key read: both variants, never a cookie to set
            assert {v for v, _ in keyed} == {"stable", "canary"}
            assert {v for v, _ in cookied} == {"stable", "canary"}
        else:  # the header's key decides, the same way every time
            assert len(keyed) == 1 and next(iter(keyed))[1] is None
        if mode == "header":  # the cookie is not read
            assert {v for v, _ in cookied} == {"stable", "canary"}
        if mode == "cookie":  # the cookie decides; without any key a new one is made
            assert len(cookied) == 1 and next(iter(cookied))[1] is None
            assert all(new_key is not None for _, new_key in bare)
        else:
            assert all(new_key is None for _, new_key in bare)
    assert sticky_routes("http://a", "http://b", 50, None).sticky.mode == "none"


def test_sticky_none_spreads_clients_that_keep_cookies(
    serve: Callable[..., LiveServer], backends: tuple[str, str]
) -> None:
    gateway = gateway_for(serve, backends, 30, None)
    for _ in range(2):
        with httpx.Client(base_url=gateway) as client:  # keeps cookies, like a session
            answers = send(client, 200)
            assert {a.status_code for a in answers} == {200}
            assert all("set-cookie" not in a.headers for a in answers)
            assert not client.cookies
        # Binomial(200, 0.3): mean 60, sd 6.5; the band is more than 4 sd each side.
        assert 0.15 < canary_share(answers) < 0.45


def test_sticky_cookie_pins_each_client(
    serve: Callable[..., LiveServer], backends: tuple[str, str]
) -> None:
    gateway = gateway_for(serve, backends, 30, "cookie")
    pinned = []
    for _ in range(40):
        with httpx.Client(base_url=gateway) as client:
            first, *later = send(client, 4)
            assert "bertops-key" in first.cookies
            assert all("set-cookie" not in a.headers for a in later)  # kept, not replaced
            variants = {a.headers["x-bertops-variant"] for a in (first, *later)}
            assert len(variants) == 1
            pinned.append(variants.pop())
    # 40 clients at weight 30: each on one variant, and both variants have clients.
    assert set(pinned) == {"stable", "canary"}


def test_sticky_header_buckets_by_key_else_draws(
    serve: Callable[..., LiveServer], backends: tuple[str, str]
) -> None:
    gateway = gateway_for(serve, backends, 30, "header")
    with httpx.Client(base_url=gateway) as client:
        by_key: dict[str, set[str]] = {}
        for i in range(40):
            for answer in send(client, 3, **{KEY: f"user-{i}"}):
                by_key.setdefault(f"user-{i}", set()).add(answer.headers["x-bertops-variant"])
        assert all(len(variants) == 1 for variants in by_key.values())
        assert Counter(v.pop() for v in by_key.values()).keys() == {"stable", "canary"}
        unkeyed = send(client, 200)
        assert 0.15 < canary_share(unkeyed) < 0.45
        assert not client.cookies  # header mode never sets a cookie
