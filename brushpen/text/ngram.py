"""Character n-gram baselines for pretraining: an interpolated Kneser-Ney model and a unigram model.

Both score documents the way `pretrain.evaluate` scores the LM: every character of every
document plus one end-of-document symbol is predicted, and the total negative log-likelihood is
divided by that count. So `bits_per_char` here and the LM's `val_bpc` share one denominator and
can be compared directly.

Kneser-Ney (Chen & Goodman's interpolated form, one absolute discount per order): the top order
uses raw counts, lower orders use continuation counts (how many distinct characters precede an
n-gram), and every order interpolates with the one below, down to a uniform distribution over
the training alphabet plus one slot for unseen characters.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

BOS, EOS = "\x02", "\x03"  # never in text corpora; pad the start, mark the end of a document


def _events(doc: str, order: int) -> str:
    return BOS * (order - 1) + doc + EOS


class CharNGram:
    """Interpolated Kneser-Ney character n-gram model of a fixed order."""

    def __init__(self, order: int = 5):
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order = order

    def fit(self, docs: list[str]) -> "CharNGram":
        n_max = self.order
        top: Counter[str] = Counter()
        for doc in docs:
            s = _events(doc, n_max)
            for i in range(n_max - 1, len(s)):
                top[s[i - n_max + 1:i + 1]] += 1
        # counts[n]: raw counts at the top order, continuation counts below it.
        counts: dict[int, Counter[str]] = {n_max: top}
        for n in range(n_max - 1, 0, -1):
            cont: Counter[str] = Counter()
            for gram in counts[n + 1]:
                cont[gram[1:]] += 1  # one more distinct left neighbour of gram[1:]
            counts[n] = cont
        self.counts = counts
        self.ctx_total: dict[int, dict[str, int]] = {}
        self.ctx_types: dict[int, dict[str, int]] = {}
        self.discount: dict[int, float] = {}
        for n, table in counts.items():
            total: dict[str, int] = defaultdict(int)
            types: dict[str, int] = defaultdict(int)
            for gram, c in table.items():
                total[gram[:-1]] += c
                types[gram[:-1]] += 1
            self.ctx_total[n], self.ctx_types[n] = dict(total), dict(types)
            n1 = sum(1 for c in table.values() if c == 1)
            n2 = sum(1 for c in table.values() if c == 2)
            self.discount[n] = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
        alphabet = {g[-1] for g in counts[1]}
        self.vocab_size = len(alphabet) + 1  # + one slot for characters never seen in training
        return self

    def prob(self, context: str, char: str) -> float:
        """P(char | the last order-1 characters of context)."""
        p = 1.0 / self.vocab_size
        for n in range(1, self.order + 1):
            ctx = context[len(context) - (n - 1):] if n > 1 else ""
            total = self.ctx_total[n].get(ctx)
            if not total:
                continue  # an unseen context: the lower order's estimate stands
            d = self.discount[n]
            c = self.counts[n].get(ctx + char, 0)
            p = max(c - d, 0.0) / total + d * self.ctx_types[n][ctx] / total * p
        return p

    def nats(self, docs: list[str]) -> tuple[float, int]:
        """Total negative log-likelihood (nats) of docs and the number of predicted symbols."""
        total, count, k = 0.0, 0, self.order - 1
        for doc in docs:
            s = _events(doc, self.order)
            for i in range(k, len(s)):
                total -= math.log(self.prob(s[i - k:i], s[i]))
                count += 1
        return total, count

    def bits_per_char(self, docs: list[str]) -> float:
        total, count = self.nats(docs)
        return total / count / math.log(2)


class CharUnigram:
    """Add-one character unigram model: the entropy floor any sequence model must beat."""

    def fit(self, docs: list[str]) -> "CharUnigram":
        self.counts = Counter(c for doc in docs for c in doc + EOS)
        self.total = sum(self.counts.values())
        self.vocab_size = len(self.counts) + 1
        return self

    def nats(self, docs: list[str]) -> tuple[float, int]:
        total, count = 0.0, 0
        for doc in docs:
            for c in doc + EOS:
                total -= math.log((self.counts.get(c, 0) + 1) / (self.total + self.vocab_size))
                count += 1
        return total, count

    def bits_per_char(self, docs: list[str]) -> float:
        total, count = self.nats(docs)
        return total / count / math.log(2)


def baseline_report(train: list[str], val: list[str], order: int = 5) -> dict[str, float]:
    """Validation bits per character of the unigram and the n-gram model, both fit on train."""
    return {"unigram_val_bpc": CharUnigram().fit(train).bits_per_char(val),
            f"ngram{order}_val_bpc": CharNGram(order).fit(train).bits_per_char(val)}
