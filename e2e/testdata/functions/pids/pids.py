"""A function that runs into its worker's pids limit: "bomb" starts processes
until the system refuses, "nap" sleeps for half a second."""

import subprocess
import time

_children = []


def handler(event, context):
    action = event.get("do") if isinstance(event, dict) else None
    if action == "bomb":
        started = 0
        try:
            while started < 200:
                _children.append(subprocess.Popen(["sleep", "1000"]))
                started += 1
        except OSError as err:
            return {"started": started, "error": type(err).__name__}
        return {"started": started}
    if action == "nap":
        time.sleep(0.5)
    return "ok"
