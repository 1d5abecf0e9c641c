"""The completions API's wire format: request parsing with its limits, the response, the
host-side end of a completion (EOS, stop sequences), and the OpenAPI description.

Parsing is strict: a body that is not a JSON object, an unknown field, a value of the wrong type
or out of range is refused with one line that says which field and why; nothing in a request
reaches the device unchecked. The context-length check needs the loaded model and happens in
`check_fits`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlstack.workloads.train.configs import EOS_ID, TOKENIZER_VOCAB
from mlstack.workloads.train.data import decode, encode

#: Defaults of the optional fields (OpenAI's completions API where it has the field).
DEFAULT_MAX_TOKENS = 16
DEFAULT_TEMPERATURE = 1.0
MAX_TEMPERATURE = 2.0
MAX_STOP_SEQUENCES = 4
MAX_STOP_BYTES = 64
#: Seeds are 32-bit: the PRNG key of a row is made from one.
SEED_LIMIT = 2**32
#: top_k ranges over the tokenizer's ids.
MAX_TOP_K = TOKENIZER_VOCAB
FIELDS = ("prompt", "max_tokens", "temperature", "top_k", "seed", "stop")


class RequestError(ValueError):
    """A request the API refuses: `status` (4xx) and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class CompletionRequest:
    """A checked request."""

    prompt: str
    prompt_ids: np.ndarray
    max_tokens: int
    temperature: float
    top_k: int
    seed: int
    stop: tuple[bytes, ...]


@dataclass(frozen=True)
class Completion:
    """One finished completion."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """The JSON value of `body`; RequestError 400 when it is not JSON (NaN and Infinity are
    not: they are no JSON numbers)."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "body is not valid JSON: nested too deeply") from None
    except ValueError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RequestError(400, f"body is not valid JSON: {reason}") from None


def _int(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        raise RequestError(422, f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f"{name} must be an integer, not {_kind(value)}")
    if not low <= value <= high:
        raise RequestError(422, f"{name} {value} is out of range: use {low} to {high}")
    return value


def _float(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(422, f"{name} must be a number, not {_kind(value)}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise RequestError(422, f"{name} {value} is out of range: use {low} to {high}")
    return number


def _kind(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _utf8(text: str, name: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(422, f"{name} is not valid Unicode (a lone surrogate)") from None


def _stop(body: dict[str, Any]) -> tuple[bytes, ...]:
    value = body.get("stop", [])
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError(422, f"stop must be an array of strings, not {_kind(value)}")
    if len(value) > MAX_STOP_SEQUENCES:
        raise RequestError(
            422, f"stop has {len(value)} sequences; at most {MAX_STOP_SEQUENCES} are allowed"
        )
    stops = []
    for item in value:
        if not isinstance(item, str):
            raise RequestError(422, f"stop must be an array of strings, not of {_kind(item)}")
        raw = _utf8(item, "stop")
        if not 1 <= len(raw) <= MAX_STOP_BYTES:
            raise RequestError(422, f"a stop sequence must be 1 to {MAX_STOP_BYTES} bytes of UTF-8")
        stops.append(raw)
    return tuple(stops)


def parse_request(value: Any, *, max_tokens_limit: int, seed: int) -> CompletionRequest:
    """A checked completion request from a parsed JSON body; `seed` is used when the body
    gives none. RequestError 422 for what the API refuses."""
    if not isinstance(value, dict):
        raise RequestError(422, f"body must be a JSON object, not {_kind(value)}")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise RequestError(
            422, f"unknown field {unknown[0][:64]!r}; the fields are {', '.join(FIELDS)}"
        )
    prompt = value.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError(422, f"prompt must be a string, not {_kind(prompt)}")
    try:
        ids = encode(prompt)
    except UnicodeEncodeError:
        raise RequestError(422, "prompt is not valid Unicode (a lone surrogate)") from None
    if ids.size == 0:
        raise RequestError(422, "prompt is empty; give at least one character")
    return CompletionRequest(
        prompt=prompt,
        prompt_ids=ids,
        max_tokens=_int(value, "max_tokens", DEFAULT_MAX_TOKENS, 1, max_tokens_limit),
        temperature=_float(value, "temperature", DEFAULT_TEMPERATURE, 0.0, MAX_TEMPERATURE),
        top_k=_int(value, "top_k", 0, 0, MAX_TOP_K),
        seed=_int(value, "seed", seed, 0, SEED_LIMIT - 1),
        stop=_stop(value),
    )


def check_fits(request: CompletionRequest, context: int) -> None:
    """RequestError 422 unless the prompt and max_tokens fit in the model's context."""
    prompt = int(request.prompt_ids.size)
    if prompt + request.max_tokens > context:
        raise RequestError(
            422,
            f"prompt is {prompt} tokens and max_tokens {request.max_tokens}: together at most "
            f"{context} (the model's context) fit; shorten the prompt or lower max_tokens",
        )


def finish(request: CompletionRequest, tokens: np.ndarray, model: str) -> Completion:
    """The completion of `tokens` (the generated ids, up to and with an EOS): cut at the
    first stop sequence (which is left out of the text), finish_reason 'stop' for an EOS or a
    stop sequence, 'length' when max_tokens ran out."""
    ended = tokens.size > 0 and int(tokens[-1]) == EOS_ID
    body = tokens[:-1] if ended else tokens
    raw = body.astype(np.uint8).tobytes()
    matches = [(at, len(stop)) for stop in request.stop if (at := raw.find(stop)) >= 0]
    if matches:
        cut, length = min(matches)
        return Completion(
            text=decode(body[:cut]),
            finish_reason="stop",
            prompt_tokens=int(request.prompt_ids.size),
            completion_tokens=cut + length,
            model=model,
        )
    return Completion(
        text=decode(body),
        finish_reason="stop" if ended else "length",
        prompt_tokens=int(request.prompt_ids.size),
        completion_tokens=int(tokens.size),
        model=model,
    )


def response_body(completion: Completion, completion_id: str, created: int) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": completion.model,
        "choices": [
            {"index": 0, "text": completion.text, "finish_reason": completion.finish_reason}
        ],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi(*, max_tokens_limit: int, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the server's API."""
    text = {"type": "string"}
    request = {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "prompt": {
                "type": "string",
                "minLength": 1,
                "description": "Text to continue. Its UTF-8 bytes are the tokens; with "
                "max_tokens they must fit in the model's context.",
            },
            "max_tokens": {
                "type": "integer",
                "minimum": 1,
                "maximum": max_tokens_limit,
                "default": DEFAULT_MAX_TOKENS,
                "description": "The most tokens (bytes) to generate.",
            },
            "temperature": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_TEMPERATURE,
                "default": DEFAULT_TEMPERATURE,
                "description": "Sampling temperature; 0 picks the most likely token.",
            },
            "top_k": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_TOP_K,
                "default": 0,
                "description": "Sample among the k most likely tokens; 0 for all.",
            },
            "seed": {
                "type": "integer",
                "minimum": 0,
                "maximum": SEED_LIMIT - 1,
                "description": "Seed of this request's random numbers: the same request with "
                "the same seed gives the same text, whatever it is batched with. Random when "
                "absent.",
            },
            "stop": {
                "type": "array",
                "maxItems": MAX_STOP_SEQUENCES,
                "items": {"type": "string", "minLength": 1},
                "description": f"Up to {MAX_STOP_SEQUENCES} sequences (at most "
                f"{MAX_STOP_BYTES} bytes each) that end the completion; the text stops "
                "before the first one.",
            },
        },
    }
    response = {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": text,
            "object": {"type": "string", "const": "text_completion"},
            "created": {"type": "integer", "description": "Unix seconds."},
            "model": {"type": "string", "description": "The bundle version that answered."},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "text", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "text": text,
                        "finish_reason": {"type": "string", "enum": ["stop", "length"]},
                    },
                },
            },
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "completion_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                },
            },
        },
    }
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": text, "model": text},
    }

    def probe(summary: str, ready: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "responses": {
                    "200": {
                        "description": ready,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}
                        },
                    },
                    "503": _error_response("Not ready: loading, warming up or draining."),
                },
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mlstack model server",
            "version": "1",
            "description": "Completions from the newest exported bundle (or a pinned one) of "
            "a byte-level transformer, with continuous batching.",
        },
        "paths": {
            "/v1/completions": {
                "post": {
                    "summary": "Continue a prompt",
                    "operationId": "createCompletion",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CompletionRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The completion.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Completion"}
                                }
                            },
                        },
                        "400": _error_response("The body is not JSON."),
                        "413": _error_response(f"The body is over {max_body_bytes} bytes."),
                        "422": _error_response(
                            "A field is missing, unknown, of the wrong type or out of range, "
                            "or the prompt and max_tokens do not fit in the context."
                        ),
                        "429": _error_response("The queue is full; retry later."),
                        "503": _error_response("No model is loaded yet, or the server drains."),
                    },
                }
            },
            "/healthz": probe("Liveness: the process answers", "Alive."),
            "/readyz": probe("Readiness: a model is loaded and warmed up", "Ready."),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": text}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This description",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "CompletionRequest": request,
                "Completion": response,
                "Status": status,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string", "description": "One line."}},
                },
            }
        },
    }
