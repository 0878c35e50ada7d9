"""What the command-line entry points share: quiet logging and readable TensorFlow errors.

Importing this module does not import TensorFlow, so an entry point can parse its arguments
(and answer --help) before paying for that import.
"""

from __future__ import annotations

import re


def tf_error_text(error) -> str:
    """The line of a (TensorFlow) error message that says what went wrong.

    TensorFlow wraps the cause in "Graph execution error:", node names and stack frames
    ("Detected at node ... defined at", "[[{{node ...}}]] [Op:...]"); this keeps the cause,
    e.g. "Invalid PNG. Failed to initialize decoder." Other errors: their first line.
    """
    message = str(getattr(error, "message", None) or error).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if lines and lines[0].rstrip(":") == "Graph execution error":
        causes = [
            line
            for line in lines[1:]
            if not line.startswith(("Detected at node", "<stack traces", "File ", "[[")) and not line.startswith(" ")
        ]
        lines = causes[-1:] or lines
    text = lines[0] if lines else type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip() or type(error).__name__
