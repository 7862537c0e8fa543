"""`Variable`: one environment variable of the relay, as `relay.variables` defines them.

Apart from the definitions so that the list of variables can grow without the module outgrowing
the size rule; `relay.variables` re-exports it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

T = TypeVar("T", covariant=True)


@attrs.frozen
class Variable(Generic[T]):
    """One environment variable.

    Attributes:
        name: the variable's name.
        meaning: one sentence for the documentation.
        default: the value used when the variable is unset or empty (None: no value).
        example: a typical value, for the documentation.
        shown: how the documentation shows the default when its plain text would mislead; `{}`
            stands for that plain text.
    """

    name: str
    meaning: str
    default: T
    example: str
    shown: str | None = None

    @property
    def default_text(self) -> str:
        """The default as the documentation shows it."""
        value: object = self.default
        if value is None:
            text = "(none)"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:g}"
        elif value == "":
            text = "(empty)"
        else:
            text = str(value)
        return text if self.shown is None else self.shown.format(text)

    @property
    def row(self) -> tuple[str, str, str, str]:
        """(name, meaning, default, example): one row of the README table."""
        return (self.name, self.meaning, self.default_text, self.example)
