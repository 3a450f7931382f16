"""Small story-like test documents, importable from any test module as `textgen`.

Kept out of conftest.py: two conftest modules (tests/ and tests/kernels/) share the module name
`conftest`, so `from conftest import …` would depend on the order pytest collects them in.
"""

from __future__ import annotations

import random

_WORDS = (
    "the a little big happy sad dog cat bird tree ball park house friend mom dad sun day went "
    "said was very fun toy red blue girl boy loved wanted found under over played jumped ran saw "
    "with and to in on it is they we you he she"
).split()
_NAMES = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia", "Zoë", "José"]
_ODD = ["it's", "they're", "we'll", "3", "42", "1,000", "café", "naïve", "🙂", "—", "“hi”", "  ", "\t", "日本"]


def make_docs(n: int, seed: int = 0) -> list[str]:
    """`n` small story-like documents (some multi-line, some with unicode, digits, apostrophes).

    No document contains a blank line, so joining them with blank lines gives a .txt corpus with
    the same documents.
    """
    r = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(r.randint(1, 3)):
            sents = []
            for _ in range(r.randint(1, 4)):
                ws = [r.choice(_WORDS) for _ in range(r.randint(2, 9))]
                if r.random() < 0.3:
                    ws.insert(r.randint(0, len(ws)), r.choice(_ODD))
                sents.append(r.choice(_NAMES) + " " + " ".join(ws) + r.choice([".", "!", "?", ","]))
            lines.append(" ".join(sents))
        docs.append("\n".join(lines))
    return docs
