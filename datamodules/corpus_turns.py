"""Turn pieces: what the duplex user says between two pauses, one piece per row, as ASR items.

A user turn (``timeline.draw_user_turn``) pauses inside a sentence or after a statement, the words before
the pause read with continuation intonation. Here a piece the speaker goes on from ends its transcript with
",", and the piece that ends the turn ends without a mark, like every ``asr`` transcript. An ASR model
trained on them must hear that a speaker is not done: the cue the duplex predictor, reading the listening
path's states, needs to keep listening at a mid-turn pause (where it otherwise answers as at a turn end).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from minmo_lightning.datamodules.corpus_plan import PlanInputs, Planned, user_says
from minmo_lightning.datamodules.timeline import DuplexConfig, draw_user_turn

#: every turn pauses, so most rows are pieces before a pause
TURNS = DuplexConfig(multi_piece_prob=1.0)


def plan_turn_pieces(inputs: PlanInputs) -> Iterator[Planned]:
    """Validation, test, then train rows (the held-out ones do not depend on the training size); no
    sentence in two splits or in the shared pools; each piece in a random user voice."""
    rng, used = inputs.own_rng, set(inputs.taken)
    sizes = {"validation": inputs.eval_size, "test": inputs.eval_size, "train": inputs.train_size}
    for split, size in sizes.items():
        for i, (transcript, spoken) in enumerate(_pieces(rng, size, used)):
            job = user_says(rng, spoken)
            yield split, job, {"id": f"turn_pieces-{split}-{i:05d}", "text": transcript, "speaker": job.voice}


def _pieces(rng: random.Random, count: int, used: set[str]) -> list[tuple[str, str]]:
    """``count`` (transcript, text read aloud) pieces of whole turns (the last turn cut short), drawn from
    turns none of whose sentences is in ``used``; their sentences join ``used``."""
    pieces: list[tuple[str, str]] = []
    misses = 0
    while len(pieces) < count:
        turn = draw_user_turn(rng, TURNS)
        if used.intersection(turn.sentences):
            misses += 1
            if misses > 100 * (count + 1):
                raise RuntimeError(f"the grammar ran out of unused sentences after {len(pieces)} pieces")
            continue
        used.update(turn.sentences)
        last = len(turn.pieces) - 1
        pieces += [
            (text if k == last else text + ",", spoken) for k, (text, spoken) in enumerate(turn.pieces)
        ]
    return pieces[:count]
