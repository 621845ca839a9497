"""Screenshots of a report's summary at a phone's and a desktop's width, for the docs.

    .venv/bin/pgbackup-verify demo --reports-dir /tmp/healthy
    .venv/bin/pgbackup-verify demo --fault seed-night --reports-dir /tmp/seed
    .venv/bin/python docs/screenshots/shoot.py /tmp/healthy/latest.html healthy /tmp/seed/latest.html seed-night

Each PNG is the first screen (900 px high) of the report in headless Chromium, as tests/test_report_browser.py
drives it: `<name>-400.png` and `<name>-1400.png` next to this file.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
WIDTHS = (400, 1400)


def main(args: list[str]) -> None:
    pairs = list(zip(args[::2], args[1::2], strict=True))
    chromium = shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        for report, name in pairs:
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(Path(report).resolve().as_uri())
                page.screenshot(path=str(HERE / f"{name}-{width}.png"))
                print(f"{name}-{width}.png: {page.title()}")
                page.close()
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1:])
