"""Copy prompts: one template per kind of copy, in English or Korean, rendered with the model's own
chat template.

Edit the `KINDS` table to change what the copywriter is asked for (and `KINDS_KO` for Korean). Each
kind has a one-line instruction, a length hint, whether the answer is a single line (generation then
stops at the first newline) and the label the model tends to put before its answer. `{tone}` and
`{audience}` slots are filled from the request, with neutral defaults when left empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from brushpen.errors import BadParameter

SYSTEM = "You are an expert marketing copywriter. You reply with the copy only: no preamble, no notes, no quotes."
SYSTEM_KO = "당신은 전문 마케팅 카피라이터입니다. 한국어 카피만 답하세요. 서론, 설명, 따옴표는 쓰지 마세요."
LANGS = ("en", "ko")


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

# Start a one-line kind's answer with its label. Chosen on tests/data/briefs.json by
# benchmarks/copy_panel.py --panel tests/data/briefs.json (BENCHMARKS.md, "Copy on the held-out panel"):
# usable headline, tagline and email-subject variants 5 -> 12 of 30 (plain) and 13 -> 28 (deliberate);
# for the longer kinds it drew more commentary ("meta") and was dropped there (14 -> 5 plain, 21 -> 22).
PREFILL = True
DEFAULT_TONE = "engaging"
DEFAULT_AUDIENCE = "a general audience"


@dataclass(frozen=True)
class KoreanKind:
    instruction: str
    length: str           # in characters where the English hint counts words (brushpen.text.checks: 3 a word)
    label: str


# The same kinds in Korean, for `lang="ko"`. Length hints match what brushpen.text.checks counts.
KINDS_KO: dict[str, KoreanKind] = {
    "headline": KoreanKind("강렬한 헤드라인을 한 줄 쓰세요", "공백 빼고 30자 이내", "헤드라인"),
    "tagline": KoreanKind("짧고 기억에 남는 태그라인을 한 줄 쓰세요", "공백 빼고 24자 이내", "태그라인"),
    "description": KoreanKind("제품 설명을 쓰세요", "두세 문장", "설명"),
    "social": KoreanKind("소셜 미디어 게시물을 하나 쓰세요", "한 문장에서 세 문장, 해시태그는 두 개까지", "게시물"),
    "email-subject": KoreanKind("이메일 제목을 한 줄 쓰세요", "공백 빼고 27자 이내", "제목"),
    "ad": KoreanKind("행동을 유도하는 문구가 들어간 짧은 광고를 쓰세요", "두 문장에서 네 문장", "광고"),
}
DEFAULT_TONE_KO = "매력적인"
DEFAULT_AUDIENCE_KO = "일반 소비자"
USER_TEMPLATE_KO = "{instruction}. 제품: {brief}. 대상: {audience}. 어조: {tone}. 길이: {length}."

# Tried and dropped: a worked example per kind ("Example product: ... Example answer: ..."). The
# 135M model copied the example's words into unrelated briefs ("Your money, no strings attached!"
# for a protein powder) and rambled past it; the direct form below stays on the brief more often.
USER_TEMPLATE = "{instruction} for this product: {brief}. Audience: {audience}. Tone: {tone}. Length: {length}."


def kind_spec(kind: str) -> CopyKind:
    if kind not in KINDS:
        raise BadParameter(f"unknown kind '{kind}': expected one of {', '.join(KINDS)}")
    return KINDS[kind]


def check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise BadParameter(f"unknown language '{lang}': expected one of {', '.join(LANGS)}")
    return lang


def label(kind: str, lang: str = "en") -> str:
    """The word the answer follows ("Subject", "제목")."""
    return KINDS_KO[kind].label if check_lang(lang) == "ko" else kind_spec(kind).label


def build_messages(brief: str, kind: str, tone: str | None = None, audience: str | None = None,
                   lang: str = "en") -> list[dict]:
    spec = kind_spec(kind)
    if check_lang(lang) == "ko":
        ko = KINDS_KO[kind]
        user = USER_TEMPLATE_KO.format(instruction=ko.instruction, length=ko.length,
                                       tone=(tone or DEFAULT_TONE_KO).strip(),
                                       audience=(audience or DEFAULT_AUDIENCE_KO).strip(),
                                       brief=brief.strip().rstrip("."))
        return [{"role": "system", "content": SYSTEM_KO}, {"role": "user", "content": user}]
    user = USER_TEMPLATE.format(
        instruction=spec.instruction, length=spec.length, tone=(tone or DEFAULT_TONE).strip(),
        audience=(audience or DEFAULT_AUDIENCE).strip(), brief=brief.strip().rstrip("."))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def build_prompt(tokenizer, brief: str, kind: str, tone: str | None = None, audience: str | None = None,
                 lang: str = "en") -> str:
    """The prompt text, ending where the assistant's answer starts; plain text if there is no chat template.

    With `PREFILL`, a one-line kind's answer already starts with its label ("Subject:"), so the
    model goes on with the copy itself rather than a letter, a greeting or a preamble.
    """
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(build_messages(brief, kind, tone, audience, lang), tokenize=False,
                                               add_generation_prompt=True)
        return prompt + (f"{label(kind, lang)}:" if PREFILL and kind_spec(kind).single_line else "")
    # A plain LM (one pretrained here, or a user's base model) has no chat template and no system
    # turn. The brief comes last, right before the label the answer follows, so that a prompt cut
    # from the left to fit a short context window keeps the product.
    spec = kind_spec(kind)
    if check_lang(lang) == "ko":
        ko = KINDS_KO[kind]
        return (f"{ko.instruction} ({ko.length}), 어조: {(tone or DEFAULT_TONE_KO).strip()}, 대상: "
                f"{(audience or DEFAULT_AUDIENCE_KO).strip()}.\n제품: {brief.strip().rstrip('.')}.\n{ko.label}:")
    return (f"{spec.instruction} ({spec.length}), tone: {(tone or DEFAULT_TONE).strip()}, for "
            f"{(audience or DEFAULT_AUDIENCE).strip()}.\nProduct: {brief.strip().rstrip('.')}.\n{spec.label}:")
