"""Copy prompts: one template per kind of copy, rendered with the model's own chat template.

Edit the `KINDS` table to change what the copywriter is asked for. Each kind has a one-line
instruction, a length hint, whether the answer is a single line (generation then stops at the
first newline) and the label the model tends to put before its answer. `{tone}` and `{audience}` slots are filled from the request, with neutral
defaults when left empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from brushpen.errors import BadParameter

SYSTEM = "You are an expert marketing copywriter. You reply with the copy only: no preamble, no notes, no quotes."


@dataclass(frozen=True)
class CopyKind:
    instruction: str      # what to write
    length: str           # the length hint given to the model
    single_line: bool     # one line of copy: generation stops at the first newline
    label: str            # a prefix the model sometimes writes ("Subject:"), stripped from answers


KINDS: dict[str, CopyKind] = {
    "headline": CopyKind("Write one punchy headline", "at most 10 words", True, "Headline"),
    "tagline": CopyKind("Write one short, memorable tagline", "at most 8 words", True, "Tagline"),
    "description": CopyKind("Write a product description", "two or three sentences", False, "Description"),
    "social": CopyKind("Write one social media post", "one to three sentences, at most two hashtags", False,
                       "Post"),
    "email-subject": CopyKind("Write one email subject line", "at most 9 words", True, "Subject"),
    "ad": CopyKind("Write a short advertisement with a call to action", "two to four sentences", False, "Ad"),
}

DEFAULT_TONE = "engaging"
DEFAULT_AUDIENCE = "a general audience"

# Tried and dropped: a worked example per kind ("Example product: ... Example answer: ..."). The
# 135M model copied the example's words into unrelated briefs ("Your money, no strings attached!"
# for a protein powder) and rambled past it; the direct form below stays on the brief more often.
USER_TEMPLATE = "{instruction} for this product: {brief}. Audience: {audience}. Tone: {tone}. Length: {length}."


def kind_spec(kind: str) -> CopyKind:
    if kind not in KINDS:
        raise BadParameter(f"unknown kind '{kind}': expected one of {', '.join(KINDS)}")
    return KINDS[kind]


def build_messages(brief: str, kind: str, tone: str | None = None, audience: str | None = None) -> list[dict]:
    spec = kind_spec(kind)
    user = USER_TEMPLATE.format(
        instruction=spec.instruction, length=spec.length, tone=(tone or DEFAULT_TONE).strip(),
        audience=(audience or DEFAULT_AUDIENCE).strip(), brief=brief.strip().rstrip("."))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def build_prompt(tokenizer, brief: str, kind: str, tone: str | None = None, audience: str | None = None) -> str:
    """The prompt text, ending where the assistant's answer starts; plain text if there is no chat template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(build_messages(brief, kind, tone, audience), tokenize=False,
                                             add_generation_prompt=True)
    # A plain LM (one pretrained here, or a user's base model) has no chat template and no system
    # turn. The brief comes last, right before the label the answer follows, so that a prompt cut
    # from the left to fit a short context window keeps the product.
    spec = kind_spec(kind)
    return (f"{spec.instruction} ({spec.length}), tone: {(tone or DEFAULT_TONE).strip()}, for "
            f"{(audience or DEFAULT_AUDIENCE).strip()}.\nProduct: {brief.strip().rstrip('.')}.\n{spec.label}:")


def spec_label(kind: str) -> str:
    return kind_spec(kind).label
