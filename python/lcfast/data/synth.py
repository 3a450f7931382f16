"""The embedded default corpus: deterministic synthetic children's stories
(`lcfast corpus synth`, and the corpus of `lcfast demo`).

`generate_stories(n, seed)` yields `n` short stories in the style of TinyStories: a protagonist
with a name, a friend, a place, a treasured object, a problem, some dialogue, a resolution and a
moral or ending. Everything is pure Python (`random.Random(seed)`), so the text depends only on
`(n, seed, GENERATOR_VERSION)` — not on numpy or the platform.

The word inventory is built programmatically from embedded lists: nouns with plurals, verbs with
their inflections, adjectives with comparatives, adverbs, names composed from syllables, place names
composed from parts, numbers. Every list is drawn with Zipfian weights (the rank order of each list
is a fixed shuffle), so a few words are very common and a long tail of rare ones exists; together
with the function words of the templates this gives the imbalanced per-token class frequencies of
real text. The default corpus (`DEFAULT_N_STORIES`) has a few thousand word types.

`write_corpus(out_dir, n_stories, seed)` writes `out_dir/stories.txt` (one story per line, stories
separated by a blank line — no blank line inside a story) and `out_dir/corpus.json` (summary).

`ControlledCorpus(deterministic, ambiguous)` is the controlled knob, at the token level and apart
from the stories (whose output it leaves untouched): a share of tokens determined by the previous
token and a share drawn uniformly after shared cues, so the context entropy of each class is known
by construction (docs/metrics.md, "Per-class table"); `.write(dir, n_tokens)` gives a data dir
`lcfast train` and `collect` take.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import accumulate
from pathlib import Path

from lcfast import validate
from lcfast.data.datadir import DataDir
from lcfast.data.synth_words import (
    ACTIVITIES,
    ADJ_PLAIN,
    ANIMALS,
    BODY,
    COLORS,
    FAMILY,
    FEELINGS,
    FOODS,
    GREETINGS,
    IRREGULAR,
    MORALS,
    NAME_CODAS_F,
    NAME_CODAS_M,
    NAME_ONSETS,
    NATURE,
    NUMBERS,
    OBJECTS,
    PLACE_NAME_A,
    PLACE_NAME_B,
    PLACES,
    SOUNDS,
    TIMES,
    VERBS_INTR,
    VERBS_OBJ,
    WEEKDAYS,
)
from lcfast.errors import DataError, UsageError

GENERATOR_NAME = "lcfast.synth.stories"
GENERATOR_VERSION = 1
DEFAULT_N_STORIES = 10_000
DEFAULT_SEED = 0
STORIES_FILE = "stories.txt"
META_FILE = "corpus.json"

# Fixed seed of the inventory (which words exist and their frequency ranks); stories use `seed`.
_INVENTORY_SEED = 20240524

# ----------------------------------------------------------------------------------------------
# Inflection helpers
# ----------------------------------------------------------------------------------------------

_VOWELS = "aeiou"
_IRREGULAR_PLURALS = {
    "mouse": "mice", "sheep": "sheep", "deer": "deer", "fish": "fish", "goose": "geese",
    "child": "children", "tooth": "teeth", "foot": "feet", "moose": "moose", "leaf": "leaves",
    "wolf": "wolves", "knife": "knives", "shelf": "shelves", "loaf": "loaves", "octopus": "octopuses",
    "person": "people", "mommy": "mommies", "daddy": "daddies", "baby": "babies",
}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in _VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def _doubles_final(verb: str) -> bool:
    return (
        len(verb) >= 3
        and verb[-1] not in _VOWELS + "wxy"
        and verb[-2] in _VOWELS
        and verb[-3] not in _VOWELS
        and len(verb) <= 4
    )


def _past(verb: str) -> str:
    if verb in IRREGULAR:
        return IRREGULAR[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in _VOWELS:
        return verb[:-1] + "ied"
    if _doubles_final(verb):
        return verb + verb[-1] + "ed"
    return verb + "ed"


def _ing(verb: str) -> str:
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    if _doubles_final(verb):
        return verb + verb[-1] + "ing"
    return verb + "ing"


def _third(verb: str) -> str:
    if verb in ("go", "do"):
        return verb + "es"
    if verb.endswith(("s", "x", "z", "ch", "sh")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in _VOWELS:
        return verb[:-1] + "ies"
    return verb + "s"


def _comparative(adj: str) -> tuple[str, str] | None:
    if len(adj) > 7 or adj.endswith(("ful", "ous", "ing", "ed", "ic", "et")):
        return None
    if adj.endswith("y") and adj[-2] not in _VOWELS:
        return adj[:-1] + "ier", adj[:-1] + "iest"
    if adj.endswith("e"):
        return adj + "r", adj + "st"
    if _doubles_final(adj):
        return adj + adj[-1] + "er", adj + adj[-1] + "est"
    return adj + "er", adj + "est"


def _adverb(adj: str) -> str:
    if adj.endswith("y") and adj[-2] not in _VOWELS:
        return adj[:-1] + "ily"
    if adj.endswith("le"):
        return adj[:-1] + "y"
    if adj.endswith("ic"):
        return adj + "ally"
    return adj + "ly"


def _a(word: str) -> str:
    """'a' or 'an' followed by the word."""
    return ("an " if word[0] in "aeiouAEIOU" else "a ") + word


def _uniq(seq) -> list:
    seen: set = set()
    out = []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


# ----------------------------------------------------------------------------------------------
# Zipfian sampling
# ----------------------------------------------------------------------------------------------


class _Zipf:
    """Items drawn with weight 1/(rank+q)^s; the rank order is a fixed shuffle of the list."""

    __slots__ = ("items", "cum", "total")

    def __init__(self, items, inv_rng: random.Random, s: float = 1.05, q: float = 1.0, shuffle: bool = True):
        items = list(_uniq(items))
        if shuffle:
            inv_rng.shuffle(items)
        self.items = items
        self.cum = list(accumulate(1.0 / (r + q) ** s for r in range(len(items))))
        self.total = self.cum[-1]

    def __call__(self, rng: random.Random):
        return self.items[bisect_right(self.cum, rng.random() * self.total)]


class _Inventory:
    """Every word list of the generator, with Zipfian samplers (fixed, independent of the seed)."""

    def __init__(self) -> None:
        r = random.Random(_INVENTORY_SEED)
        # Curated lists are written roughly most-common first and keep that rank order;
        # composed lists (names, place names) get a fixed shuffle so no syllable dominates.
        z = lambda items, s=1.05, q=1.0: _Zipf(items, r, s=s, q=q, shuffle=False)  # noqa: E731
        zs = lambda items, s=1.0, q=2.0: _Zipf(items, r, s=s, q=q, shuffle=True)  # noqa: E731

        # Names: syllable compositions, each with a fixed pronoun set.
        fem = _uniq(a + b for a in NAME_ONSETS for b in NAME_CODAS_F)
        masc = _uniq(a + b for a in NAME_ONSETS for b in NAME_CODAS_M)
        masc = [m for m in masc if m not in set(fem)]
        self.name_f = zs(fem)
        self.name_m = zs(masc)
        self.place_name = zs([a + b for a in PLACE_NAME_A for b in PLACE_NAME_B], s=0.9, q=3.0)

        self.animal = z(ANIMALS)
        self.obj = z(OBJECTS)
        self.food = z(FOODS)
        self.place = z(PLACES)
        self.nature = z(NATURE)
        self.family = z(FAMILY, s=1.2)
        self.body = z(BODY)
        self.adj = z(ADJ_PLAIN)
        self.color = z(COLORS)
        self.feeling = z(FEELINGS)
        self.time = z(TIMES)
        self.weekday = z(WEEKDAYS, s=0.5)
        self.number = z(NUMBERS)
        self.activity = z(ACTIVITIES)
        self.moral = z(MORALS, s=0.8)
        self.greeting = z(GREETINGS)
        self.sound = z(SOUNDS)

        # Comparatives/superlatives and adverbs from adjectives.
        comp = [c for c in (_comparative(a) for a in _uniq(ADJ_PLAIN)) if c]
        self.comparative = z([c[0] for c in comp])
        self.superlative = z([c[1] for c in comp])
        self.adverb = z([_adverb(a) for a in _uniq(ADJ_PLAIN) if not a.endswith("ly")])

        # Verbs: (base, past, ing, third) tuples.
        forms = lambda v: (v, _past(v), _ing(v), _third(v))  # noqa: E731
        self.verb_obj = z([forms(v) for v in _uniq(VERBS_OBJ)])
        self.verb_intr = z([forms(v) for v in _uniq(VERBS_INTR)])

        # Plural nouns (things that come in numbers).
        self.plural_thing = z([_plural(w) for w in _uniq(ANIMALS + OBJECTS + FOODS)], s=1.0)

    def word_types(self) -> set[str]:
        """Every word the inventory can produce (lowercased), for documentation and tests."""
        out: set[str] = set()
        for s in vars(self).values():
            for it in s.items:
                for w in it if isinstance(it, tuple) else (it,):
                    out.update(x.lower() for x in _WORD_RE.findall(w))
        return out


_INV: _Inventory | None = None


def _inventory() -> _Inventory:
    global _INV
    if _INV is None:
        _INV = _Inventory()
    return _INV


# ----------------------------------------------------------------------------------------------
# Story grammar
# ----------------------------------------------------------------------------------------------

_PRON = {
    "f": ("she", "her", "her", "herself"),
    "m": ("he", "him", "his", "himself"),
    "n": ("it", "it", "its", "itself"),
}


class _Char:
    """A story character: how to name it and its pronouns (subject, object, possessive, reflexive)."""

    __slots__ = ("name", "short", "he", "him", "his", "self_", "kind")

    def __init__(self, name: str, short: str, gender: str, kind: str) -> None:
        self.name, self.short, self.kind = name, short, kind
        self.he, self.him, self.his, self.self_ = _PRON[gender]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _choose(k: float, table):
    """A weighted choice by table: the text of the first row (upper bound, text maker) whose bound
    exceeds `k` (uniform in [0, 1), drawn by the caller); bounds rise to 1.0, so a row's weight is
    its bound less the one before. Only the chosen row's maker runs, so it alone draws from the rng
    (the same draws, in the same order, as a chain of `if k < bound: return …`)."""
    for bound, make in table:
        if k < bound:
            return make()
    raise AssertionError(f"k {k} beyond the table's last bound {table[-1][0]}")


def _new_person(inv: _Inventory, rng: random.Random) -> _Char:
    if rng.random() < 0.5:
        return _Char(inv.name_f(rng), "", "f", rng.choice(("girl", "girl", "girl", "princess", "kid")))
    return _Char(inv.name_m(rng), "", "m", rng.choice(("boy", "boy", "boy", "prince", "kid")))


def _new_animal(inv: _Inventory, rng: random.Random, named: bool) -> _Char:
    animal = inv.animal(rng)
    gender = "f" if rng.random() < 0.5 else "m"
    if named:
        name = inv.name_f(rng) if gender == "f" else inv.name_m(rng)
        return _Char(name, "", gender, animal)
    return _Char(f"the {animal}", animal, gender, animal)


class _Story:
    """The entities of one story; each `_s_*` method returns one sentence."""

    __slots__ = ("inv", "rng", "hero", "pal", "place", "town", "thing", "thing_adj", "food",
                 "carer", "time", "out")

    def __init__(self, inv: _Inventory, rng: random.Random) -> None:
        self.inv, self.rng = inv, rng
        u = rng.random()
        self.hero = _new_person(inv, rng) if u < 0.7 else _new_animal(inv, rng, named=True)
        v = rng.random()
        if v < 0.45:
            self.pal = _new_person(inv, rng)
        elif v < 0.8:
            self.pal = _new_animal(inv, rng, named=True)
        else:
            self.pal = _new_animal(inv, rng, named=False)
        if self.pal.name == self.hero.name:
            self.pal = _new_animal(inv, rng, named=False)
        self.place = inv.place(rng)
        self.town = inv.place_name(rng)
        self.thing = inv.obj(rng)
        self.thing_adj = inv.adj(rng)
        self.food = inv.food(rng)
        self.carer = inv.family(rng)
        self.time = inv.time(rng)
        self.out: list[str] = []

    # -- helpers -----------------------------------------------------------------------------
    def n(self, c: _Char) -> str:
        """Name as the subject at the start of a sentence."""
        return _cap(c.name)

    # -- openings ----------------------------------------------------------------------------
    def opening(self) -> str:
        h, inv, rng = self.hero, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.35, lambda: f"Once upon a time, there was {_a(inv.adj(rng))} {h.kind} named {h.name}."),
            (0.55, lambda: (f"Once upon a time, in a {inv.adj(rng)} town called {self.town}, "
                            f"there lived {_a(h.kind)} named {h.name}.")),
            (0.7, lambda: f"{h.name} was {_a(inv.adj(rng))} {h.kind} who lived near the {self.place}."),
            (0.82, lambda: f"One {self.time}, {h.name} woke up and looked out of the window."),
            (0.92, lambda: (f"There once was {_a(h.kind)} called {h.name}. "
                            f"{_cap(h.he)} was {inv.number(rng)} years old.")),
            (1.0, lambda: f"On {inv.weekday(rng)}, {h.name} and {h.his} {self.carer} went to the {self.place}."),
        ))

    def describe(self) -> str:
        h, inv, rng = self.hero, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.3, lambda: f"{_cap(h.he)} loved to {inv.activity(rng)} with {h.his} {self.carer}."),
            (0.55, lambda: f"{_cap(h.he)} had {_a(self.thing_adj)} {self.thing} that {h.he} liked very much."),
            (0.7, lambda: f"Every day, {h.he} would {inv.verb_intr(rng)[0]} in the {self.place}."),
            (0.85, lambda: (f"{h.name} liked {inv.plural_thing(rng)} and {inv.plural_thing(rng)}, "
                            f"but {h.his} favorite thing was {h.his} {self.thing}.")),
            (1.0, lambda: (f"{_cap(h.he)} was very {inv.adj(rng)} and always "
                           f"{inv.adverb(rng)} {inv.verb_intr(rng)[1]}.")),
        ))

    # -- middle ------------------------------------------------------------------------------
    def go(self) -> str:
        h, inv, rng = self.hero, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.4, lambda: f"One {inv.time(rng)}, {h.name} went to the {self.place} with {h.his} {self.carer}."),
            (0.7, lambda: f"{h.name} {inv.adverb(rng)} walked to the {self.place} to {inv.activity(rng)}."),
            (1.0, lambda: f"{_cap(h.he)} took {h.his} {self.thing} and ran outside to the {inv.nature(rng)}."),
        ))

    def meet(self) -> str:
        h, p, inv, rng = self.hero, self.pal, self.inv, self.rng
        k = rng.random()
        if p.short:
            return _choose(k, (
                (0.5, lambda: f"There, {h.he} saw {_a(inv.adj(rng))} {p.short} sitting by the {inv.nature(rng)}."),
                (1.0, lambda: f"{_cap(h.he)} met {_a(p.short)} who looked very {inv.feeling(rng)}."),
            ))
        return _choose(k, (
            (0.5, lambda: f"There, {h.he} met {_a(p.kind)} named {p.name}."),
            (1.0, lambda: f"{h.name} saw {h.his} friend {p.name}, {_a(inv.adj(rng))} {p.kind}."),
        ))

    def talk(self) -> str:
        h, p, inv, rng = self.hero, self.pal, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.25, lambda: (f'"{inv.greeting(rng)}, {p.short or p.name}!" said {h.name}. '
                            f'"Do you want to {inv.activity(rng)} with me?"')),
            (0.45, self._answer),
            (0.6, lambda: (f'"Look at my {self.thing_adj} {self.thing}!" said {h.name}. '
                           f'"It is the {inv.superlative(rng)} {self.thing} in {self.town}."')),
            (0.75, lambda: f'{_cap(p.name)} asked, "Why are you so {inv.feeling(rng)}, {h.name}?"'),
            (0.88, lambda: (f'"I am {inv.feeling(rng)} because I want to {inv.verb_obj(rng)[0]} the {inv.obj(rng)}," '
                            f'said {h.name}.')),
            (1.0, lambda: f'"Can I have some {self.food}?" asked {p.short or p.name}. "I am so {inv.feeling(rng)}."'),
        ))

    def _answer(self) -> str:
        """The pal's answer to an invitation: yes, 7 times in 10."""
        p, inv, rng = self.pal, self.inv, self.rng
        yes = rng.random() < 0.7
        ans = "Yes, I would love to" if yes else "No, I am too " + inv.feeling(rng)
        return f'"{ans}," said {p.name}. "I love to {inv.activity(rng)}!"'

    def act(self) -> str:
        h, p, inv, rng = self.hero, self.pal, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.25, lambda: f"They {inv.verb_intr(rng)[1]} and {inv.verb_intr(rng)[1]} all {inv.time(rng)}."),
            (0.45, self._together),
            (0.6, lambda: f"They found {inv.number(rng)} {inv.plural_thing(rng)} near the {inv.nature(rng)}."),
            (0.75, lambda: f"{self.n(p)} showed {h.name} how to {inv.verb_obj(rng)[0]} {_a(inv.obj(rng))}."),
            (0.88, lambda: f"They ate {self.food} and {inv.food(rng)} under the {inv.color(rng)} {inv.nature(rng)}."),
            (1.0, lambda: f"{_cap(h.he)} was {inv.verb_intr(rng)[2]} when {h.he} heard a loud {inv.sound(rng)}."),
        ))

    def _together(self) -> str:
        h, p, inv, rng = self.hero, self.pal, self.inv, self.rng
        vo = inv.verb_obj(rng)
        return f"{h.name} and {p.name} {vo[1]} {_a(inv.adj(rng))} {inv.obj(rng)} together."

    def problem(self) -> str:
        h, p, inv, rng = self.hero, self.pal, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.2, lambda: f"But then, a strong wind blew {h.his} {self.thing} into the {inv.nature(rng)}."),
            (0.35, lambda: f"Suddenly, {p.name} fell and hurt {p.his} {inv.body(rng)}."),
            (0.5, lambda: f"But when {h.he} came back, {h.his} {self.thing} was gone."),
            (0.62, lambda: (f"Then it started to {rng.choice(('rain', 'snow', 'get dark', 'thunder'))}, "
                            f"and they could not {inv.activity(rng)}.")),
            (0.75, lambda: f"{self.n(p)} wanted the {self.thing} too, and they began to fight."),
            (0.87, lambda: f"Oh no! The {self.thing} broke into {inv.number(rng)} pieces."),
            (1.0, lambda: f"A {inv.adj(rng)} {inv.animal(rng)} took the {self.food} and ran away."),
        ))

    def feel(self) -> str:
        h, inv, rng = self.hero, self.inv, self.rng
        k = rng.random()
        f = inv.feeling(rng)
        return _choose(k, (
            (0.35, lambda: f"{h.name} felt {f}."),
            (0.55, lambda: f"{_cap(h.he)} began to cry. {_cap(h.he)} was very {f}."),
            (0.75, lambda: f"{_cap(h.he)} did not know what to do, and {h.he} felt {f} and {inv.feeling(rng)}."),
            (1.0, lambda: f'"What should I do?" {h.he} said {inv.adverb(rng)}.'),
        ))

    def resolve(self) -> str:
        h, p, inv, rng = self.hero, self.pal, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.2, lambda: (f"{self.n(p)} had an idea. They looked under the {inv.nature(rng)} "
                           f"and found the {self.thing}.")),
            (0.38, lambda: f"{h.name} said sorry to {p.name}, and they decided to share the {self.thing}."),
            (0.52, lambda: (f"{h.his.capitalize()} {self.carer} came and helped {h.him} "
                            f"{inv.verb_obj(rng)[0]} the {self.thing}.")),
            (0.66, lambda: (f"{h.name} was brave. {_cap(h.he)} {inv.verb_obj(rng)[1]} the {self.thing} "
                            f"and made it {inv.comparative(rng)} than before.")),
            (0.8, lambda: (f"They worked together to {inv.verb_obj(rng)[0]} {_a(inv.adj(rng))} {inv.obj(rng)}, "
                           "and soon everything was fine.")),
            (1.0, lambda: f"{self.n(p)} gave {h.name} a big hug, and {h.he} felt {inv.feeling(rng)} again."),
        ))

    def ending(self) -> str:
        h, p, inv, rng = self.hero, self.pal, self.inv, self.rng
        k = rng.random()
        return _choose(k, (
            (0.3, lambda: f"From that day on, {h.name} and {p.name} were best friends."),
            (0.5, lambda: f"{h.name} learned that {inv.moral(rng)}."),
            (0.68, lambda: f"The moral of the story is that {inv.moral(rng)}."),
            (0.84, lambda: (f"{h.name} went home and told {h.his} {self.carer} all about the {self.place}. "
                            f"{_cap(h.he)} was so {inv.feeling(rng)}.")),
            (1.0, lambda: (f"That night, {h.name} slept with {h.his} {self.thing} "
                           f"and dreamed of {inv.plural_thing(rng)}. The end.")),
        ))

    def build(self) -> str:
        rng = self.rng
        s = [self.opening()]
        if rng.random() < 0.85:
            s.append(self.describe())
        if rng.random() < 0.4:
            s.append(self.describe())
        s.append(self.go())
        s.append(self.meet())
        middle: list[Callable[[], str]] = [self.talk, self.act, self.talk, self.act, self.act]
        for _ in range(rng.randint(1, 4)):
            s.append(rng.choice(middle)())
        s.append(self.problem())
        s.append(self.feel())
        if rng.random() < 0.5:
            s.append(self.talk())
        s.append(self.resolve())
        if rng.random() < 0.4:
            s.append(self.act())
        s.append(self.ending())
        return " ".join(s)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[A-Za-z]+")


#: a story takes 340–860 bytes of stories.txt (mean ≈ 580): the disk estimate uses this
STORY_BYTES = 600


def _check_args(n: int, seed: int) -> None:
    validate.integer("--stories", n, min=1)
    validate.seed("--seed", seed)


def _check_disk(out: Path, n: int) -> None:
    """Refuse (UsageError) a corpus that cannot fit on the disk of `out` (checked before writing)."""
    import shutil

    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return
    need = n * STORY_BYTES
    if need > free:
        raise UsageError(f"--stories {n}: the corpus would take about {validate.fmt_bytes(need)}, more than the "
                         f"{validate.fmt_bytes(free)} free on the disk of {out}")


def generate_stories(n: int, seed: int = DEFAULT_SEED) -> Iterator[str]:
    """Yield `n` stories (each a single line of text), deterministic given (n, seed)."""
    _check_args(n, seed)
    inv = _inventory()
    rng = random.Random(f"lcfast-synth-v{GENERATOR_VERSION}:{seed}")
    for _ in range(n):
        yield _Story(inv, rng).build()


def word_counts(texts) -> Counter:
    """Lowercased word counts (words = runs of ASCII letters) over an iterable of texts."""
    c: Counter = Counter()
    for t in texts:
        c.update(w.lower() for w in _WORD_RE.findall(t))
    return c


def write_corpus(
    out_dir,
    n_stories: int = DEFAULT_N_STORIES,
    seed: int = DEFAULT_SEED,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write `out_dir/stories.txt` and `out_dir/corpus.json`; return the summary dict.

    `progress`, if given, is called with the number of stories written so far (every 500 and at the end).
    """
    _check_args(n_stories, seed)
    out = Path(out_dir)
    _check_disk(out, n_stories)
    from lcfast.io import make_dir, staged

    make_dir(out, "directory")

    t0 = time.perf_counter()
    counts: Counter = Counter()
    sha = hashlib.sha256()
    n_chars = 0
    # stories.txt and corpus.json are published together, once both are complete
    with staged() as st:
        with st.open(out / STORIES_FILE, "w", encoding="utf-8", newline="\n") as f:
            buf: list[str] = []
            for i, story in enumerate(generate_stories(n_stories, seed)):
                counts.update(w.lower() for w in _WORD_RE.findall(story))
                buf.append(story)
                n_chars += len(story)
                if len(buf) == 500:
                    chunk = "\n\n".join(buf) + ("\n\n" if i + 1 < n_stories else "\n")
                    f.write(chunk)
                    sha.update(chunk.encode("utf-8"))
                    buf.clear()
                    if progress:
                        progress(i + 1)
            if buf:
                chunk = "\n\n".join(buf) + "\n"
                f.write(chunk)
                sha.update(chunk.encode("utf-8"))
        n_words = sum(counts.values())
        meta = {
            "generator": GENERATOR_NAME,
            "generator_version": GENERATOR_VERSION,
            "n_stories": n_stories,
            "seed": seed,
            "n_words": n_words,
            "n_word_types": len(counts),
            "mean_words_per_story": n_words / n_stories,
            "n_chars": n_chars,
            "top_words": [[w, c] for w, c in counts.most_common(20)],
            "files": {"stories": STORIES_FILE},
            "format": "one story per line; stories separated by one blank line",
            "sha256": sha.hexdigest(),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        st.write_json(out / META_FILE, meta, sort_keys=False)
    if progress:
        progress(n_stories)
    return meta


def read_stories(path) -> list[str]:
    """Stories of a `stories.txt` written by `write_corpus` (blank-line-separated blocks)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from e
    return [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]


# ----------------------------------------------------------------------------------------------
# The controlled knob: a token stream whose context ambiguity is known by construction
# ----------------------------------------------------------------------------------------------

CONTROLLED_VERSION = 1
CONTROLLED_FILE = "controlled.json"


class ControlledCorpus:
    """A token-level synthetic corpus with a known share of deterministic and ambiguous classes.

    Tokens are emitted in steps. With the step probabilities chosen so that, of all tokens,
    `deterministic` are deterministic targets and `ambiguous` are ambiguous targets:

    * a deterministic pair: a cue d_i (i uniform of `n_det`), then always its own target t_i —
      t_i is determined by the previous token, context entropy 0 bits at every order;
    * an ambiguous pair: a cue (uniform of `n_amb_cues`, shared by all ambiguous targets), then a
      target drawn uniformly of `n_amb` — context entropy log2(n_amb) bits at order 1 (the known
      distribution; longer contexts are rarer, so the plug-in estimate drifts lower at high orders);
    * a filler token, uniform of `n_filler` (whatever came before).

    Ids: fillers [0, F), deterministic cues, deterministic targets, ambiguous cues, ambiguous targets,
    in that order (`ids`). `deterministic + ambiguous` ≤ 0.5 (every target needs its cue). Pure numpy
    `default_rng(seed)`: the tokens depend only on the arguments. The story corpus is untouched.
    """

    def __init__(self, deterministic: float = 0.2, ambiguous: float = 0.2, *, n_det: int = 8, n_amb: int = 8,
                 n_amb_cues: int = 4, n_filler: int = 32) -> None:
        for name, v in (("deterministic", deterministic), ("ambiguous", ambiguous)):
            validate.number(name, v, min=0, max=0.5)
        if deterministic + ambiguous > 0.5:
            raise UsageError(f"--deterministic {deterministic:g} + --ambiguous {ambiguous:g}: at most 0.5 together "
                             "(each target follows its cue)")
        for name, v in (("n_det", n_det), ("n_amb", n_amb), ("n_amb_cues", n_amb_cues), ("n_filler", n_filler)):
            validate.integer(name, v, min=1)
        self.deterministic, self.ambiguous = float(deterministic), float(ambiguous)
        self.n_det, self.n_amb, self.n_amb_cues, self.n_filler = int(n_det), int(n_amb), int(n_amb_cues), int(n_filler)
        import numpy as np

        starts = np.cumsum([0, n_filler, n_det, n_det, n_amb_cues, n_amb])
        names = ("filler", "det_cue", "det_target", "amb_cue", "amb_target")
        #: name → int64 array of the ids of that kind
        self.ids = {n: np.arange(starts[i], starts[i + 1], dtype=np.int64) for i, n in enumerate(names)}
        self.vocab_size = int(starts[-1])

    def expected_entropy(self) -> dict[str, float]:
        """The order-1 context entropy of each target kind by construction (bits)."""
        import math

        return {"det_target": 0.0, "amb_target": math.log2(self.n_amb)}

    def tokens(self, n_tokens: int, seed: int = DEFAULT_SEED):
        """int64 [n_tokens]: the stream (cut at n_tokens; the last pair may lose its target)."""
        import numpy as np

        n_tokens = validate.integer("n_tokens", n_tokens, min=1)
        validate.seed("seed", seed)
        rng = np.random.default_rng([CONTROLLED_VERSION, seed])
        rest = 1.0 - self.deterministic - self.ambiguous
        # step probabilities: a pair is 2 tokens, so u_pair = share / rest gives the token shares asked for
        u_det, u_amb = self.deterministic / rest, self.ambiguous / rest
        steps = n_tokens  # ≥ the steps needed: every step emits at least one token
        u = rng.random(steps)
        kind = np.where(u < u_det, 1, np.where(u < u_det + u_amb, 2, 0))
        i_det = rng.integers(0, self.n_det, steps)
        q = rng.integers(0, self.n_amb_cues, steps)
        a = rng.integers(0, self.n_amb, steps)
        f = rng.integers(0, self.n_filler, steps)
        first = np.where(kind == 1, self.ids["det_cue"][i_det],
                         np.where(kind == 2, self.ids["amb_cue"][q], self.ids["filler"][f]))
        second = np.where(kind == 1, self.ids["det_target"][i_det], self.ids["amb_target"][a])
        length = np.where(kind == 0, 1, 2)
        out = np.empty(int(length.sum()), dtype=np.int64)
        pos = np.cumsum(length) - length
        out[pos] = first
        out[pos[kind > 0] + 1] = second[kind > 0]
        return out[:n_tokens]

    #: peak bytes per token of `tokens` (five int64/float64 arrays of the steps, the stream)
    BYTES_PER_TOKEN = 64

    def write(self, out_dir, n_tokens: int, seed: int = DEFAULT_SEED, val_fraction: float = 0.1) -> dict:
        """A data dir `lcfast train` and `collect` take: out_dir/train.lcshard and val.lcshard (one
        document each: the first 1 − val_fraction of the stream, then the rest; no tokenizer) and
        out_dir/controlled.json (the knob and the ids of each kind), published together.
        Returns that summary dict (with "train" and "val" paths)."""
        from lcfast.data.shards import write_shard
        from lcfast.io import make_dir, staged

        n_tokens = validate.integer("n_tokens", n_tokens, min=2)
        validate.seed("seed", seed)
        validate.number("val_fraction", val_fraction, min=0, max=1, min_open=True, max_open=True)
        need = self.BYTES_PER_TOKEN * n_tokens
        have, where = validate.available_memory()
        if need > have:
            raise UsageError(f"--tokens {n_tokens}: needs about {validate.fmt_bytes(need)}, more than the "
                             f"{validate.fmt_bytes(have)} {where}")
        out = Path(out_dir)
        s = self.tokens(n_tokens, seed)
        cut = min(max(int(round(len(s) * (1 - val_fraction))), 1), len(s) - 1)  # both shards non-empty
        meta = {
            "generator": "lcfast.synth.controlled", "version": CONTROLLED_VERSION, "seed": int(seed),
            "n_tokens": int(len(s)), "train_tokens": cut, "val_tokens": int(len(s) - cut),
            "deterministic": self.deterministic, "ambiguous": self.ambiguous, "n_det": self.n_det,
            "n_amb": self.n_amb, "n_amb_cues": self.n_amb_cues, "n_filler": self.n_filler,
            "vocab_size": self.vocab_size, "expected_entropy_bits": self.expected_entropy(),
            "ids": {k: [int(v[0]), int(v[-1]) + 1] for k, v in self.ids.items()},  # [first, end)
        }
        make_dir(out, "directory")
        d = DataDir(out)
        with staged() as st:  # shards and summary appear together, or not at all
            write_shard(st.path(d.train), [s[:cut]], self.vocab_size)
            write_shard(st.path(d.val), [s[cut:]], self.vocab_size)
            st.write_json(out / CONTROLLED_FILE, meta, sort_keys=False)
        return {**meta, "train": d.train, "val": d.val}
