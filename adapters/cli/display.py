"""Progress of a run for people: a live display on a terminal, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

Listener = Callable[[dict[str, Any]], None]


def make_listener(stream: IO[str]) -> Listener:
    if stream.isatty():
        return _rich_listener(stream)
    return _plain_listener(stream)


def _label(e: dict[str, Any]) -> str:
    kind = e.get("type", "")
    return f"cycle {e['cycle']} stage {e['index']}" + (f" {kind}" if kind else "")


def _plain_listener(stream: IO[str]) -> Listener:
    last: dict[tuple[int, int], int] = {}

    def listen(e: dict[str, Any]) -> None:
        if e["kind"] == "run_waiting":
            print(f"[foundry] waiting: {e['message']}", file=stream, flush=True)
            return
        key = (e["cycle"], e["index"])
        if e["kind"] == "stage_started":
            print(f"[foundry] {_label(e)}: started", file=stream, flush=True)
        elif e["kind"] == "stage_skipped":
            print(f"[foundry] {_label(e)}: already done, outputs verified", file=stream)
        elif e["kind"] == "stage_reused":
            origin = e["from"]
            print(f"[foundry] {_label(e)}: reused from run {origin['runId']} cycle "
                  f"{origin['cycle']} stage {origin['index']} (same fingerprint, outputs "
                  "verified)", file=stream, flush=True)
        elif e["kind"] == "stage_completed":
            print(f"[foundry] cycle {e['cycle']} stage {e['index']}: completed in "
                  f"{e['seconds']:.1f} s", file=stream, flush=True)
        elif e["kind"] == "stage_progress":
            decile = int(float(e["fraction"]) * 10)
            if last.get(key) != decile:  # one line per 10% keeps logs short
                last[key] = decile
                print(f"[foundry] cycle {e['cycle']} stage {e['index']}: "
                      f"{100 * float(e['fraction']):.0f}% {e['message']}", file=stream,
                      flush=True)

    return listen


def _rich_listener(stream: IO[str]) -> Listener:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                        TextColumn("{task.fields[message]}"),
                        console=Console(file=stream), transient=False)
    tasks: dict[tuple[int, int], Any] = {}

    def listen(e: dict[str, Any]) -> None:
        if e["kind"] == "run_waiting":
            progress.console.print(f"waiting: {e['message']}")
            return
        key = (e["cycle"], e["index"])
        if e["kind"] in ("stage_started", "stage_skipped"):
            progress.start()
            tasks[key] = progress.add_task(_label(e), total=1.0, message="")
            if e["kind"] == "stage_skipped":
                progress.update(tasks[key], completed=1.0, message="done earlier, verified")
        elif e["kind"] == "stage_progress" and key in tasks:
            progress.update(tasks[key], completed=float(e["fraction"]),
                            message=str(e["message"])[:60])
        elif e["kind"] == "stage_completed" and key in tasks:
            progress.update(tasks[key], completed=1.0, message=f"{e['seconds']:.1f} s")

    return listen
