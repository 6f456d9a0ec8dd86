"""Sentences and frame labels shared by the lip-sync benchmark and the audio-model fit.

The training and held-out sentences are disjoint; the held-out set also uses voices the
training set does not.
"""

from __future__ import annotations

import numpy as np

TRAIN_SENTENCES = [
    ("en-us", "The quick brown fox jumps over the lazy dog near the bank of the river."),
    ("en-us", "Please bring me a bottle of milk and a box of biscuits from the market."),
    ("en-us+f3", "My mother baked a big apple pie for the family picnic on Sunday."),
    ("en-us+m3", "Maybe we should stop by the museum before the rain begins, then go home."),
    ("en-gb", "Bob bought a pair of blue boots, but they were a bit too big for him."),
    ("en-us+f2", "Nobody expected the impossible problem to be solved by a simple map."),
    ("en-us", "Happy birthday, Emma! Here is a puppy, a poem and a purple balloon."),
    ("en-us+m2", "Whenever I think about the summer, I remember the beach and the warm sun."),
    ("en-gb+f3", "Paul might miss the bus, so he may be late for the important meeting."),
    ("en-us", "Numbers like seven hundred and fifty-two are spoken slowly and clearly."),
    ("de", "Bitte bring mir morgen um acht Uhr ein Brot und ein paar Milchbrötchen."),
    ("es", "Mi madre compró muchas manzanas y un pan blanco en el mercado por la mañana."),
    ("fr", "Mon petit frère mange une pomme pendant que papa boit un bon café."),
    ("it", "Il bambino mangia una mela e beve un bicchiere di latte prima di dormire."),
    ("pt", "O menino bebeu um copo de leite e comeu pão com manteiga pela manhã."),
    ("en-us+f4", "Every morning the baker opens his shop and sells bread, buns and pastries."),
]

TEST_SENTENCES = [
    ("en-us", "Peter Piper picked a peck of pickled peppers from the big basket."),
    ("en-us+f1", "I am happy to meet you. My name is Emily, and I build robots."),
    ("en-gb+m1", "The problem with maps is that they simplify a complex world."),
    ("en-us+m4", "Before breakfast, Ben jumped into the pool and swam a mile."),
    ("en-us", "Remember to bring an umbrella, because it might rain this afternoon."),
    ("en-us+f5", "Members of the public may submit comments by email or by post."),
    ("en-gb", "A moment of silence, please. Then we begin the performance."),
    ("en-us+m1", "Maps, books and pictures of mountains covered the wooden tables."),
    ("en-us", "Sometimes the simplest explanation is the best one, but not always."),
    ("en-us+f1", "We will probably meet them at the bus stop by the pharmacy at nine."),
    ("en-gb+f2", "Bamboo grows remarkably fast in warm and humid climates."),
    ("en-us+m5", "Please compare the prices before you buy a new phone, my friend."),
]

FRAME = 0.01


def closed_phoneme(symbol: str) -> bool:
    """Whether a phoneme keeps the lips closed: a pause or p/b/m (also geminate pː...)."""
    s = symbol.replace("ː", "").strip()
    return s in ("", "_", "p", "b", "m")


def frame_labels(phonemes, duration: float) -> np.ndarray:
    """1 where the true phonemes have the lips closed (pause, p/b/m), per 10 ms frame.

    Frames not covered by any phoneme (leading/trailing silence) count as closed.
    """
    n = int(np.ceil(duration / FRAME))
    labels = np.ones(n, dtype=np.int8)
    times = np.arange(n) * FRAME
    for p in phonemes:
        if closed_phoneme(p.phoneme):
            continue
        lo = int(np.searchsorted(times, p.start, side="left"))
        hi = int(np.searchsorted(times, p.end, side="left"))
        labels[lo:hi] = 0
    return labels


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary label sequences."""
    a = a.astype(bool)
    b = b.astype(bool)
    po = float(np.mean(a == b))
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return 0.0 if pe >= 1 else (po - pe) / (1 - pe)
