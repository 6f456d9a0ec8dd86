"""How long `import avatarkit` takes in a fresh interpreter, and what it pulls in.

Prints the median of fresh-process timings for `import avatarkit`, for reaching `AvatarBot`,
and for `import pydantic` / `import numpy` as yardsticks measured in the same run.
Target (issue 2): `import avatarkit` under 0.3 s, with no torch, diffusers, transformers or openai.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

RUNS = 7
HEAVY = ("torch", "diffusers", "transformers", "openai")

SNIPPET = """
import json, sys, time
t = time.perf_counter()
{stmt}
dt = time.perf_counter() - t
print(json.dumps({{"s": dt, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(stmt: str) -> tuple[float, list[str]]:
    times, heavy = [], []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", SNIPPET.format(stmt=stmt, heavy=HEAVY)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        times.append(row["s"])
        heavy = row["heavy"]
    return statistics.median(times), heavy


def main() -> None:
    rows = {
        "import avatarkit": "import avatarkit",
        "avatarkit.AvatarBot": "import avatarkit; avatarkit.AvatarBot",
        "import pydantic (yardstick)": "import pydantic",
        "import numpy (yardstick)": "import numpy",
    }
    results = {name: measure(stmt) for name, stmt in rows.items()}
    base = results["import avatarkit"][0]
    print(f"{'what':<30}{'median s':>10}{'× import avatarkit':>20}  heavy modules loaded")
    for name, (secs, heavy) in results.items():
        print(f"{name:<30}{secs:>10.3f}{secs / base:>20.2f}  {', '.join(heavy) or 'none'}")
    ok = base < 0.3 and not results["import avatarkit"][1]
    print(
        f"\nimport avatarkit: {base:.3f} s (target < 0.3 s, no heavy stack): "
        f"{'OK' if ok else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
