"""Request bodies of the REST API, in OpenAI's shapes, as pydantic models.

Each model forbids unknown fields, as OpenAI does, but accepts every optional field the `openai`
SDK can send, so existing clients work unchanged. A standard field we cannot honour is accepted at
its neutral value (null, false, 0, "auto") and refused with a clear message otherwise. brushpen's own
extras (seed, truncation_psi, kind, tone, ...) are plain optional fields; the SDK sends them through
`extra_body`. Ranges here are the API's caps; the services check their own ranges again.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from brushpen.store import store_ref_problem

MAX_N = 16              # images or variants per request
MAX_TOKENS = 512        # new tokens per variant
MAX_PROMPTS = 16        # briefs in one /v1/completions request
MAX_PROMPT_CHARS = 2000


# An engine's model (`engine/ID`) goes to the engine, never to a path here; the API checks it against
# the engine's own listing. Its ID is as the engine lists it: vLLM's are hub names with a slash.
ENGINE_REF = re.compile(r"engine/[^\s\x00-\x1f\x7f]{1,256}")


def _store_ref(name: str | None) -> str | None:
    if name is not None and name.startswith("engine/"):
        if not ENGINE_REF.fullmatch(name):
            raise ValueError("an engine's model is engine/ID, the ID as the engine lists it "
                             "(1 to 256 characters, no spaces)")
        return name
    problem = None if name is None else store_ref_problem(name)
    if problem:
        raise ValueError(problem)
    return name


# A model over HTTP: a store name only, checked before anything is loaded (never a server path).
StoreRef = Annotated[str, AfterValidator(_store_ref)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def _refuse_unless_neutral(self, neutral: dict[str, tuple]) -> None:
        """Raise for any standard field set to a value other than its neutral ones."""
        for name, allowed in neutral.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"'{name}'={value!r} is not supported by brushpen")


# ---- images -----------------------------------------------------------------------------------

class ImageGenerationRequest(Strict):
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS,
                               description="diffusers models: the text prompt; a class-conditional GAN: "
                                           "a word naming the class ('flag')")
    model: StoreRef | None = Field(None, max_length=200,
                                   description="an image model from /v1/models (default: emoji64)")
    n: int = Field(1, ge=1, le=MAX_N)
    response_format: Literal["b64_json", "url"] | None = "b64_json"
    size: str | None = Field(None, description="'WIDTHxHEIGHT' or 'auto' (the model's native size)")
    # OpenAI's optional fields, accepted at neutral values.
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    background: Literal["auto", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None
    output_format: Literal["png"] | None = None
    output_compression: int | None = None
    stream: Literal[False] | None = None
    partial_images: Literal[0] | None = None
    complexity: str | None = None
    frame_count: Literal[1] | None = None
    frame_duration_ms: int | None = None
    svg: None = None
    # brushpen's extras.
    seed: int | None = Field(None, ge=0, lt=2**63, description="image i uses seed+i")
    truncation_psi: float = Field(1.0, ge=0.0, le=2.0)
    backend: str = "torch"
    label: str | None = Field(None, max_length=200)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    steps: int = Field(20, ge=1, le=150)
    guidance: float = Field(7.5, ge=0.0, le=30.0)
    scheduler: str | None = None
    mix_seed: int | None = Field(None, ge=0, lt=2**63)
    mix_cutoff: int | None = Field(None, ge=0, le=64)
    noise_mode: Literal["none", "const", "random"] = "none"

    def dimensions(self) -> tuple[int | None, int | None]:
        if self.size in (None, "auto"):
            return None, None
        try:
            w, h = (int(v) for v in self.size.lower().split("x"))
        except ValueError:
            raise ValueError(f"size must be 'WIDTHxHEIGHT' or 'auto', got '{self.size}'") from None
        if not (8 <= w <= 2048 and 8 <= h <= 2048):
            raise ValueError(f"size must lie in 8x8..2048x2048, got '{self.size}'")
        return w, h

    @model_validator(mode="after")
    def _check(self) -> "ImageGenerationRequest":
        self.dimensions()
        self._refuse_unless_neutral({"quality": (None, "auto", "standard"), "style": (None,),
                                     "output_compression": (None, 100)})
        return self


# ---- copy -------------------------------------------------------------------------------------

class StreamOptions(Strict):
    include_usage: StrictBool | None = None
    include_obfuscation: StrictBool | None = None


class CopyExtras(Strict):
    """The copywriter's knobs beyond OpenAI's, shared by both text endpoints."""

    model: StoreRef | None = Field(None, max_length=200,
                                   description="a copy model from /v1/models (default: smollm2-135m:copy on torch, "
                                               "smollm2-135m on onnx)")
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0.0, le=2.0,
                                      description="default: tuned per mode and model (0.7 deliberate; plain 0.3, "
                                                  "0.7 for smollm2-135m:copy); 0 = greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**63, description="variant i uses seed+i")
    stop: str | list[str] | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    kind: str = Field("headline", description="headline, tagline, description, social, email-subject, ad")
    tone: str | None = Field(None, max_length=200)
    audience: str | None = Field(None, max_length=200)
    top_k: int | None = Field(None, ge=0, le=1000)
    repetition_penalty: float | None = Field(None, gt=0.0, le=3.0)
    backend: str = Field("torch", max_length=32, description="torch, or onnx / onnx-int8 once the model was "
                         "exported with `brushpen export MODEL --int8`")
    deliberate: StrictBool | None = Field(None, description="draft, check and pick the best (default true); "
                                          "false: plain sampling")
    draft: int | None = Field(None, ge=1, le=16, description="candidates drafted per variant (default 4)")
    language: Literal["en", "ko"] = Field("en", description="the copy's language: en or ko")

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def _check_common(self) -> None:
        self.stops()
        self._refuse_unless_neutral({"frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
                                     "logit_bias": (None, {})})


class CompletionRequest(CopyExtras):
    prompt: str | list[str] = Field(..., description="the brief: what the copy is for")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    best_of: int | None = None
    echo: StrictBool | None = None
    logprobs: int | None = None
    suffix: str | None = None

    def briefs(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @model_validator(mode="after")
    def _check(self) -> "CompletionRequest":
        self._check_common()
        self._refuse_unless_neutral({"echo": (None, False), "logprobs": (None, 0), "suffix": (None, "")})
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) must be at least n ({self.n})")
        if self.best_of is not None and self.best_of > 1:
            # OpenAI's server-side best-of is deliberate mode: best_of drafts in all, the best n kept.
            if self.draft is not None or self.deliberate is False:
                raise ValueError("give best_of or draft, not both (best_of also needs deliberate mode)")
            self.draft = -(-self.best_of // self.n)
        briefs = self.briefs()
        if not 1 <= len(briefs) <= MAX_PROMPTS:
            raise ValueError(f"prompt takes 1..{MAX_PROMPTS} briefs, got {len(briefs)}")
        if any(len(b) > MAX_PROMPT_CHARS for b in briefs):
            raise ValueError(f"a prompt is longer than {MAX_PROMPT_CHARS:,} characters")
        if self.stream and len(briefs) > 1:
            raise ValueError("stream takes a single prompt")
        return self


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")   # image or audio parts are refused below, by type
    type: str
    text: str | None = None


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise ValueError("only text content parts are supported")
            return "".join(p.text or "" for p in self.content)
        return self.content or ""


class ChatCompletionRequest(CopyExtras):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: StrictBool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    service_tier: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    store: StrictBool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[Literal["text"]] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prediction: dict[str, Any] | None = None
    audio: None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    moderation: str | None = None

    def brief(self) -> str:
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ValueError("messages hold no user message: the last user message is the brief")
        return users[-1].text()

    def token_cap(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @model_validator(mode="after")
    def _check(self) -> "ChatCompletionRequest":
        self._check_common()
        self._refuse_unless_neutral({"logprobs": (None, False), "top_logprobs": (None, 0), "tools": (None, []),
                                     "functions": (None, []), "tool_choice": (None, "none", "auto"),
                                     "function_call": (None, "none", "auto")})
        if self.response_format not in (None, {"type": "text"}):
            raise ValueError("response_format: only {'type': 'text'} is supported")
        if len(self.brief()) > MAX_PROMPT_CHARS:
            raise ValueError(f"the brief is longer than {MAX_PROMPT_CHARS:,} characters")
        return self


# ---- batches ----------------------------------------------------------------------------------

class BatchCreateRequest(Strict):
    input_file_id: str = Field(..., max_length=100)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None


# ---- fine-tuning ------------------------------------------------------------------------------

class FineTuningJobCreate(Strict):
    """OpenAI's fine-tuning job body; `model` is a base (emoji64, smollm2-135m, detector) and
    `suffix` names the adapter, which is then used as `base:suffix`."""

    model: StoreRef = Field(..., max_length=200)
    training_file: str = Field(..., max_length=100)
    suffix: str = Field(..., min_length=1, max_length=64)
    # scalars, and the two nested settings: {"auto": {"budget_s": ...}} and {"federated": {"sites": ...}}
    hyperparameters: dict[str, int | float | bool | str | dict[str, int | float | bool | str]] = \
        Field(default_factory=dict)
    validation_file: None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
