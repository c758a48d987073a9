"""Screenshots of an audit's one-page report and its gallery, in headless Chromium.

    python docs/screenshots/report.py REPORT_HTML OUT_DIR [MLFLOW_RUN_ARTIFACT_URL]

Opens the report as a file (it needs no server: its figures are embedded), writes
``audit_report.png`` (the page's first screen) and ``audit_gallery.png`` (the gallery of
the records that leak), and, given the MLflow UI address of the audit run's ``report.html``
artifact, ``audit_report_in_mlflow.png``. Needs ``pip install playwright``; it drives
the system's /usr/bin/chromium and downloads nothing.
"""

import re
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

report, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(out / "audit_report.png"))
    heading = page.get_by_role("heading", name=re.compile("records that leak most"))
    heading.scroll_into_view_if_needed()
    top = heading.bounding_box()["y"] + page.evaluate("window.scrollY")
    page.screenshot(path=str(out / "audit_gallery.png"), full_page=True,
                    clip={"x": 0, "y": top - 10, "width": 1280, "height": 1250})
    if len(sys.argv) > 3:
        page.set_viewport_size({"width": 1600, "height": 1100})
        page.goto(sys.argv[3])
        page.get_by_text("report.html").first.wait_for(timeout=60_000)
        page.wait_for_timeout(4000)  # the artifact's iframe renders after its download
        page.screenshot(path=str(out / "audit_report_in_mlflow.png"))
    browser.close()
