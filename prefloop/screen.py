"""A terminal screen that asks a person which of two answers is better, one item at a time.

It shows what a ``Deck`` hands it: a heading, the prompt, and two answers side by side (stacked when the terminal
is narrower than ``NARROW`` columns), each scrollable on its own (tab moves between them; the up and down arrows
and the page keys scroll), with the keys on screen. Every key goes straight to the deck (``choose``, ``undo``),
which records the verdict before the screen asks for the next item, so the screen itself holds nothing that a
closed terminal could lose. It knows nothing about what is being compared or where labels go: ``prefloop label``
and the human judge (``judge.label.Session``) are its decks.

textual is an optional dependency (``pip install 'prefloop[label]'``); import this module only where a person is
asked, never at the top of a command module, so ``prefloop --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.events import Resize
from textual.widgets import Footer, Static

NARROW = 110  # below this many columns the two answers are stacked: two 50-column panes are the least readable

# what each verdict key means, in the words the footer shows
CHOICES = {"left": "left better", "right": "right better", "tie": "tie", "skip": "skip"}


@dataclass(frozen=True)
class Shown:
    """One item as the person sees it: nothing here may say which model wrote which answer."""

    heading: str
    prompt: str
    left: str
    right: str


class Deck(Protocol):
    """Where the items come from and the verdicts go."""

    def current(self) -> "Shown | ShownOne | None":
        """The item to show (``ShownOne`` on the thumbs screen), or None when every item has its label."""

    def choose(self, choice: str) -> None:
        """Record ``left``, ``right``, ``tie`` or ``skip`` (thumbs: ``up``, ``down``, ``skip``) for the current
        item (before returning)."""

    def undo(self) -> bool:
        """Take back the last label (False: there is none)."""

    def progress(self) -> str:
        """One line: done / total, pace, time left."""


class DeckApp(App[str]):
    """A labelling screen over a ``Deck``: the keys the pairwise and thumbs screens share (undo, quit); each
    subclass lays out its answer panes (``_show_answers``) and what choosing means."""

    def __init__(self, deck: Deck, title: str):
        super().__init__()
        self.deck, self.title = deck, title

    def _show(self) -> None:
        """The deck's current item: progress, the prompt under its heading, then the subclass's answer panes; the
        screen exits with ``"done"`` when the deck runs out."""
        shown = self.deck.current()
        if shown is None:
            self.exit("done")
            return
        self.query_one("#progress", Static).update(Text(self.deck.progress()))
        prompt = self.query_one("#prompt", VerticalScroll)
        prompt.border_title = shown.heading
        self.query_one("#prompt-text", Static).update(Text(shown.prompt))
        prompt.scroll_home(animate=False)
        self._show_answers(shown)

    def _show_answers(self, shown: Any) -> None:
        raise NotImplementedError

    def action_undo(self) -> None:
        if not self.deck.undo():
            self.notify("nothing to undo")
        self._show()

    def action_leave(self) -> None:
        self.exit("quit")


class CompareApp(DeckApp):
    """The screen. It exits with ``"done"`` when the deck runs out and ``"quit"`` when the person leaves."""

    CSS = """
    #progress { height: 1; padding: 0 1; background: $boost; }
    #prompt { height: auto; max-height: 35%; border: round $secondary; padding: 0 1; }
    #answers { layout: horizontal; height: 1fr; }
    #answers.narrow { layout: vertical; }
    .answer { width: 1fr; height: 1fr; border: round $primary; padding: 0 1; }
    .answer:focus { border: round $accent; }
    """
    BINDINGS = [
        Binding("1,left", "choose('left')", CHOICES["left"], key_display="1/←", priority=True),
        Binding("2,right", "choose('right')", CHOICES["right"], key_display="2/→", priority=True),
        Binding("t", "choose('tie')", CHOICES["tie"]),
        Binding("s", "choose('skip')", CHOICES["skip"]),
        Binding("u", "undo", "undo last"),
        Binding("q,ctrl+c", "leave", "quit", key_display="q", priority=True),
    ]

    def __init__(self, deck: Deck, title: str = "which answer is better?", allow_tie: bool = True):
        super().__init__(deck, title)
        self.allow_tie = allow_tie

    def compose(self) -> ComposeResult:
        yield Static(id="progress")
        with VerticalScroll(id="prompt"):
            yield Static(id="prompt-text")
        with Container(id="answers"):
            with VerticalScroll(id="left", classes="answer"):
                yield Static(id="left-text")
            with VerticalScroll(id="right", classes="answer"):
                yield Static(id="right-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#left").border_title = "LEFT  [1 / ←]"
        self.query_one("#right").border_title = "RIGHT  [2 / →]"
        self._show()

    def on_resize(self, event: Resize) -> None:
        self.query_one("#answers").set_class(event.size.width < NARROW, "narrow")

    def _show_answers(self, shown: Shown) -> None:
        for side, text in (("left", shown.left), ("right", shown.right)):
            self.query_one(f"#{side}-text", Static).update(Text(text))
            self.query_one(f"#{side}", VerticalScroll).scroll_home(animate=False)
        self.query_one("#left", VerticalScroll).focus()

    def action_choose(self, choice: str) -> None:
        if choice == "tie" and not self.allow_tie:
            self.notify("ties are off for this set: pick a side or skip")
            return
        self.deck.choose(choice)
        self._show()


@dataclass(frozen=True)
class ShownOne:
    """One answer as the person sees it, to mark good or bad (``prefloop label --mode thumbs``)."""

    heading: str
    prompt: str
    answer: str


# what each thumbs key means, in the words the footer shows
THUMBS = {"up": "good (desirable)", "down": "bad (undesirable)", "skip": "skip"}


class ThumbsApp(DeckApp):
    """The thumbs screen: the prompt and one answer; each key goes straight to the deck (``choose`` with ``up``,
    ``down`` or ``skip``; ``undo``), as in ``CompareApp``. Exits with ``"done"`` or ``"quit"``."""

    CSS = """
    #progress { height: 1; padding: 0 1; background: $boost; }
    #prompt { height: auto; max-height: 35%; border: round $secondary; padding: 0 1; }
    #answer { height: 1fr; border: round $primary; padding: 0 1; }
    """
    BINDINGS = [
        Binding("1,plus", "choose('up')", THUMBS["up"], key_display="1/+", priority=True),
        Binding("2,minus", "choose('down')", THUMBS["down"], key_display="2/-", priority=True),
        Binding("s", "choose('skip')", THUMBS["skip"]),
        Binding("u", "undo", "undo last"),
        Binding("q,ctrl+c", "leave", "quit", key_display="q", priority=True),
    ]

    def __init__(self, deck: Deck, title: str = "is this answer good?"):
        super().__init__(deck, title)

    def compose(self) -> ComposeResult:
        yield Static(id="progress")
        with VerticalScroll(id="prompt"):
            yield Static(id="prompt-text")
        with VerticalScroll(id="answer"):
            yield Static(id="answer-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#answer").border_title = "ANSWER  [1 / + good · 2 / - bad]"
        self._show()

    def _show_answers(self, shown: ShownOne) -> None:
        self.query_one("#answer-text", Static).update(Text(shown.answer))
        pane = self.query_one("#answer", VerticalScroll)
        pane.scroll_home(animate=False)
        pane.focus()

    def action_choose(self, choice: str) -> None:
        self.deck.choose(choice)
        self._show()
