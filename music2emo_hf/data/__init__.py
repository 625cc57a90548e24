"""Readers of the six corpora's official downloads, each yielding rows of one unified schema (`Track`).

`from music2emo_hf.data import deam; deam.read("path/to/DEAM")` -> list[Track]; see each module for its layout.
"""

from . import cal500, deam, emomusic, emotify, mtg_jamendo, pmemo
from .schema import Track

READERS = {
    "mtg_jamendo": mtg_jamendo.read,
    "deam": deam.read,
    "pmemo": pmemo.read,
    "emomusic": emomusic.read,
    "cal500": cal500.read,
    "emotify": emotify.read,
}

__all__ = ["READERS", "Track", "cal500", "deam", "emomusic", "emotify", "mtg_jamendo", "pmemo"]
