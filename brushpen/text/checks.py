"""Explainable checks on generated copy: can a marketer use it as written?

Each check is one small function that returns a `Check` (its name, whether it passed, whether it is
hard, a one-line `detail` a person can verify by eye, and a 0..1 `score`). `check_copy` runs them all
on one candidate; `usable` says whether every hard check passed and the copy is on the brief; `score`
ranks candidates, usable ones first. Every rule is deliberately crude and written out below, so a
failure can be explained in a sentence ("number '24' is not in the brief (its numbers: 30)"). Pure Python: no
model is loaded. English and Korean (`lang="ko"`) copy are supported; Korean length is counted in
characters, and Korean has no capitals, so only its numbers (and any Latin names) are fact-checked.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from brushpen.errors import BadParameter
from brushpen.text.prompts import kind_spec

LANGS = ("en", "ko")
ON_BRIEF_MIN_HITS = 1          # brief words the copy must name to be on the brief
ON_BRIEF_FULL_HITS = 3         # ... and the number that gives it a full on_brief score
DISTINCT_MAX_JACCARD = 0.6     # token-set overlap above which two variants are near-duplicates
KO_CHARS_PER_WORD = 3          # a Korean word limit in characters (spaces not counted): 10 words -> 30
EN_WORDS_PER_SENTENCE = 30     # a sentence-counted kind may still not run on: at most 30 words a sentence
KO_CHARS_PER_SENTENCE = 60     # ... and at most 60 characters a sentence in Korean

COMMON_WORDS_FILE = Path(__file__).with_name("common_words.txt")
SUFFIXES = ("s", "es", "ed", "d", "ing", "ly", "er", "ers", "est", "ness", "ful", "less", "able", "y", "ity")
WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
ORDINALS = {w: i for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split(), 1)}
WORD_VALUES = {**NUMBER_WORDS, **TENS, **ORDINALS, "dozen": 12, "hundred": 100, "thousand": 1000, "half": 50}
STOP_WORDS = frozenset("""a an the and or but nor of in on at to for with by from as into onto about over under
after before per via up down out off is are was were be been being it its this that these those your you our
we us their they them his her he she my me all any each every some more most very just only also than then
now new so such not no can will would could should may might must has have had do does did get gets got
make makes made who what which when where while how there here what's it's that's""".split())
# Words that count for one another on the brief: a light synonym table, bidirectional within a group.
RELATED = (
    ("bike", "bicycle", "cycle", "cycling", "ride", "pedal", "wheel", "car"),  # the car is what a bike sells against
    ("kid", "child", "children", "family", "little"), ("shopping", "grocery", "groceries", "errand"),
    ("discount", "off", "sale", "save", "saving", "deal", "offer"), ("free", "complimentary"),
    ("noise", "quiet", "silence", "peace"), ("dog", "pup", "puppy", "pooch", "pet"), ("cat", "kitten", "pet"),
    ("phone", "smartphone", "mobile"), ("laptop", "computer", "notebook"), ("home", "house"),
    ("class", "lesson", "course", "session", "workshop"), ("volunteer", "help", "helper"),
    ("donate", "donation", "give", "giving"), ("warranty", "guarantee"), ("fitness", "workout", "exercise", "gym"),
    ("insurance", "cover", "coverage", "protection"),
)
KO_PARTICLES = sorted("""에서는 에서 으로 부터 까지 에게 처럼 보다 하는 하고 이며 이고 입니다 합니다 은 는 이 가 을 를 에 의 와
과 도 로 만 한 된 할""".split(), key=len, reverse=True)
KO_STOP_WORDS = frozenset("위한 위해 있는 하는 모든 및 등 대상 그리고 이번 다음 첫".split())
PLACEHOLDERS = (
    ("square brackets", re.compile(r"\[(?!광고\])[^\[\]\n]{1,60}\]")),
    ("angle brackets", re.compile(r"<[^<>\n]{1,60}>")),
    ("curly braces", re.compile(r"\{[^{}\n]{0,60}\}")),
    ("template name", re.compile(r"\b(?:Your|Company|Product|Brand|Business|Store|Shop|Customer|Recipient|First|Last)"
                                 r"\s+Name\b|\bYour Company\b")),
    ("filler", re.compile(r"(?i:\blorem ipsum\b)|\bX{2,}\b|[$£€]\s?X+\b")),
    ("Korean blank", re.compile(r"[○◯]{2,}|(?<![A-Za-z])O{2,}(?![A-Za-z])|회사명|상호명|제품명|브랜드명|고객명")),
)
OPENERS = (
    ("letter greeting", re.compile(r"dear\b|친애하는|존경하는", re.I)),
    ("greeting", re.compile(r"(?:hi|hey|hello|greetings|howdy)(?:\s+(?:there|everyone|everybody|all|guys|folks|"
                            r"friends|team|y'all))?(?=\s*[,!.?:]|\s*$)|안녕", re.I)),
    ("chatbot reply", re.compile(r"(?:sure|certainly|absolutely|of course|okay|ok|great question|no problem|alright)"
                                 r"(?=\s*[,!.:]|\s*$)|here (?:is|are)\b|here['’]s\s+(?:a|an|my|some|your|the)\s+"
                                 r"(?:\w+\s+){0,3}?(?:headline|tagline|subject|description|post|ad|advert|copy|"
                                 r"version|option|caption|draft|suggestion|idea)s?\b|(?:네|물론|알겠습니다)(?=\s*[,!.]|"
                                 r"\s*$)|물론입니다|다음은|여기 있습니다|아래는", re.I)),
    ("first person", re.compile(r"(?:i['’]m|i am|i['’]ve|i have|i['’]d|i['’]ll|i will|my name is)\b|저는|제 이름은",
                                re.I)),
    ("assistant persona", re.compile(r"as (?:an?|your)\s+(?:\w+\s+){0,3}?(?:ai|assistant|language model|copywriter|"
                                     r"marketer|writer|expert)\b", re.I)),
)
COPY_NOUN = (r"(?:headline|tagline|subject line|email subject|product description|description|social media post|"
             r"post|ad copy|ad|advertisement|copy|caption|slogan|message)")
META = (
    ("names the copy", re.compile(r"\b(?:this|my|above|following|these)\s+(?:\w+\s+)?(?:headline|tagline|"
                                  r"subject line|email subject|product description|social media post|ad copy|"
                                  r"advertisement|caption|slogan)s?\b", re.I)),
    ("explains the copy", re.compile(rf"\b{COPY_NOUN}s?\s+(?:(?:is|was|are)\s+(?:designed|intended|meant|crafted|"
                                     r"written|tailored|aimed|created)|aims|seeks|targets|highlights|emphasi[sz]es|"
                                     r"captures|conveys|appeals|evokes)\b", re.I)),
    ("marketing jargon", re.compile(r"\btarget(?:ed)? (?:audience|market|demographic)\b|\bengag\w* (?:the|your|our) "
                                    r"(?:audience|readers?)\b|\bcall[- ]to[- ]action\b|\bbrand voice\b|"
                                    r"\btone of voice\b|타[깃겟]\s*(?:고객|층|오디언스)", re.I)),
    ("note or label", re.compile(r"(?:^|\n|\(|[.!?]\s)\s*(?:note|notes|explanation|rationale|disclaimer|word count|"
                                 r"character count|tone|audience|length|alternatives?|option \d|version \d|"
                                 r"variation \d|headline|tagline|subject line|subject|description|caption|"
                                 r"참고|설명|주의)\s*:", re.I)),
    ("sign-off", re.compile(r"\bI hope (?:this|these|that)\b|\blet me know if\b|\bhope this helps\b|"
                            r"\bfeel free to (?:adjust|modify|change|customi[sz]e|tweak)\b", re.I)),
    ("word count", re.compile(r"\(\s*\d+\s*(?:words?|characters?)\s*\)", re.I)),
    ("self-introduction", re.compile(r"\b(?:I am|I['’]m)\b[^.!?\n]{0,40}\b(?:copywriter|marketer|assistant|AI)\b")),
    ("Korean meta", re.compile(r"이\s*(?:헤드라인|태그라인|문구|카피|광고|설명|게시물|제목)(?:은|는|이|가|을|를)")),
)
NUMBER = re.compile(r"(?<![\d.,])(\d+(?:,\d{3})*(?:\.\d+)?)(?:\s?(억|만|천))?")
KO_UNIT = {"억": 10**8, "만": 10**4, "천": 10**3}
NUMBER_WORD = re.compile(rf"\b(?:(?:{'|'.join(TENS)})(?:[\s-](?:{'|'.join(list(NUMBER_WORDS)[1:10])}))?|"
                         rf"{'|'.join(sorted(WORD_VALUES, key=len, reverse=True))})\b", re.I)
UNIT_AFTER = re.compile(r"[\s-]*(?:percent|per cent|hours?|hrs?|minutes?|mins?|days?|nights?|weeks?|months?|years?|"
                        r"seconds?|dollars?|euros?|pounds?|pence|cents?|miles?|km|kg|grams?|litres?|liters?|cups?|"
                        r"people|times)\b", re.I)
SENTENCE_BREAK = re.compile(r"(?<=[.!?…。])[\"'”’)\]]*\s+|\n+")
HASHTAG = re.compile(r"#[^\W_]+")
BOUNDARY = set(".!?:;…—–\n\"“”‘(«[•|*")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    hard: bool      # a hard check failing makes the copy unusable as written
    detail: str     # what was found, in words a reviewer can verify
    score: float    # 0..1, for ranking; 1.0 or 0.0 for pass/fail checks


def _pass_fail(name: str, problems: list[str], ok: str) -> Check:
    return Check(name, not problems, True, "; ".join(problems) or ok, 0.0 if problems else 1.0)


# ---- words, stems and numbers -----------------------------------------------------------------------

def _stem(word: str) -> str:
    """A light English stem: "bakeries"/"bakery"/"baked"/"baking" -> "bak", "shoes" -> "sho"."""
    w = word.lower().replace("’", "'")
    w = w[:-2] if w.endswith("'s") else w
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ery", ""), ("ing", ""), ("ers", ""), ("er", ""),
                         ("ed", ""), ("es", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and (suffix != "es" or w[-3] in "sxzh"):
            w = w[:-len(suffix)] + repl
            break
    else:
        if w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
            w = w[:-1]
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "ls":
        w = w[:-1]   # "shopp" -> "shop", "runn" -> "run"
    return w


def _same_word(a: str, b: str) -> bool:
    """Equal stems, or one stem starting the other when the shorter has 5+ letters ("electric(ity)")."""
    sa, sb = _stem(a), _stem(b)
    short, long_ = sorted((sa, sb), key=len)
    return sa == sb or (len(short) >= 5 and long_.startswith(short))


@lru_cache(maxsize=1)
def _related() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for group in RELATED:
        for word in group:
            table.setdefault(_stem(word), set()).update(_stem(w) for w in group)
    return {k: frozenset(v) for k, v in table.items()}


@lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    lines = COMMON_WORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _is_common(word: str) -> bool:
    """A common lower-case English word, or one with a common root: "unbeatable" -> "beat",
    "serenity" -> "serene", "customised" -> "customized"."""
    common, w = _common_words(), word.lower()
    forms = {w, re.sub(r"is(e[sd]?|ing)$", r"iz\1", w)}
    forms |= {f[len(p):] for f in list(forms) for p in ("un", "re", "pre") if f.startswith(p) and len(f) - len(p) >= 4}
    forms |= {f[:-len(s)] + e for f in list(forms) for s in SUFFIXES if f.endswith(s) and len(f) - len(s) >= 3
              for e in ("", "e")}
    return any(f in common for f in forms)


def _numbers(text: str, with_words: bool) -> list[tuple[str, set[float]]]:
    """Each number in `text` as written, with the values it may stand for.

    Digits always count ("1,299" -> 1299, "3만" -> 3 or 30000, "2만 5천" also 25000). Number words
    count where `with_words` (the brief: "two kids", "a dozen", "first Friday"), and otherwise only
    before a unit ("twenty-four hours"), since "one" and "first" are everyday words in copy.
    """
    found: list[tuple[str, set[float]]] = []
    last_ko: tuple[int, float] | None = None   # end and value of the last Korean "N만"-style number
    for m in NUMBER.finditer(text):
        value = float(m.group(1).replace(",", ""))
        values = {value}
        if m.group(2):
            scaled = value * KO_UNIT[m.group(2)]
            values.add(scaled)
            if last_ko and text[last_ko[0]:m.start()].strip() == "" and last_ko[1] > scaled:
                values.add(last_ko[1] + scaled)
                found[-1][1].add(last_ko[1] + scaled)
            last_ko = (m.end(), scaled)
        found.append((m.group(0), values))
    for m in NUMBER_WORD.finditer(text):
        if not with_words and not UNIT_AFTER.match(text, m.end()):
            continue
        value = float(sum(WORD_VALUES[part] for part in re.split(r"[\s-]+", m.group(0).lower())))
        found.append((m.group(0), {value, 0.5} if value == 50 and m.group(0).lower() == "half" else {value}))
    return found


def _is_number(word: str) -> bool:
    return any(c.isdigit() for c in word) or bool(NUMBER_WORD.fullmatch(word))


def _sentence_initial(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t")
    return not before or before[-1] in BOUNDARY or before.endswith(" -")


# ---- the checks -------------------------------------------------------------------------------------

def on_brief(text: str, brief: str, lang: str = "en") -> Check:
    """The copy names the brief's content words (stop words and numbers left out), or simple variants
    of them: plural/singular, -ing/-ed forms, a shared 5+ letter stem, or a word of the `RELATED`
    table. Korean words match on their first syllables, particles stripped. Soft: the score is
    hits / min(3, content words), and the check passes at `ON_BRIEF_MIN_HITS` hits."""
    if lang == "ko":
        words = _korean_content_words(brief)
        squashed = re.sub(r"\s+", "", text.lower())
        hits = {w: w for w in words if w[:max(2, len(w) - 1)] in squashed}
    else:
        words = list(dict.fromkeys(w.lower() for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)?", brief)
                                   if len(w) >= 3 and w.lower() not in STOP_WORDS and not _is_number(w)))
        copy_words = [w.lower() for w in re.findall(r"[^\W_]+", text)]
        related = _related()
        hits = {}
        for w in words:
            friends = related.get(_stem(w), frozenset())
            match = next((c for c in copy_words if _same_word(w, c) or _stem(c) in friends), None)
            if match:
                hits[w] = match
    if not words:
        return Check("on_brief", True, False, "the brief has no content words to look for", 1.0)
    found = ", ".join(w if w == c else f"{w} (as {c})" for w, c in hits.items()) or "none"
    missing = ", ".join(w for w in words if w not in hits) or "none"
    value = min(1.0, len(hits) / min(ON_BRIEF_FULL_HITS, len(words)))
    return Check("on_brief", len(hits) >= ON_BRIEF_MIN_HITS, False, f"found: {found}; missing: {missing}", value)


def _korean_content_words(brief: str) -> list[str]:
    words = []
    for w in WORD.findall(brief):
        if any(c.isdigit() for c in w):
            continue
        for particle in KO_PARTICLES:
            if w.endswith(particle) and len(w) - len(particle) >= 2:
                w = w[:-len(particle)]
                break
        if len(w) >= 2 and w not in KO_STOP_WORDS:
            words.append(w.lower())
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class LengthSpec:
    unit: str                    # "words" or "sentences"
    lo: int
    hi: int
    max_hashtags: int | None = None


def length_spec(kind: str) -> LengthSpec:
    """The kind's length hint from `prompts.KINDS`, read as numbers ("at most 10 words")."""
    hint = kind_spec(kind).length.lower()
    tags = re.search(r"at most (\w+) hashtags?", hint)
    max_tags = _count(tags.group(1)) if tags else None
    if m := re.search(r"at most (\w+) words?", hint):
        return LengthSpec("words", 1, _count(m.group(1)), max_tags)
    if m := re.search(r"(\w+) (?:or|to) (\w+) sentences?", hint):
        return LengthSpec("sentences", _count(m.group(1)), _count(m.group(2)), max_tags)
    if m := re.search(r"(\w+) sentences?", hint):
        return LengthSpec("sentences", _count(m.group(1)), _count(m.group(1)), max_tags)
    raise ValueError(f"cannot read a length from the {kind} hint {hint!r}: teach length_spec the new form")


def _count(s: str) -> int:
    return int(s) if s.isdigit() else NUMBER_WORDS[s]


def length(text: str, kind: str, lang: str = "en") -> Check:
    """Fits the kind's length hint: words for English, characters (spaces not counted,
    `KO_CHARS_PER_WORD` a word) for Korean; for sentence-counted kinds, the sentence range (hashtags
    left out) and no run-on sentences; and no more hashtags than the hint allows."""
    spec, problems = length_spec(kind), []
    chars = len(re.sub(r"\s+", "", text))
    if spec.unit == "words":
        if lang == "ko":
            size, limit, what = chars, spec.hi * KO_CHARS_PER_WORD, "characters"
        else:
            size, limit, what = len([t for t in text.split() if WORD.search(t)]), spec.hi, "words"
        if not 1 <= size <= limit:
            problems.append(f"{size} {what}; the {kind} allows 1 to {limit}")
        got = f"{size} {what}"
    else:
        body = HASHTAG.sub("", text)
        count = len([s for s in SENTENCE_BREAK.split(body) if WORD.search(s)])
        if not spec.lo <= count <= spec.hi:
            problems.append(f"{count} sentences; the {kind} asks for {spec.lo} to {spec.hi}")
        size, limit, what = ((chars, spec.hi * KO_CHARS_PER_SENTENCE, "characters") if lang == "ko" else
                             (len(body.split()), spec.hi * EN_WORDS_PER_SENTENCE, "words"))
        if size > limit:
            problems.append(f"{size} {what}; at most {limit} for {spec.hi} sentences")
        got = f"{count} sentences, {size} {what}"
    tags = len(HASHTAG.findall(text))
    if spec.max_hashtags is not None and tags > spec.max_hashtags:
        problems.append(f"{tags} hashtags; at most {spec.max_hashtags}")
    return _pass_fail("length", problems, f"{got}: fits the {kind}")


def placeholders(text: str) -> Check:
    """No template slot left for someone to fill: [...], <...>, {...}, "Your Name", "Company Name",
    "XX%", lorem ipsum, Korean "OOO"/"회사명". Hard."""
    problems = [f"{name}: {m.group(0)!r}" for name, rx in PLACEHOLDERS for m in rx.finditer(text)]
    return _pass_fail("placeholders", problems, "no placeholders")


def opener(text: str) -> Check:
    """Does not open like a letter or a chatbot: "Dear", "Hi there", "Hey everyone", "Sure!",
    "Here is", "Certainly", "As a copywriter", "I'm ...". ("Hey dog lovers!" and "Absolutely
    delicious" pass; a bare "Hello," does not.) Hard."""
    start = re.sub(r"^[\W_]+", "", text.strip())
    problems = [f"{name}: {m.group(0)!r}" for name, rx in OPENERS if (m := rx.match(start))]
    return _pass_fail("opener", problems[:1], "no letter or chatbot opener")


def meta(text: str) -> Check:
    """No commentary about the copy itself ("This headline ...", "... is designed to engage the
    target audience", "Note:", a second label), and no stray unmatched quote mark. Hard."""
    problems = [f"{name}: {m.group(0).strip()!r}" for name, rx in META if (m := rx.search(text))]
    problems += [f"stray quote: {q}" for q in _stray_quotes(text)]
    return _pass_fail("meta", problems, "no commentary or stray quotes")


def _stray_quotes(text: str) -> list[str]:
    stray = []
    if text.count('"') % 2:
        stray.append("an odd number of \"")
    if text.count("“") != text.count("”"):
        stray.append("unpaired “ ”")
    body = text.strip()
    if body and body[0] in "'‘" and not re.search(r"['’](?!\w)", body[1:]):
        stray.append(f"an opening {body[0]} never closed")
    if re.search(r"[.!?]['’]$", body) and not re.search(r"(?:^|\s)['‘]\w", body):
        stray.append(f"a closing {body[-1]} never opened")
    return stray


def invented_facts(text: str, brief: str) -> Check:
    """No number, price, percentage or duration whose value is not in the brief ("30-hour" matches
    "30 hours", "40%" matches "40 percent"), and no capitalised name absent from the brief. A
    capitalised word is a name unless it starts a sentence (or follows ":", a dash, a quote), is
    a word of the brief, or is a common English word (`common_words.txt`), so Title Case such as
    "Final Weekend Sale" passes and "New York City" does not. Hard."""
    brief_numbers = _numbers(brief, with_words=True)
    known = set().union(*(v for _, v in brief_numbers))
    said = ", ".join(dict.fromkeys(w.strip() for w, _ in brief_numbers)) or "none"
    problems = []
    for written, values in _numbers(text, with_words=False):
        if not any(abs(v - k) < 1e-9 for v in values for k in known):
            problems.append(f"number {written.strip()!r} is not in the brief (its numbers: {said})")
    brief_words = [w.lower() for w in re.findall(r"[A-Za-z]+", brief)]
    for name, context in _names(text):
        if not any(_same_word(name, b) for b in brief_words):
            problems.append(f"name {name!r}{f' (in {context!r})' if context != name else ''} is not in the brief")
    return _pass_fail("invented_facts", problems, "every number and name is in the brief")


def _names(text: str) -> list[tuple[str, str]]:
    """(word, its run of capitalised words) for each capitalised Latin word that may be a name."""
    spans = []   # (word, start, end, initial)
    for m in re.finditer(r"#[^\W_]+|[A-Za-z]+(?:['’][A-Za-z]+)?", text):
        if m.group(0).startswith("#"):   # hashtag: its CamelCase parts, never sentence-initial
            for part in re.finditer(r"[A-Z][a-z]+|[A-Z]+(?![a-z])", m.group(0)):
                spans.append((part.group(0), m.start() + part.start(), m.start() + part.end(), False))
            continue
        word = re.sub(r"['’](?:s|re|ve|ll|d|m|t)$", "", m.group(0))
        spans.append((word, m.start(), m.end(), _sentence_initial(text, m.start())))
    def capital_pair(a: int, b: int) -> bool:   # spans a and b both capitalised, with only spaces between
        return spans[a][0][0].isupper() and spans[b][0][0].isupper() and not text[spans[a][2]:spans[b][1]].strip()

    names = []
    for i, (word, _, _, initial) in enumerate(spans):
        if initial or len(word) < 2 or not word[0].isupper() or word == "I" or _is_common(word):
            continue
        lo, hi = i, i
        while lo > 0 and capital_pair(lo - 1, lo):
            lo -= 1
        while hi + 1 < len(spans) and capital_pair(hi, hi + 1):
            hi += 1
        names.append((word, text[spans[lo][1]:spans[hi][2]]))
    return names


def repetition(text: str) -> Check:
    """No loops: no word 3-gram twice, no word three times in a row, no list item ("eco-friendly,
    eco-friendly, eco-friendly") three times. Hard."""
    words = [w.lower() for w in WORD.findall(text)]
    problems = []
    runs = [words[i] for i in range(len(words) - 2) if words[i] == words[i + 1] == words[i + 2]]
    problems += [f"{w!r} three times in a row" for w in dict.fromkeys(runs)]
    grams = Counter(zip(words, words[1:], words[2:]))
    problems += [f"{' '.join(g)!r} {n} times" for g, n in grams.items() if n > 1]
    items = Counter(" ".join(WORD.findall(s.lower())) for s in re.split(r"[,;/|·•]|\b(?:and|or)\b", text))
    problems += [f"list item {item!r} {n} times" for item, n in items.items() if item and n >= 3 and item not in runs]
    return _pass_fail("repetition", problems, "no repeated phrases")


def _tokens(text: str, lang: str) -> set[str]:
    if lang == "ko":   # Korean words carry particles: compare character pairs instead
        s = re.sub(r"[\W_]+", "", text.lower())
        return {s[i:i + 2] for i in range(len(s) - 1)} or {s}
    return {w.lower() for w in WORD.findall(text)}


def distinct(text: str, picked: Sequence[str], lang: str = "en") -> Check:
    """Not a near-duplicate of a variant already picked: token-set Jaccard at most
    `DISTINCT_MAX_JACCARD` (character pairs for Korean). Hard."""
    mine = _tokens(text, lang)
    best, closest = 0.0, ""
    for other in picked:
        theirs = _tokens(other, lang)
        jaccard = len(mine & theirs) / max(len(mine | theirs), 1)
        if jaccard > best:
            best, closest = jaccard, other
    if best > DISTINCT_MAX_JACCARD:
        return Check("distinct", False, True, f"{best:.2f} overlap with {closest!r}", 0.0)
    return Check("distinct", True, True, f"largest overlap {best:.2f}" if picked else "nothing picked yet", 1.0)


# ---- all together -----------------------------------------------------------------------------------

def check_copy(text: str, brief: str, kind: str, lang: str = "en", picked: Sequence[str] = ()) -> list[Check]:
    """Every check on one candidate `text` written for `brief` as `kind` copy in `lang`, against the
    variants already `picked` for the same request."""
    kind_spec(kind)
    if lang not in LANGS:
        raise BadParameter(f"unknown language '{lang}': expected one of {', '.join(LANGS)}")
    return [on_brief(text, brief, lang), length(text, kind, lang), placeholders(text), opener(text), meta(text),
            invented_facts(text, brief), repetition(text), distinct(text, picked, lang)]


def usable(checks: Sequence[Check]) -> bool:
    """Copy a marketer can use as written: every hard check passed and it is on the brief."""
    return all(c.passed for c in checks if c.hard or c.name == "on_brief")


def score(checks: Sequence[Check]) -> float:
    """A ranking score in [0, 2]: 1 for usable copy, plus the mean of the checks' scores, so every
    usable candidate outranks every unusable one and the on_brief score breaks ties."""
    return float(usable(checks)) + sum(c.score for c in checks) / max(len(checks), 1)
