"""STUDIES.md from the studies' own reports: each report.md, its figures copied to docs/studies/<folder name>/.

    python benchmarks/studies_md.py studies/ddpm-objectives studies/ncsn-techniques ... [--out STUDIES.md]
    python benchmarks/studies_md.py studies/autoguidance --append   # replace or add these studies' sections

The reports are taken as they are (the tables are the studies' numbers); only the figure links are
rewritten to the copies, and each section gets the study's folder name and protocol line.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

HEAD = """# Studies

The papers' experiments rerun with `scorekit study` on the digits (scikit-learn's bundled 8x8 digits), on
the CPU. Each section below is the study's own `report.md` (date, machine and command in its first line),
with its figures; the runs, CSVs and JSON protocols stay in the study folders. FD is the digits proxy
(Frechet distance in the feature space of a small digits classifier) against the 300 test digits; it is
biased at small N, so compare only numbers at the same N. Since 2026-12-02 every study also reports the second
judge, the HOG FD (pixels and gradient orientations; README "Two judges for the digits"), and the few-step study
gives 95% intervals over 5 seeds; the sections below that were run before (proxy only, 1-3 seeds) say so by their
date, and a verdict in them ("better", "best") is the proxy's alone.

"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="+")
    ap.add_argument("--out", default="STUDIES.md")
    ap.add_argument("--figures", default="docs/studies")
    ap.add_argument("--notes", help="a Markdown file of notes to put after the heading")
    ap.add_argument("--append", action="store_true",
                    help="keep --out and replace (or add at its end) only the sections of these studies")
    args = ap.parse_args()
    parts = [Path(args.out).read_text().rstrip() + "\n\n" if args.append else HEAD]
    if args.notes:
        parts.append(Path(args.notes).read_text().rstrip() + "\n\n")
    for folder in map(Path, args.studies):
        dest = Path(args.figures) / folder.name
        dest.mkdir(parents=True, exist_ok=True)
        text = (folder / "report.md").read_text()

        def relink(m: re.Match, folder: Path = folder, dest: Path = dest) -> str:
            shutil.copy(folder / m.group(2), dest / m.group(2))
            return f"![{m.group(1)}]({dest.as_posix()}/{m.group(2)})"

        text = re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", relink, text)
        section = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M).rstrip() + "\n\n"  # one level down
        if args.append:
            heading = re.escape(section.splitlines()[0])
            old = re.compile(rf"^{heading}\n.*?(?=^## |\Z)", re.S | re.M)
            if old.search(parts[0]):
                parts[0] = old.sub(lambda m, s=section: s, parts[0], count=1)
                continue
        parts.append(section)
    Path(args.out).write_text("".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
