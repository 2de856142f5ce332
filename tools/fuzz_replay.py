"""Replay the failures a fuzz run recorded (their reproducers in its JSON) on this tree, in-process
(load, source, and the deep path: draw, summary, passes, build, forward, onnx) and through
`dslc check` and `dslc render`: how a fix is shown to hold after the run that found the bug.

    .venv/bin/python tools/fuzz_replay.py bench/results/fuzz.json
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzzing import target  # noqa: E402
from fuzzing.cases import Case  # noqa: E402

results = json.load(open(sys.argv[1]))
for f in results["failures"]:
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "case.dl"), "w") as fh:
        fh.write(f["reproducer"])
    case = Case(f["first_case"], "replay", main="case.dl", deep=True)
    o = target.classify(lambda p, case=case, d=d: target.api_target(case, d, p))
    cli = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dslc"), "render", os.path.join(d, "case.dl"),
                          "-o", os.path.join(d, "model.dot")], capture_output=True, text=True)
    chk = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dslc"), "check", os.path.join(d, "case.dl")],
                         capture_output=True, text=True)
    print(f"case {f['first_case']} (was {f['class']} in {f['mode']}, {f['exception']} at {f['where']}): "
          f"in-process {o.cls} {o.etype} {o.codes or ''} {o.message[:80]!r}; render exit {cli.returncode}; check exit {chk.returncode}")
