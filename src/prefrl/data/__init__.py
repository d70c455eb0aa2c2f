"""prefrl.data: the records of preference learning and the store that persists them."""

from prefrl.data.store import Labeller, LeaseError, PreferenceStore, Query
from prefrl.data.types import MU_VALUES, Comparison, Segment, TextPair, check_mu

__all__ = [
    "MU_VALUES",
    "Comparison",
    "Labeller",
    "LeaseError",
    "PreferenceStore",
    "Query",
    "Segment",
    "TextPair",
    "check_mu",
]
