"""The library's one error for bad input, and how it names the parameter at fault.

A message names parameters as ``{name}`` placeholders (declared with `parameters`): a library
caller reads ``max_contexts``, a command-line user ``--max-contexts``
(:func:`softmax_bottleneck.cli.run_main` renders it so and exits with status 2)::

    raise InputError("{max_contexts} 5000 is more than the 300 contexts this split has", "max_contexts")
"""

from __future__ import annotations

import re


class InputError(ValueError):
    """Bad input from the user (a file, a value, a setting): one line, never a traceback."""

    def __init__(self, message: str, *parameters: str):
        super().__init__(message)
        self.message, self.parameters = message, parameters

    def render(self, name=lambda parameter: parameter) -> str:
        """The message with each declared ``{parameter}`` replaced by ``name(parameter)``."""
        if not self.parameters:
            return self.message
        pattern = re.compile(r"\{(" + "|".join(map(re.escape, self.parameters)) + r")\}")
        return pattern.sub(lambda match: name(match.group(1)), self.message)

    def __str__(self) -> str:
        return self.render()


def flag(parameter: str) -> str:
    """The command-line flag of a parameter: ``max_contexts`` → ``--max-contexts``."""
    return "--" + parameter.replace("_", "-")


class TrainingDiverged(InputError):
    """The loss became non-finite: the settings (usually the learning rate) do not train."""
