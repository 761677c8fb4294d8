"""A real browser for the UI tests: Debian's chromium and chromium-driver (installed by the
Makefile), driven by Selenium; and `cmisweep ui` started as a user would."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


class Browser:
    def __init__(self, driver):
        self.driver = driver

    @property
    def current_url(self) -> str:
        return self.driver.current_url

    def open(self, url: str, *expect: str, timeout: float = 90) -> str:
        """Load url; wait until the page's text holds every `expect` (or, with none, stops
        changing); return the text. The waits are generous: `make test` runs this beside two other
        pytest workers on 2 cores, and the UI's bundle then takes tens of seconds to render."""
        self.driver.get(url)
        t0, last = time.time(), None
        while time.time() - t0 < timeout:
            time.sleep(0.5)
            text = self.driver.find_element("tag name", "body").text
            if (expect and all(e in text for e in expect)) or (not expect and text == last and len(text) > 200):
                return text
            last = text
        return last or ""

    def image_loaded(self, src_part: str, timeout: float = 60) -> bool:
        """An <img> whose src holds src_part has been fetched and decoded (naturalWidth > 0)."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.driver.execute_script(
                    "return [...document.images].some(i => i.src.includes(arguments[0]) && i.complete "
                    "&& i.naturalWidth > 0)", src_part):
                return True
            time.sleep(0.5)
        return False

    def screenshot(self, path) -> None:
        self.driver.save_screenshot(str(path))


@contextlib.contextmanager
def chrome():
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("CMISWEEP_REQUIRE_DATA") == "1":
            pytest.fail("chromium / chromium-driver are not installed (make system-deps)")
        pytest.skip("chromium / chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()


@contextlib.contextmanager
def serve_ui(sweep: str, results, port: int, timeout: float = 90):
    """`cmisweep ui SWEEP` on a free port; yields the page it prints; stops it with SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "ui", sweep, "--results", str(results),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        page = None
        for line in proc.stdout:
            if line.strip().startswith("open "):
                page = line.split()[1]
                break
        assert page, "cmisweep ui printed no address"
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield page
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
