"""Drive the fuzz workers with hypothesis: ``DrawnRandom`` offers the ``random.Random`` methods they call, each
value drawn from a hypothesis ``data`` object, and ``run_cases`` runs a worker's case function as a hypothesis
test, so hypothesis generates the cases from a seed and, when one fails, shrinks it to a minimal example."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

_BYTES = 8  # bytes per draw: wide enough that the modulo below is uniform for any range used


class DrawnRandom:
    """Every value comes from raw bytes hypothesis draws (as a byte-stream fuzzer such as atheris feeds its
    target): uniform like ``random.Random``, while shrinking drives the bytes, and so every choice, towards zero:
    the first option, the smallest number."""

    def __init__(self, data: Any):
        self._data = data

    def _below(self, n: int) -> int:
        raw = self._data.draw(st.binary(min_size=_BYTES, max_size=_BYTES))
        return int.from_bytes(raw, "little") % n

    def choice(self, options: Sequence[Any]) -> Any:
        options = list(options)
        return options[self._below(len(options))]

    def random(self) -> float:
        return self._below(2**53) / 2**53

    def randrange(self, start: int, stop: int | None = None) -> int:
        low, high = (0, start) if stop is None else (start, stop)
        return low + self._below(high - low)

    def randint(self, low: int, high: int) -> int:
        return low + self._below(high - low + 1)

    def getrandbits(self, bits: int) -> int:
        return self._below(2**bits) if bits <= 8 * _BYTES else int.from_bytes(
            self._data.draw(st.binary(min_size=(bits + 7) // 8, max_size=(bits + 7) // 8)), "little") % 2**bits

    def sample(self, population: range, k: int) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < k:
            value = population[self._below(len(population))]
            if value not in chosen:
                chosen.append(value)
        return chosen


def run_cases(cases: int, seed_value: int, case: Callable[[DrawnRandom], None]) -> None:
    """Runs ``case`` on ``cases`` generated examples (reproducible from ``seed_value``). An exception from
    ``case`` is shrunk and re-raised; the worker reports it."""

    @settings(max_examples=cases, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink])
    @seed(seed_value)
    @given(st.data())
    def test(data: Any) -> None:
        case(DrawnRandom(data))

    test()
