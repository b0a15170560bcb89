"""Click list of one f-BRS session (state only: the GUI supplies the clicks)."""
from __future__ import annotations

from copy import deepcopy
from typing import NamedTuple


class Click(NamedTuple):
    """One click; ``coords`` = (row, col) in float pixels of the image the list refers to."""
    is_positive: bool
    coords: tuple[float, float]


class Clicker:
    """Ordered clicks of the current object, with snapshot/restore for undo."""

    def __init__(self) -> None:
        self.clicks_list: list[Click] = []

    def add_click(self, click: Click) -> None:
        self.clicks_list.append(click)

    def get_clicks(self, clicks_limit: int | None = None) -> list[Click]:
        return self.clicks_list[:clicks_limit]

    def reset_clicks(self) -> None:
        self.clicks_list = []

    def get_state(self) -> list[Click]:
        return deepcopy(self.clicks_list)

    def set_state(self, state: list[Click]) -> None:
        self.clicks_list = list(state)

    def __len__(self) -> int:
        return len(self.clicks_list)
