"""workloads.serve.protocol: what a request may hold, how a completion ends, the OpenAPI
description."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from openapi_spec_validator import validate

from mlstack.workloads.serve.protocol import (
    Completion,
    RequestError,
    check_fits,
    finish,
    openapi,
    parse_json,
    parse_request,
    response_body,
)
from mlstack.workloads.train.configs import EOS_ID
from mlstack.workloads.train.data import encode


def _parse(body: Any) -> Any:
    return parse_request(body, max_tokens_limit=63, seed=77)


def test_defaults_fill_what_the_request_leaves_out() -> None:
    request = _parse({"prompt": "héllo"})
    assert request.prompt_ids.tolist() == list("héllo".encode())
    assert (request.max_tokens, request.temperature, request.top_k) == (16, 1.0, 0)
    assert (request.seed, request.stop) == (77, ())
    full = _parse(
        {
            "prompt": "a",
            "max_tokens": 63,
            "temperature": 0,
            "top_k": 257,
            "seed": 2**32 - 1,
            "stop": ["\n", "é"],
        }
    )
    assert (full.max_tokens, full.temperature, full.top_k, full.seed) == (63, 0.0, 257, 2**32 - 1)
    assert full.stop == (b"\n", "é".encode())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([1, 2], "body must be a JSON object, not an array"),
        ("prompt", "body must be a JSON object, not a string"),
        ({}, "prompt must be a string, not null"),
        ({"prompt": 5}, "prompt must be a string, not a number"),
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "\ud800"}, "prompt is not valid Unicode"),
        ({"prompt": "a", "model": "x"}, "unknown field 'model'; the fields are prompt, "),
        ({"prompt": "a", "max_tokens": "5"}, "max_tokens must be an integer, not a string"),
        ({"prompt": "a", "max_tokens": True}, "max_tokens must be an integer, not a boolean"),
        ({"prompt": "a", "max_tokens": 2.0}, "max_tokens must be an integer, not a number"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens 0 is out of range: use 1 to 63"),
        ({"prompt": "a", "max_tokens": 10**30}, "max_tokens 1000000000000000000000000000000 is"),
        ({"prompt": "a", "temperature": -0.1}, "temperature -0.1 is out of range: use 0.0 to 2.0"),
        ({"prompt": "a", "temperature": 2.5}, "temperature 2.5 is out of range"),
        ({"prompt": "a", "temperature": None}, "temperature must be a number, not null"),
        ({"prompt": "a", "top_k": -1}, "top_k -1 is out of range: use 0 to 257"),
        ({"prompt": "a", "top_k": 258}, "top_k 258 is out of range"),
        ({"prompt": "a", "seed": -1}, "seed -1 is out of range"),
        ({"prompt": "a", "seed": 2**32}, "seed 4294967296 is out of range"),
        ({"prompt": "a", "stop": "\n"}, "stop must be an array of strings, not a string"),
        ({"prompt": "a", "stop": [1]}, "stop must be an array of strings, not of a number"),
        ({"prompt": "a", "stop": [""]}, "a stop sequence must be 1 to 64 bytes"),
        ({"prompt": "a", "stop": ["x" * 65]}, "a stop sequence must be 1 to 64 bytes"),
        ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop has 5 sequences; at most 4"),
    ],
)
def test_what_the_api_refuses_is_a_422_with_the_reason(body: Any, reason: str) -> None:
    with pytest.raises(RequestError) as caught:
        _parse(body)
    assert caught.value.status == 422
    assert caught.value.reason.startswith(reason)
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "body is not valid JSON: Expecting property name"),
        (b"", "body is not valid JSON: Expecting value"),
        (b'{"prompt": NaN}', "body is not valid JSON: NaN is not valid JSON"),
        (b"\xff\xfe{}", "body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON: nested too deeply"),
    ],
)
def test_what_is_not_json_is_a_400(body: bytes, reason: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_json(body)
    assert caught.value.status == 400
    assert caught.value.reason.startswith(reason)


def test_prompt_and_max_tokens_must_fit_in_the_context() -> None:
    check_fits(_parse({"prompt": "x" * 48, "max_tokens": 16}), 64)
    with pytest.raises(
        RequestError,
        match=r"prompt is 49 tokens and max_tokens 16: together at "
        r"most 64 \(the model's context\) fit",
    ):
        check_fits(_parse({"prompt": "x" * 49, "max_tokens": 16}), 64)


def _tokens(text: str, eos: bool = False) -> np.ndarray:
    ids = encode(text).tolist() + ([EOS_ID] if eos else [])
    return np.asarray(ids, np.int32)


def test_a_completion_ends_at_eos_at_the_first_stop_sequence_or_at_max_tokens() -> None:
    plain = _parse({"prompt": "p", "max_tokens": 11})
    length = finish(plain, _tokens("hello world"), "v1")
    assert (length.text, length.finish_reason, length.completion_tokens) == (
        "hello world",
        "length",
        11,
    )
    eos = finish(plain, _tokens("hello", eos=True), "v1")
    assert (eos.text, eos.finish_reason, eos.completion_tokens) == ("hello", "stop", 6)
    stops = _parse({"prompt": "p", "stop": ["wor", "lo w", "zzz"]})
    stopped = finish(stops, _tokens("hello world"), "v1")
    # 'lo w' starts before 'wor': the text ends before it; its tokens were generated.
    assert (stopped.text, stopped.finish_reason, stopped.completion_tokens) == ("hel", "stop", 7)
    unicode = finish(_parse({"prompt": "p", "stop": ["é"]}), _tokens("café au lait"), "v1")
    assert (unicode.text, unicode.finish_reason) == ("caf", "stop")


def test_a_response_has_the_openai_shape() -> None:
    body = response_body(Completion("hi", "length", 3, 2, "step-1"), "cmpl-1", 1700000000)
    assert body == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1700000000,
        "model": "step-1",
        "choices": [{"index": 0, "text": "hi", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def test_the_openapi_description_is_valid_openapi_3_1() -> None:
    spec = openapi(max_tokens_limit=63, max_body_bytes=65536)
    validate(spec)
    request = spec["components"]["schemas"]["CompletionRequest"]
    assert request["additionalProperties"] is False
    assert request["properties"]["max_tokens"]["maximum"] == 63
    assert set(spec["paths"]) == {
        "/v1/completions",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
