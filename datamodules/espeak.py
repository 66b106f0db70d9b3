"""In-process espeak-ng speech synthesis (ctypes over the library that ``espeakng-loader`` ships).

espeak-ng is GPL-3.0: it is a data-generation tool here. Only ``datamodules.synth`` imports this
module, and the library loads on first use, never at import time, so no model code path pulls it in.

The library keeps one global state per process, and its output depends on the history of calls in
that process (its pitch "flutter" index keeps advancing across utterances). So reproducible corpora
synthesise each shard of work in a fresh process and reseed before every utterance.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_IPA_SEPARATED = 0x02 | (ord("_") << 8)
"""``espeak_TextToPhonemes`` mode: IPA, phonemes separated by "_" (no IPA symbol is "_")."""
_STRESS = "ˈˌ"


@dataclass(frozen=True)
class Voice:
    """espeak voice settings: ``name`` (voice[+variant]), rate in words/min, pitch/range 0-100, volume 0-200."""

    name: str
    rate: int = 160
    pitch: int = 50
    volume: int = 100
    range: int = 50


class Espeak:
    """One synthesiser per process (the library is a process-wide singleton)."""

    _instance: Espeak | None = None

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )

        def on_audio(wave, count, _events) -> int:
            if wave and count > 0:
                self._chunks.append(np.ctypeslib.as_array(wave, shape=(count,)).copy())
            return 0

        self._callback = callback_type(on_audio)  # keep a reference: ctypes does not
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 500, data_path, 0))
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {self.sample_rate})")
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib = lib
        self._libc = ctypes.CDLL("libc.so.6")

    @classmethod
    def get(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> np.ndarray:
        """``text`` -> int16 mono samples at ``self.sample_rate`` (22050 Hz)."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice.name!r} (try en-us, en, en-GB-scotland, en-029)")
        for parameter, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_VOLUME, voice.volume)):
            lib.espeak_SetParameter(parameter, int(value), 0)
        lib.espeak_SetParameter(_RANGE, int(voice.range), 0)
        # Both the library's own generator and libc rand() (used for noise sources) feed the output.
        lib.espeak_ng_SetRandSeed(seed)
        self._libc.srand(seed & 0xFFFFFFFF)
        self._chunks.clear()
        encoded = text.encode() + b"\0"
        status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
        lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)

    def phonemes(self, text: str, voice_name: str) -> list[str]:
        """espeak-ng's IPA phonemes of ``text`` in ``voice_name``'s language, stress marks dropped."""
        if self._lib.espeak_SetVoiceByName(voice_name.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice_name!r} (try en-us, en, en-GB-scotland, en-029)")
        buffer = ctypes.create_string_buffer(text.encode())
        pointer = ctypes.c_char_p(ctypes.addressof(buffer))
        phonemes: list[str] = []
        while pointer.value:  # one clause per call; the library advances the pointer
            clause = self._lib.espeak_TextToPhonemes(
                ctypes.byref(pointer), _ESPEAK_CHARS_UTF8, _IPA_SEPARATED
            )
            for word in clause.decode().split():
                phonemes += [p for p in (piece.strip(_STRESS) for piece in word.split("_")) if p]
        return phonemes
