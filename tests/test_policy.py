"""RoutingPolicy: validation, serialisation, digest, and the weighted split."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from rolepool.core import ConfigError
from rolepool.pools.policy import Choice, Route, RoutingPolicy


def canary(version: str = "2026-11-26.1") -> RoutingPolicy:
    return RoutingPolicy(
        version=version,
        routes={
            "coder": Route(
                choices=[Choice(worker="moe", weight=0.9), Choice(worker="vllm", weight=0.1)],
                fallbacks=["dense"],
            )
        },
        default=Route(choices=[Choice(worker="dense")], fallbacks=["moe"]),
    )


def test_route_for_role_and_default():
    policy = canary()
    assert policy.route_for("coder").fallbacks == ["dense"]
    assert policy.route_for("writer") == policy.default
    assert policy.route_for(None) == policy.default
    assert RoutingPolicy(version="1").route_for("coder") is None


@pytest.mark.parametrize(
    "route, problem",
    [
        ({"choices": [{"worker": "a", "weight": 0}]}, "greater than 0"),
        ({"choices": [{"worker": "a", "weight": -0.5}]}, "greater than 0"),
        ({"choices": [{"worker": " "}]}, "must not be empty"),
        ({"choices": [{"worker": "a"}], "fallbacks": [""]}, "must not be empty"),
        ({"choices": []}, "at least 1"),
        ({"choices": [{"worker": "a"}, {"worker": "a"}]}, "more than once"),
        ({"choices": [{"worker": "a"}], "fallbacks": ["b", "a"]}, "more than once"),
        ({"choices": [{"worker": "a", "wieght": 1}]}, "Extra inputs"),
    ],
)
def test_invalid_routes_are_rejected(route, problem):
    with pytest.raises(ValidationError, match=problem):
        RoutingPolicy(version="1", routes={"coder": route})


def test_version_is_required_and_non_empty():
    with pytest.raises(ValidationError):
        RoutingPolicy.model_validate({"routes": {}})
    with pytest.raises(ValidationError):
        RoutingPolicy(version="")


def test_json_and_dict_round_trip():
    policy = canary()
    assert RoutingPolicy.from_json(policy.to_json()) == policy
    assert RoutingPolicy.from_dict(policy.to_dict()) == policy
    data = policy.to_dict()
    assert data["routes"]["coder"]["choices"][1] == {"worker": "vllm", "weight": 0.1}
    assert None not in json.loads(policy.to_json()).values()  # TOML-shaped: no nulls
    assert "default" not in RoutingPolicy(version="1").to_dict()


def test_digest_is_stable_and_content_sensitive():
    policy = canary()
    reordered = RoutingPolicy.from_json(json.dumps(dict(reversed(list(policy.to_dict().items())))))
    assert reordered.digest() == policy.digest()
    assert canary().digest() == policy.digest()
    assert canary("2").digest() != policy.digest()
    changed = policy.to_dict()
    changed["routes"]["coder"]["choices"][0]["weight"] = 0.8
    assert RoutingPolicy.from_dict(changed).digest() != policy.digest()


def test_check_workers_names_role_and_worker():
    policy = canary()
    policy.check_workers(["moe", "vllm", "dense"])
    with pytest.raises(ConfigError) as info:
        policy.check_workers(["moe", "dense"])
    assert "routes.coder.choices[1].worker" in str(info.value)
    assert "'vllm'" in str(info.value)
    assert policy.unknown_workers(["moe"]) == [
        ("routes.coder.choices[1].worker", "vllm"),
        ("routes.coder.fallbacks[0]", "dense"),
        ("default.choices[0].worker", "dense"),
    ]


def test_weighted_split_matches_weights():
    """10,000 draws of a 90/10 split land within 4 standard deviations of 1,000 canaries."""
    route = canary().routes["coder"]
    rng = random.Random(1234)
    n = 10_000
    canaries = sum(route.pick(rng) == "vllm" for _ in range(n))
    sd = (n * 0.1 * 0.9) ** 0.5  # 30
    assert abs(canaries - 1_000) <= 4 * sd


def test_weighted_split_is_deterministic_for_a_seed():
    route = canary().routes["coder"]
    first = [route.pick(random.Random(7)) for _ in range(1)]
    rng_a, rng_b = random.Random(7), random.Random(7)
    draws_a = [route.pick(rng_a) for _ in range(500)]
    draws_b = [route.pick(rng_b) for _ in range(500)]
    assert draws_a == draws_b and first[0] == draws_a[0]
    other = random.Random(8)
    assert [route.pick(other) for _ in range(500)] != draws_a


def test_attempt_order_is_primary_then_fallbacks():
    route = canary().routes["coder"]
    assert route.attempts("moe") == ["moe", "dense"]
    assert route.attempts("vllm") == ["vllm", "dense"]
    single = Route(choices=[Choice(worker="a")])
    assert single.pick(random.Random(0)) == "a" and single.attempts("a") == ["a"]
