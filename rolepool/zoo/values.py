"""Argument values for the corpus's tool calls: pseudo-words, random letters, real words, numbers,
paths, document ids and Python snippets. `held_out` draws from pools disjoint from train's, by
rule (pseudo-words by hash, real words and integers by position/residue), so no test value ever
occurs in train."""

from __future__ import annotations

import random
import string
import zlib

from rolepool.zoo import phrasings

# Of the pseudo-word values, the share drawn as random letters (`Values.letters`).
LETTERS_SHARE = 0.25


class Values:
    """Draws argument values; `held_out` picks the disjoint test pools."""

    def __init__(self, rng: random.Random, held_out: bool) -> None:
        self.rng, self.held_out = rng, held_out
        words = phrasings.REAL_WORDS
        self.real = [w for i, w in enumerate(words) if (i % 4 == 3) == held_out]

    def pseudo(self) -> str:
        rng = self.rng
        while True:
            n = rng.choice((1, 2, 2, 3))
            word = "".join(
                rng.choice(phrasings.ONSETS)
                + rng.choice(phrasings.VOWELS)
                + rng.choice(phrasings.CODAS)
                for _ in range(n)
            )
            if len(word) >= 3 and self._mine(word):
                return word

    def letters(self) -> str:
        """A random string of 3-9 letters: it tokenizes into single letters and rare pieces, as
        real words and names outside the corpus do, so copying cannot lean on familiar syllables."""
        rng = self.rng
        while True:
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
            if self._mine(word):
                return word

    def _mine(self, word: str) -> bool:
        """Whether a made-up word belongs to this split: one in eight (by hash) is held out."""
        return (zlib.crc32(word.encode()) % 8 == 0) == self.held_out

    def word(self, pseudo_p: float = 0.65) -> str:
        """A pseudo-word (`pseudo_p`; `LETTERS_SHARE` of them random letters) or a real word."""
        draw = self.rng.random()
        if draw < pseudo_p * LETTERS_SHARE:
            return self.letters()
        return self.pseudo() if draw < pseudo_p else self.rng.choice(self.real)

    def phrase(self, lo: int, hi: int) -> str:
        return " ".join(self.word() for _ in range(self.rng.randint(lo, hi)))

    def number(self, lo: int, hi: int) -> int:
        pool = [n for n in range(lo, hi + 1) if (n % 7 == 3) == self.held_out]
        return self.rng.choice(pool)

    def task(self) -> str:
        if self.rng.random() < 0.3:
            return self.phrase(2, 3)
        return f"{self.rng.choice(phrasings.TASK_VERBS)} the {self.phrase(1, 2)}"

    def title(self) -> str:
        title = self.phrase(1, 3)
        return title.title() if self.rng.random() < 0.5 else title

    def path(self) -> str:
        rng = self.rng
        name = self.word() if rng.random() < 0.6 else f"{self.word()}_{self.word()}"
        parts = [rng.choice(phrasings.PATH_DIRS)] + [self.word() for _ in range(rng.randint(0, 1))]
        return "/".join(parts + [f"{name}.{rng.choice(phrasings.PATH_EXTS)}"])

    def doc_id(self) -> str:
        """`kb-123`, or a slug of words (`plis-woofus`) as the built-in collection names files."""
        if self.rng.random() < 0.4:
            return "-".join(self.pseudo() for _ in range(self.rng.randint(1, 3)))
        return f"{self.rng.choice(phrasings.DOC_PREFIXES)}-{self.number(1, 999)}"

    def code(self) -> tuple[str, str]:
        """Python source and what it prints (or the error it raises)."""
        rng = self.rng
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
        w, w2 = self.pseudo(), self.pseudo()
        kind = rng.randrange(10)
        forms: list[tuple[str, object]] = [
            (f"print({a} + {b})", a + b),
            (f"print({a} * {b})", a * b),
            (f"print({c} - {a})", c - a),
            (f"print(len('{w}'))", len(w)),
            (f"print('{w}'.upper())", w.upper()),
            (f"print(sum(range({a})))", sum(range(a))),
            (f"x = {a}; print(x * {b})", a * b),
            (f"print(max({a}, {b}, {c}))", max(a, b, c)),
            (f"print('{w}' + '{w2}')", w + w2),
            (f"print({c} / 0)", "ERROR: ZeroDivisionError: division by zero"),
        ]
        code, out = forms[kind]
        return code, str(out)
