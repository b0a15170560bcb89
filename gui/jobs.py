"""Jobs: the controller's work that runs a network, made to run on a worker thread (Qt-free)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from gui.controller import AnnotationController

#: what the status line and the progress bar say while each kind of work runs
ACTIVITY = {"Click": "f-BRS click…", "Scribble": "S2M scribble…", "Free": "Free paint…",
            "undo": "Undo…", "add_object": "Adding an object…", "propagate": "Propagating…",
            "export": "Exporting…"}
#: jobs during which the user may browse frames (the shown frame is not what the job edits)
BROWSABLE = ("propagate", "export")


class Job:
    """Work of the controller for a worker thread.

    Iterating runs the work and yields ``(done, total)`` after each step; :meth:`close` cancels
    between steps. The controller is busy from the job's creation until it ends or is closed, so no
    other input slips in between the click that created it and the worker picking it up.
    """

    def __init__(self, controller: AnnotationController, kind: str, steps: Callable[[], Iterator[tuple[int, int]]]):
        self.kind = kind
        self.name = ACTIVITY[kind]
        self._controller = controller
        controller._begin(kind)
        self._gen = self._wrap(steps)
        next(self._gen)   # enter the try block: closing the job ends the activity even before it ran

    def _wrap(self, steps):
        try:
            yield 0, 0
            yield from steps()
        finally:
            self._controller._end()

    def __iter__(self) -> "Job":
        return self

    def __next__(self) -> tuple[int, int]:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def run(self) -> None:
        """Run the whole job on this thread (scripts and tests)."""
        for _ in self:
            pass


def run(job: Job | None) -> None:
    """Run ``job`` (if any) on this thread."""
    if job is not None:
        job.run()


def run(job: Job | None) -> None:
    """Run ``job`` (if any) on this thread."""
    if job is not None:
        job.run()
