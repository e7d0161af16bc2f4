"""The OpenAI-compatible API of `serve`: request models (pydantic) and the error body.

Requests are validated here, before they reach the model: types are strict (`"n": "2"` is
refused, not coerced), unknown fields are ignored (OpenAI clients send many), and every bound
comes from contract.json `limits`. A refusal is a 400 whose `param` and message name the field.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .. import contract
from . import structured

LIMITS = contract.LIMITS
DEFAULT_MAX_TOKENS = 256


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code if self.code is not None else self.status,
            }
        }

    def response(self):
        from fastapi.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_request", param)


# ---------------------------------------------------------------- requests


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, c):
        if c is None or isinstance(c, str):
            return c
        if isinstance(c, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in c
        ):
            return "".join(p["text"] for p in c)
        raise PydanticCustomError("content_type", "must be a string or an array of text parts")

    @model_validator(mode="after")
    def _content_required(self):
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError("content_missing", "content is required for role {role}", {"role": self.role})
        return self

    def chat(self) -> dict:
        return {
            "role": {"developer": "system", "tool": "user"}.get(self.role, self.role),
            "content": self.content or "",
        }


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. Unknown fields are ignored, as OpenAI clients send many."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = Field(None, min_length=1)
    messages: list[Message] = Field(min_length=1)
    n: StrictInt = Field(1, ge=1, le=LIMITS["maxN"])
    temperature: StrictFloat = Field(1.0, ge=0, le=2)
    top_p: StrictFloat = Field(1.0, gt=0, le=1)
    max_tokens: StrictInt | None = Field(None, ge=1, le=LIMITS["maxTokens"])
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=LIMITS["maxTokens"])
    seed: StrictInt | None = None
    stop: list[StrictStr] = Field(default_factory=list, max_length=4)
    stream: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    _rf: tuple[str, dict | None] = PrivateAttr(("text", None))

    @field_validator("n", "temperature", "top_p", "stop", mode="before")
    @classmethod
    def _null_is_default(cls, v, info):
        if v is None:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return [v] if info.field_name == "stop" and isinstance(v, str) else v

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v):
        if v:
            raise PydanticCustomError("unsupported", "streaming is not supported by this server")
        return v

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, rf):
        try:
            _, schema = structured.schema_from_response_format(rf)
        except ValueError as e:
            raise PydanticCustomError("response_format", str(e)) from None
        size = len(json.dumps(schema, separators=(",", ":")).encode()) if schema else 0
        if size > LIMITS["maxSchemaBytes"]:
            raise PydanticCustomError(
                "too_large",
                "the JSON schema has {size} bytes; at most {limit} are allowed",
                {"size": size, "limit": LIMITS["maxSchemaBytes"], "param": "response_format.json_schema"},
            )
        return rf

    @model_validator(mode="after")
    def _budget(self):
        self.max_tokens = self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS
        total, limit = self.n * self.max_tokens, LIMITS["maxGeneratedTokensPerRequest"]
        if total > limit:
            raise PydanticCustomError(
                "too_many_tokens",
                "n × max_tokens = {total} tokens; at most {limit} per request",
                {"total": total, "limit": limit, "param": "max_tokens"},
            )
        self.stop = [s for s in self.stop if s]
        self._rf = structured.schema_from_response_format(self.response_format)
        return self

    @property
    def rf_kind(self) -> str:
        return self._rf[0]

    @property
    def schema(self) -> dict | None:
        return self._rf[1]


class LoadLoraRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lora_name: StrictStr = Field(min_length=1)
    lora_path: StrictStr = Field(min_length=1)


class UnloadLoraRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lora_name: StrictStr = Field(min_length=1)


def validation_error(errors: list[dict]) -> ApiError:
    """The first pydantic error as the OpenAI error body, naming the field (`messages[0].role`)."""
    err = errors[0]
    ctx = err.get("ctx") or {}
    loc = [p for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return bad(f"request body is not valid JSON: {ctx.get('error', err.get('msg'))}")
    param = ctx.get("param") or "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if not param:
        return bad("request body must be a JSON object" if err.get("type") != "value_error" else err["msg"])
    return bad(f"'{param}': {err['msg']}", param)
