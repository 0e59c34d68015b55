"""Run a command with TensorFlow's start-up chatter taken out of its standard error.

TensorFlow 2.16 and later log through absl, which ignores ``TF_CPP_MIN_LOG_LEVEL`` for its
first lines: every process that imports TensorFlow (each notebook kernel, each run worker)
prints ``WARNING: All log messages before absl::InitializeLog() ...`` and ``oneDNN custom
operations are on ...`` and, on CPUs without AVX-512, ``oneDNN supports DT_INT32 only on
platforms with AVX-512 ...``. None of it is actionable, and a book build starts dozens of such
processes. No switch inside the process removes them, so ``make`` runs its commands through
this filter instead::

    python -m dlga.quiet python -m dlga.book build --preset demo

The command and everything it starts write their standard error into a pipe; the filter
forwards it unchanged except for the lines that match :data:`CHATTER`. Progress bars (which
redraw one line with carriage returns) pass through as they come. The exit status is the
command's. Standard output is not touched.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading

CHATTER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWE]\d{4} [\d:.]+ +\d+ (port\.cc|cpu_feature_guard\.cc|util\.cc):\d+\] "
    rb"|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption)"
)
"""Start-up lines of TensorFlow's absl logging (the oneDNN notices) and of local Jupyter
kernels that carry no information for a user. Anything else, warnings included, passes."""

_FLUSH_AFTER_S = 0.2  # a partial line (a progress bar without its newline) waits no longer


def _segments(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split ``buffer`` after each ``\\n`` or ``\\r``: (complete segments, the incomplete rest)."""
    parts = re.split(rb"(?<=[\r\n])", buffer)
    return [p for p in parts[:-1] if p], parts[-1]


def keep(segment: bytes) -> bool:
    """Whether a line of standard error reaches the user (False for :data:`CHATTER`)."""
    return CHATTER.match(segment) is None


def pump(source: int, sink: int) -> None:
    """Copy ``source`` to ``sink`` until end of file, dropping the chatter lines.

    Complete lines are checked as they arrive. A partial line is forwarded after
    ``_FLUSH_AFTER_S`` without more data, unless it could still become a chatter line, so
    progress bars stay live and no chatter line escapes in pieces.
    """
    pending = b""
    while True:
        ready, _, _ = select.select([source], [], [], _FLUSH_AFTER_S)
        if ready:
            chunk = os.read(source, 65536)
            if not chunk:
                break
            segments, pending = _segments(pending + chunk)
            out = b"".join(s for s in segments if keep(s))
        else:
            out, pending = (pending, b"") if pending and keep(pending) and not _may_become_chatter(pending) else (b"", pending)
        if out:
            os.write(sink, out)
    if pending and keep(pending):
        os.write(sink, pending)


def _may_become_chatter(partial: bytes) -> bool:
    """Whether a partial line is the start of a line that :data:`CHATTER` would drop."""
    starts = (b"WARNING: All log messages before absl", b"[IPKernelApp] WARNING")
    return any(s.startswith(partial[: len(s)]) for s in starts) or re.match(rb"^[IWE]\d{0,4}($| )", partial) is not None


def run(command: list[str]) -> int:
    """Run ``command`` with its standard error filtered; return its exit status."""
    if not command:
        raise ValueError("usage: python -m dlga.quiet COMMAND [ARGS...]")
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    # Ctrl-C reaches the whole foreground process group: the command handles it (a book build
    # keeps what it finished) while the filter keeps forwarding its last words.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.flush()
    forward = threading.Thread(target=pump, args=(process.stderr.fileno(), sys.stderr.fileno()), daemon=True)
    forward.start()
    try:
        status = process.wait()
        # A process the command left behind may hold the pipe open; its end is not awaited.
        forward.join(timeout=5)
        return status
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0])
        print("usage: python -m dlga.quiet COMMAND [ARGS...]")
        return 0 if argv else 2
    try:
        return run(argv)
    except FileNotFoundError:
        print(f"dlga.quiet: command not found: {argv[0]}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
