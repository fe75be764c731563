"""The training progress bar `jupiter start`, `finetune` and `submit` show: step of total, loss,
tokens/s and ETA, fed with a job's `progress` events."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.text import markup


def _number(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


class TrainingBar:
    """One rich progress bar; `update` takes a progress event's data. Use as a context manager."""

    def __init__(self, console: Console, description: str = "waiting"):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                 TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.task = self.progress.add_task(markup(description), total=None, loss="-", tps="-", eta="-")
        self.latest: dict = {}  # every key seen so far, the newest value of each

    @property
    def console(self) -> Console:
        """Print through this while the bar is shown, so lines go above it."""
        return self.progress.console

    def __enter__(self) -> TrainingBar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def status(self, status: str) -> None:
        self.progress.update(self.task, description=markup(status))

    def update(self, data: dict) -> None:
        self.latest.update(data)
        step = data.get("step")
        self.progress.update(self.task, total=data.get("total_steps") or self.latest.get("total_steps"),
                             completed=step if isinstance(step, int) else 0,
                             loss=_number(data.get("loss", self.latest.get("loss")), ".4f"),
                             tps=_number(data.get("tokens_per_s"), ",.0f"),
                             eta=_number(data.get("eta_s"), ".0f") + ("s" if isinstance(data.get("eta_s"), (int, float))
                                                                       else ""))

    def summary(self) -> str:
        """`final loss L, eval loss E` from what was seen, or ''."""
        last = self.latest
        loss = last.get("final_loss", last.get("loss"))
        parts = []
        if isinstance(loss, (int, float)):
            parts.append(f"final loss {loss:.4f}")
        if isinstance(last.get("eval_loss"), (int, float)):
            parts.append(f"eval loss {last['eval_loss']:.4f}")
        return ", ".join(parts)
