"""dlga.quiet: TensorFlow's start-up chatter is dropped, everything else reaches the user."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from dlga import quiet

ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ONEDNN = ("I0000 00:00:1796605681.069091   11585 port.cc:153] oneDNN custom operations are on. You may see "
          "slightly different numerical results due to floating-point round-off errors.")
INT32 = "E0000 00:00:1796605697.945453   11588 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512."


def _pumped(*writes: bytes) -> bytes:
    """What :func:`quiet.pump` forwards when ``writes`` arrive one after another."""
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    forward = threading.Thread(target=quiet.pump, args=(source_r, sink_w))
    forward.start()
    for w in writes:
        os.write(source_w, w)
    os.close(source_w)
    forward.join(timeout=10)
    os.close(sink_w)
    out = b""
    while chunk := os.read(sink_r, 65536):
        out += chunk
    os.close(source_r), os.close(sink_r)
    return out


def test_chatter_lines_are_dropped_and_the_rest_kept_in_order():
    text = f"{ABSL}\n{ONEDNN}\nreal warning: disk almost full\n{INT32}\nTraceback (most recent call last):\n"
    assert _pumped(text.encode()) == b"real warning: disk almost full\nTraceback (most recent call last):\n"


def test_a_chatter_line_split_over_two_writes_is_still_dropped():
    line = f"{ONEDNN}\n".encode()
    assert _pumped(b"before\n", line[:3], line[3:], b"after\n") == b"before\nafter\n"


def test_progress_bars_pass_unchanged_without_a_newline():
    bar = b"runs:  10%|#         | 1/10\rruns:  20%|##        | 2/10\rruns: 100%|##########| 10/10"
    assert _pumped(bar) == bar


def test_other_tensorflow_warnings_pass():
    other = b"W0000 00:00:1796605697.9 11588 op_level_cost_estimator.cc:699] Error in PredictCost() for the op\n"
    assert _pumped(other) == other


def test_the_command_keeps_its_exit_status_and_stdout_and_loses_tensorflows_start_up_lines():
    script = ("import sys, tensorflow as tf; tf.constant(1.0) + 1; print('result 42'); "
              "print('a real warning', file=sys.stderr); sys.exit(3)")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    plain = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert "oneDNN custom operations are on" in plain.stderr  # what the filter is for
    filtered = subprocess.run([sys.executable, "-m", "dlga.quiet", sys.executable, "-c", script],
                              capture_output=True, text=True, env=env)
    assert filtered.returncode == 3 and filtered.stdout == "result 42\n"
    assert filtered.stderr == "a real warning\n"


def test_a_missing_command_says_so():
    done = subprocess.run([sys.executable, "-m", "dlga.quiet", "no-such-command-xyz"], capture_output=True, text=True)
    assert done.returncode == 127 and "command not found: no-such-command-xyz" in done.stderr


def test_make_runs_its_long_commands_through_the_filter():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # fresh clone, so ask for the recipes of the targets without their prerequisites' installs.
    dry = subprocess.run(["make", "-n", "book", "test", "bench", "data"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    commands = [line for line in dry.splitlines() if " -m dlga.book " in line or " -m pytest " in line
                or " bench --out " in line]
    assert len(commands) == 6, dry
    assert all(" -m dlga.quiet " in line for line in commands), commands
