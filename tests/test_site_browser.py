"""The built site in headless Chromium (zoo.cards.site; the files themselves: tests/test_site.py).

Browser tests use Selenium with Debian's chromium and chromium-driver and skip, saying what to install,
when either is missing. ``ZOO_SITE_SCREENSHOTS=DIR`` saves screenshots of the pages they open.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import zoo
from support.site_entries import REVISION, SHA, index_data
from zoo.cards.site import build_site
from zoo.cards.stats import model_stats


# ---------------------------------------------------------------------------------- headless Chromium
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,900")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="browser tests need the Python package selenium (pip install -e '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver); not found on PATH")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="zoo-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _shot(driver, name: str) -> None:
    folder = os.environ.get("ZOO_SITE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _visible(driver) -> list[str]:
    return [tr.get_attribute("data-name") for tr in driver.find_elements("css selector", "#models tbody tr")
            if tr.is_displayed()]


@pytest.fixture
def site(site_entries, tmp_path, browser):
    out = tmp_path / "site"
    build_site(out, site_entries)
    browser.get_log("browser")  # drop messages of earlier pages
    browser.get((out / "index.html").as_uri())
    return out


def test_browser_search_narrows_the_list(site, browser):
    from selenium.webdriver.common.by import By

    names = ["test-small-segnet", "test-small-segnet-voc", "test-tiny-classifier"]
    assert _visible(browser) == names
    assert browser.find_element(By.ID, "count").text == "3 of 3 models"
    search = browser.find_element(By.ID, "search")
    search.send_keys("classifier")
    assert _visible(browser) == ["test-tiny-classifier"]
    search.clear()
    search.send_keys("voc2012 miou")  # every term must match: name, task, paper, metric, dataset ...
    assert _visible(browser) == ["test-small-segnet-voc"]
    search.clear()
    search.send_keys("no such model")
    assert _visible(browser) == [] and browser.find_element(By.ID, "empty").is_displayed()
    search.clear()
    search.send_keys(" ")
    assert _visible(browser) == names and not browser.find_element(By.ID, "empty").is_displayed()
    assert _console_errors(browser) == []


def test_browser_task_and_pretrained_filters(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    task = Select(browser.find_element(By.ID, "task"))
    assert [o.get_attribute("value") for o in task.options] == ["", "semantic-segmentation", "image-classification"]
    task.select_by_value("image-classification")
    assert _visible(browser) == ["test-tiny-classifier"]
    task.select_by_value("semantic-segmentation")
    assert _visible(browser) == ["test-small-segnet", "test-small-segnet-voc"]
    browser.find_element(By.ID, "pretrained").click()
    assert _visible(browser) == ["test-small-segnet-voc"]
    assert browser.find_element(By.ID, "count").text == "1 of 3 models"
    task.select_by_value("")
    assert _visible(browser) == ["test-small-segnet-voc", "test-tiny-classifier"]
    _shot(browser, "index-filtered")
    assert _console_errors(browser) == []


def test_browser_columns_sort(site, browser):
    from selenium.webdriver.common.by import By

    data = {r["name"]: r for r in index_data((site / "index.html").read_text())["models"]}
    header = browser.find_element(By.CSS_SELECTOR, '#models th[data-key="gflops"] button')
    header.click()
    assert _visible(browser) == sorted(data, key=lambda n: data[n]["gflops"])
    assert browser.find_element(By.CSS_SELECTOR, '#models th[data-key="gflops"]').get_attribute("aria-sort") == "ascending"
    header.click()
    assert _visible(browser) == sorted(data, key=lambda n: -data[n]["gflops"])
    browser.find_element(By.CSS_SELECTOR, '#models th[data-key="params"] button').click()
    assert _visible(browser) == sorted(data, key=lambda n: data[n]["params"])
    browser.find_element(By.CSS_SELECTOR, '#models th[data-key="metric"] button').click()
    # by metric name, then value; entries without a metric last
    assert _visible(browser) == ["test-small-segnet-voc", "test-tiny-classifier", "test-small-segnet"]
    _shot(browser, "index")
    assert _console_errors(browser) == []


def test_browser_model_page_opens_from_the_index_with_the_right_metrics(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.LINK_TEXT, "test-small-segnet-voc").click()
    assert browser.current_url.endswith("/models/test-small-segnet-voc.html")
    assert browser.find_element(By.TAG_NAME, "h1").text == "test-small-segnet-voc"
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#metrics-table tbody tr")]
    assert [r[:5] for r in rows] == [
        ["voc (default)", "VOC2012", "val", "mIoU", "71.3"],
        ["voc (default)", "VOC2012", "val", "pixel accuracy", "93.1"],
        ["coco", "COCO", "val", "mIoU", "12.5"],
    ]
    weights = browser.find_element(By.ID, "weights-tags").text
    assert REVISION in weights and SHA in weights
    params = browser.find_element(By.ID, "params").text
    assert params.replace(",", "") == str(model_stats(zoo.model_info("test-small-segnet-voc")).params)
    button = browser.find_element(By.CSS_SELECTOR, "#usage ~ .code .copy")
    button.click()
    # the clipboard write resolves asynchronously and the label reverts after 1.5 s; the title stays
    WebDriverWait(browser, 10, poll_frequency=0.05).until(lambda _: button.get_attribute("title"))
    assert button.get_attribute("title") in (
        "Copied to the clipboard", "The code is selected: press Ctrl+C to copy it")
    _shot(browser, "model-page")
    browser.find_element(By.LINK_TEXT, "← all models").click()
    assert browser.current_url.endswith("/index.html") and len(_visible(browser)) == 3
    assert _console_errors(browser) == []
