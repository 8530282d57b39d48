"""Text descriptors for drift monitoring: a few cheap numbers per input text that make
a change of the input world visible without keeping the text itself.

One function, :func:`describe`, used by :mod:`bertops.server.predictionlog` (each line
of the prediction log carries them) and by the drift monitor's reference step
(``bertops.server.monitor``), so production rows and reference rows are described by
the same code. Pure: no I/O, no model; the token counts come from the tokenizer
encoding the model itself saw (:attr:`bertops.server.model.Prediction.tokens`).
"""

from __future__ import annotations

DESCRIPTOR_KEYS = ("chars", "tokens", "unkRate", "nonAscii")
"""The keys :func:`describe` may return, in this order (camelCase: they are JSON columns)."""


def describe(
    text: str, tokens: int | None = None, unknown_tokens: int | None = None
) -> dict[str, int | float]:
    """The descriptors of one text.

    Keys (all numbers):

    - ``chars``: characters (Unicode code points) of the text;
    - ``tokens``: tokens the model saw, special tokens ([CLS], [SEP]) included, after
      truncation at the manifest's ``max_length`` (so at most ``max_length``);
    - ``unkRate``: share of those tokens that are the tokenizer's unknown token, 0..1
      (0 for zero tokens), rounded to 6 decimals;
    - ``nonAscii``: share of the characters outside ASCII, 0..1 (0 for an empty text),
      rounded to 6 decimals.

    ``tokens`` and ``unkRate`` are left out when ``tokens`` is None (a classifier that
    does not report its encoding); ``unknown_tokens`` None counts as 0.
    """
    chars = len(text)
    # Counting ASCII code points with a C-level scan: encode is far cheaper than a loop.
    ascii_chars = len(text.encode("ascii", "ignore")) if chars else 0
    found: dict[str, int | float] = {"chars": chars}
    if tokens is not None:
        found["tokens"] = tokens
        found["unkRate"] = round((unknown_tokens or 0) / tokens, 6) if tokens else 0.0
    found["nonAscii"] = round((chars - ascii_chars) / chars, 6) if chars else 0.0
    return found
