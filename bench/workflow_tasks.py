"""Does `rolepool run` make sense on hand-written requests? The README's task and the other
requests of bench/workflow_tasks.jsonl, scored on the plan, each step's first tool, whether the
final answer reports what the steps found, and completion (the rules are in
bench/_workflow_scoring.py; this is the `--hand` mode of bench/workflow_completion.py;
`bench/run_all.py` runs it by name).

    python bench/workflow_tasks.py
"""

from __future__ import annotations

import argparse

from workflow_completion import TASKS_FILE, hand_main

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help only
    hand_main(TASKS_FILE, None)
