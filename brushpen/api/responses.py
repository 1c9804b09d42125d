"""Response bodies of the REST API, in OpenAI's shapes, as pydantic models: what /docs shows.

Each route names its model as `response_model` and serializes with `response_model_exclude_unset`,
so a key a service leaves out (`url` beside `b64_json`, a detail of another kind of model) stays
out, as before. The models forbid undeclared keys: a service answering a key the schema does not
name is an error (a 500 the tests catch), not a key passed on silently, so the schema stays true.
Streams (`stream: true`) are server-sent events of OpenAI's chunks, outside these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Out):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(Out):
    """Every 4xx and 5xx, and an error inside a stream or a batch output line."""

    error: ErrorDetail


class QueueState(Out):
    inflight: int
    running: int
    waiting: int


class Health(Out):
    status: Literal["ok"]
    version: str
    auth: bool = Field(description="whether /v1 needs the API key")
    queue: QueueState


class ModelObject(Out):
    """OpenAI's model object, plus the details that apply to the model's kind."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    task: Literal["images", "copy"]
    kind: str = Field(description="gan, diffusers, causal-lm or causal-lm+lora")
    resolution: int | None = None
    class_names: list[str] | None = None
    schedulers: list[str] | None = None
    metrics: dict[str, Any] | None = None
    source: str | None = None
    base: str | None = None
    adapter: str | None = None


class ModelList(Out):
    object: Literal["list"]
    data: list[ModelObject]


class ImageData(Out):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(Out):
    created: int
    data: list[ImageData]
    output_format: Literal["png"]
    background: Literal["opaque"]
    size: str


class Usage(Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length", "content_filter"]


class CheckVerdict(Out):
    name: str
    passed: bool
    hard: bool
    detail: str


_CHECKS = "deliberate mode: each check's verdict on this variant (brushpen.text.checks)"


class CompletionChoice(Out):
    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason
    checks: list[CheckVerdict] | None = Field(None, description=_CHECKS)


class AssistantMessage(Out):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class ChatChoice(Out):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason
    checks: list[CheckVerdict] | None = Field(None, description=_CHECKS)


_NOTES = "variants dropped after redraws, or fewer picks than asked in deliberate mode, and why"


class CompletionResponse(Out):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage
    notes: list[str] | None = Field(None, description=_NOTES)


class ChatCompletionResponse(Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage
    notes: list[str] | None = Field(None, description=_NOTES)


class FileObject(Out):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"]


class RequestCounts(Out):
    total: int
    completed: int
    failed: int


class BatchObject(Out):
    id: str
    object: Literal["batch"]
    endpoint: str
    errors: None = None
    input_file_id: str
    completion_window: str
    status: Literal["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                    "cancelled"]
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    expires_at: int | None
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None


class BatchList(Out):
    object: Literal["list"]
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FineTuningJob(Out):
    """OpenAI's `fine_tuning.job`, plus brushpen's `family` and `progress` (the last event's data)."""

    id: str
    object: Literal["fine_tuning.job"]
    model: str
    family: str
    created_at: int
    finished_at: int | None
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    training_file: str
    validation_file: None = None
    suffix: str
    hyperparameters: dict[str, Any]
    fine_tuned_model: str | None
    metrics: dict[str, Any] | None
    error: ErrorDetail | None
    result_files: list[str]
    seed: int | None
    progress: dict[str, Any] | None


class FineTuningJobList(Out):
    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool


class FineTuningEvent(Out):
    object: Literal["fine_tuning.job.event"]
    id: str
    seq: int
    created_at: int
    level: str
    message: str
    data: dict[str, Any] | None
    type: Literal["metrics", "message"]


class FineTuningEventList(Out):
    object: Literal["list"]
    data: list[FineTuningEvent]
    has_more: bool


class Detection(Out):
    """One image's check (`generators.checker.CheckResult`), plus its heatmap when asked."""

    path: str
    score: float | None
    verdict: str | None
    heatmap: str | None
    provenance: dict[str, Any]
    error: str | None
    width: int | None
    height: int | None
    tiles: int | None
    scope: str | None
    basis: str | None = None
    evidence: list[str] = []
    heatmap_b64: str | None = None


class CredentialsRow(Out):
    """One image's provenance (`generators.checker.read_credentials`)."""

    path: str
    credentials: dict[str, Any] | None
    watermark: dict[str, Any] | None
    evidence: list[str]
    error: str | None


class CredentialsResponse(Out):
    object: Literal["list"]
    data: list[CredentialsRow]


class DetectionResponse(Out):
    object: Literal["list"]
    model: str
    backend: str
    data: list[Detection]
    summary: dict[str, int] = Field(description="images per verdict, plus total and error")
