"""Writes prompts.jsonl: 300 openings of product and film reviews, deliberately neutral.

150 product reviews (30 products × 5 openings) and 150 film reviews (30 invented titles ×
5 openings), shuffled with a fixed seed so that any prefix mixes both kinds. Each opening
stops mid-sentence, so the sentiment is the continuation's to choose.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PRODUCTS = [
    "blender",
    "coffee maker",
    "pair of running shoes",
    "laptop bag",
    "desk lamp",
    "vacuum cleaner",
    "phone case",
    "hiking backpack",
    "electric kettle",
    "pair of headphones",
    "air fryer",
    "toaster",
    "office chair",
    "yoga mat",
    "water bottle",
    "wireless mouse",
    "kitchen knife set",
    "rice cooker",
    "bluetooth speaker",
    "winter jacket",
    "mechanical keyboard",
    "garden hose",
    "camping tent",
    "smart watch",
    "frying pan",
    "electric toothbrush",
    "e-reader",
    "suitcase",
    "baby stroller",
    "bike helmet",
]
PRODUCT_OPENINGS = [
    "I bought this {x} last month and",
    "After two weeks with this {x}, I",
    "The {x} arrived on Tuesday, and",
    "Here is my honest review of the {x}:",
    "I have used this {x} every day since March, and",
]
FILMS = [
    "The Silent Harbor",
    "Midnight in Copper Town",
    "A Winter for Thieves",
    "The Glass Orchard",
    "Northbound",
    "The Last Lighthouse Keeper",
    "Paper Moons",
    "River of Small Hours",
    "The Cartographer",
    "Salt and Iron",
    "Blue Hour Parade",
    "The Long Way to Vela",
    "Ghosts of Allen Street",
    "Second Summer",
    "The Quiet Engine",
    "Orchid Protocol",
    "A House on Fog Lane",
    "Kingdom of Dust",
    "The Velvet Detective",
    "Tomorrow's Orchestra",
    "Lanterns",
    "The Borrowed Year",
    "Empty Stadium",
    "Wild Geometry",
    "The Clockmaker's Daughter",
    "Neon Valley",
    "Far From the Shallows",
    "The Ninth Passenger",
    "Sunday at Marlow's",
    "Iron Meadows",
]
FILM_OPENINGS = [
    "I watched {x} last night and",
    "{x} is a film that",
    "My review of {x}: the story",
    "We saw {x} at the cinema, and",
    "The ending of {x}",
]


def main() -> None:
    rows = [o.format(x=p) for p in PRODUCTS for o in PRODUCT_OPENINGS]
    rows += [o.format(x=f) for f in FILMS for o in FILM_OPENINGS]
    assert len(rows) == len(set(rows)) == 300
    random.Random(0).shuffle(rows)
    out = Path(__file__).with_name("prompts.jsonl")
    out.write_text("".join(json.dumps({"prompt": r}) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} prompts to {out}")


if __name__ == "__main__":
    main()
