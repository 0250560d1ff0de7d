"""Open a study's report.html in headless Chromium, save a screenshot, and check it renders cleanly.

    python scripts/screenshot_report.py STUDY/report.html -o docs/report-tiny.png
    python scripts/screenshot_report.py STUDY/report.html -o docs/report-why.png --section why --height 900

--section ID captures only that section of the page (e.g. `why`, "Why sparse, yet full-rank?", or `verdicts`),
rendered with the report's own style; it fails when the report has no such section.

Checks: every <img> in the DOM Chromium built carries an embedded `data:image/png` URI that decodes to a PNG
(nothing is fetched: the file must open offline), and Chromium's log shows no console error (a JavaScript error,
a failed load). Exits non-zero with the reason otherwise. Needs Debian's `chromium` (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Chromium's log lines for page problems: console messages at error level, and resources that failed to load.
ERROR_PATTERNS = [
    re.compile(p)
    for p in (
        r"CONSOLE\(\d+\).*(?:error|Error)",
        r":ERROR:CONSOLE",
        r"Uncaught",
        r"net::ERR_",
        r"Failed to load resource",
    )
]


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("no chromium on PATH (Debian: apt-get install -y chromium)")


def run(report: Path, png: Path, width: int, height: int) -> list[str]:
    """Screenshot REPORT into PNG; return the problems found (empty = clean)."""
    url = report.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        common = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--allow-file-access-from-files",
        ]
        shot = subprocess.run(
            common + [f"--screenshot={png.resolve()}", f"--window-size={width},{height}", url],
            capture_output=True,
            text=True,
            timeout=180,
        )
        dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=180)
    problems = []
    if shot.returncode != 0 or not png.is_file():
        problems.append(f"screenshot failed (exit {shot.returncode}): {shot.stderr.strip()[-500:]}")
    for line in (shot.stderr + dom.stderr).splitlines():
        if any(p.search(line) for p in ERROR_PATTERNS):
            problems.append(f"console: {line.strip()}")
    parser = _Images()
    parser.feed(dom.stdout)
    if not parser.srcs:
        problems.append("the rendered page holds no <img>")
    for i, src in enumerate(parser.srcs):
        if not src.startswith("data:image/png;base64,"):
            problems.append(f"img {i}: not an embedded PNG ({src[:60]!r})")
        elif not base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC):
            problems.append(f"img {i}: data URI does not decode to a PNG")
    return problems


def only_section(page: str, section: str) -> str:
    """The report with its body cut down to the <section id=SECTION> element (its <head>, so its style, kept)."""
    m = re.search(rf"<section id=['\"]{re.escape(section)}['\"]>.*?</section>", page, flags=re.S)
    if m is None:
        sys.exit(f"the report has no section {section!r}")
    head = page.split("<body>", 1)[0]
    return f"{head}<body>{m.group(0)}</body></html>"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path)
    p.add_argument("-o", "--out", type=Path, default=Path("report.png"))
    p.add_argument("--section", help="capture only the <section> with this id (e.g. why)")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=4000)
    p.add_argument(
        "--max-bytes",
        type=int,
        default=1_000_000,
        help="re-save the screenshot as an 8-bit palette PNG above this size (needs Pillow)",
    )
    args = p.parse_args()
    if not args.report.is_file():
        sys.exit(f"{args.report}: no such file")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.section:
        with tempfile.TemporaryDirectory() as d:
            cut = Path(d) / args.report.name
            cut.write_text(only_section(args.report.read_text(), args.section))
            problems = run(cut, args.out, args.width, args.height)
        # the why section has no plot: an image-free cut is not a problem
        problems = [x for x in problems if x != "the rendered page holds no <img>"]
    else:
        problems = run(args.report, args.out, args.width, args.height)
    if args.out.is_file() and args.out.stat().st_size > args.max_bytes:
        from PIL import Image  # matplotlib depends on Pillow, so it is installed

        Image.open(args.out).convert("RGB").quantize(colors=128).save(args.out, optimize=True)
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    size = args.out.stat().st_size if args.out.is_file() else 0
    print(f"{'FAILED' if problems else 'ok'}: {args.out} ({size:,} bytes)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
