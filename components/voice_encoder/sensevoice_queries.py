"""The four query frames SenseVoice prepends to the speech frames, with the embedding rows funasr gives them.

Each query frame is a learnt ``embed`` row; the CTC head reads a tag from it (language, emotion, event, text
normalisation) while it reads the transcript from the speech frames.
"""

from __future__ import annotations

#: ``embed`` rows exactly as funasr's SenseVoiceSmall numbers them
LID_ROWS = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
TEXTNORM_ROWS = {"withitn": 14, "woitn": 15}
EVENT_EMOTION_ROWS = (1, 2)
NUM_QUERY_ROWS = 7 + len(LID_ROWS) + len(TEXTNORM_ROWS)
NUM_QUERIES = 4
#: what each query frame's CTC output tags (frame 1 carries the emotion, frame 2 the event)
RICH_FIELDS = ("language", "emotion", "event", "text_norm")
