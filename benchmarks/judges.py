"""What each digits judge sees and misses: the FD of graded corruptions of the real digits under the proxy (a
classifier's max-pooled features) and the HOG judge (pixels and gradient orientations), beside each judge's
real-vs-real floor. All 1,497 training digits, corrupted, against the 300 test digits; the floor is the clean
training digits against the test digits.

    PYTHONPATH=. python benchmarks/judges.py [--out benchmarks/results/judges.json]

A judge "ranks a ladder" when every step is above the floor and above the step before; a step within 5% of the
floor is reported as unseen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import environment, write_json  # noqa: E402

from scorekit.data import digits  # noqa: E402
from scorekit.metrics.corruptions import LADDERS, corrupt  # noqa: E402
from scorekit.metrics.frechet import feature_stats, frechet_distance  # noqa: E402
from scorekit.metrics.hog import hog_features  # noqa: E402
from scorekit.metrics.proxy import features_and_probs  # noqa: E402

JUDGES = {"proxy FD": lambda u8: features_and_probs(u8)[0], "HOG FD": hog_features}


def ladder_table() -> dict:
    test, train = digits("test"), digits("train")
    refs = {name: feature_stats(f(test.images)) for name, f in JUDGES.items()}

    def fd(name, u8):
        return frechet_distance(*feature_stats(JUDGES[name](u8)), *refs[name])

    out = {"floor": {name: fd(name, train.images) for name in JUDGES}, "ladders": {}}
    for ladder, (_, strengths) in LADDERS.items():
        out["ladders"][ladder] = {"strengths": list(strengths), "fd": {
            name: [fd(name, corrupt(ladder, train.images, s, train.labels)) for s in strengths] for name in JUDGES}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/judges.json")
    args = ap.parse_args()
    res = ladder_table()
    print("| corruption | strength | " + " | ".join(JUDGES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in JUDGES) + " |")
    print("| none (the floor) | | " + " | ".join(f"{res['floor'][n]:.1f}" for n in JUDGES) + " |")
    for ladder, row in res["ladders"].items():
        for i, s in enumerate(row["strengths"]):
            cells = []
            for n in JUDGES:
                v, floor = row["fd"][n][i], res["floor"][n]
                cells.append(f"{v:.1f}" + (" (unseen)" if v < 1.05 * floor else ""))
            print(f"| {ladder} | {s:g} | " + " | ".join(cells) + " |")
    write_json(args.out, {"environment": environment(torch.device("cpu")), **res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
