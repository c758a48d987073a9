"""Screenshots of MLflow UI pages with headless Chromium (Debian's), waiting for charts.

python docs/screenshots/shoot.py OUT_DIR NAME=URL [NAME=URL ...]  (needs `pip install playwright`;
it drives the system's /usr/bin/chromium, downloads nothing)
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

out = Path(sys.argv[1])
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    for spec in sys.argv[2:]:
        name, url = spec.split("=", 1)
        page.goto(url)
        page.wait_for_timeout(8000)  # the charts draw once their data arrives (it polls)
        page.screenshot(path=str(out / f"{name}.png"))
        print(f"{name}: {url}")
    browser.close()
