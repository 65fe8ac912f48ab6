"""The web console in a real Chromium (Debian's chromium + chromium-driver, installed by
scripts/setup.sh; driven by Selenium) against a real `foundry serve`: sign in, create and
edit a recipe, forge it with the fake executors, watch the stages complete live, open the
artifact and its lineage graph, and see verify and replay name a tampered event. Each page is
saved as a screenshot under build/screenshots/console/."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.e2e.test_http_commands import fake_recipe
from tests.served import Served, serve, server_env

pytestmark = pytest.mark.slow  # a real server and a real browser

SHOTS = ROOT / "build" / "screenshots" / "console"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve-console")
    env = server_env(work, FOUNDRY_FAKE_SLEEP="0.4")  # slow enough to watch live
    with serve(f"sqlite:///{work / 'foundry.db'}", work, env=env) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, DRIVER):
        assert Path(path).exists(), f"{path} is missing: scripts/setup.sh installs Debian's " \
                                    "chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: Any, check: Any, timeout: float, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check, message=what)


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_a_person_creates_edits_forges_watches_and_audits_a_recipe_in_the_browser(
        served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    d.get(f"{served.url}/console")
    assert d.current_url.endswith("/console/login")  # no cookie: sign in first
    d.find_element(By.ID, "token").send_keys(served.tokens["run"])
    shot(d, "01-sign-in")
    d.find_element(By.CSS_SELECTOR, "form button").click()
    until(d, lambda d: d.current_url.endswith("/console"), 10, "the recipes page")

    recipe = fake_recipe(name="browser-recipe")
    area = d.find_element(By.ID, "recipe-json")
    d.execute_script("arguments[0].value = arguments[1]", area, json.dumps(recipe))
    shot(d, "02-recipes")
    d.find_element(By.ID, "create").click()
    until(d, lambda d: "/console/recipes/" in d.current_url, 10, "the recipe page")
    recipe_url = d.current_url

    description = d.find_element(By.ID, "description")
    description.clear()
    description.send_keys("Edited in a browser")
    d.find_element(By.ID, "reason").send_keys("clearer")
    d.find_element(By.ID, "save").click()
    until(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history > li")) == 2, 10,
          "the edit in the history")
    edit = d.find_elements(By.CSS_SELECTOR, "#history > li")[1]
    assert "Edited" in edit.text and served.names["run"] in edit.text and "clearer" in edit.text
    assert "Edited in a browser" in edit.text and "description" in edit.text
    shot(d, "03-recipe")

    d.find_element(By.ID, "forge").click()
    until(d, lambda d: "/console/runs/" in d.current_url, 10, "the run page")
    d.execute_script("window.sameDocument = true")
    until(d, lambda d: any(e.text == "running" for e in d.find_elements(By.CSS_SELECTOR,
                                                                          "#stages .st")),
          30, "a stage shown running, live")
    shot(d, "04-run-live")
    until(d, lambda d: text(d, "#run-status") == "completed", 60, "the run to complete")
    assert d.execute_script("return window.sameDocument") is True  # no reload: it was live
    statuses = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#stages .st")]
    assert len(statuses) >= 5 and set(statuses) == {"completed"}, statuses
    points = d.find_element(By.CSS_SELECTOR, "#loss polyline").get_attribute("points")
    assert points.strip(), "the train stage's finalLoss is drawn on the loss curve"
    shot(d, "05-run-done")

    d.find_element(By.CSS_SELECTOR, "#artifact-link a").click()
    until(d, lambda d: "/console/artifacts/" in d.current_url, 10, "the artifact page")
    nodes = d.find_elements(By.CSS_SELECTOR, "#lineage g.node")
    kinds = [n.get_attribute("data-kind") for n in nodes]
    assert kinds[:2] == ["base model", "recipe"] and kinds[-1] == "artifact"
    assert len(kinds) == len(statuses) + 3
    assert text(d, "#verdict") == "intact"
    shot(d, "06-artifact")

    tamper_a_stage_event(served)
    d.refresh()
    assert text(d, "#verdict") == "BROKEN"
    problems = [p.text for p in d.find_elements(By.CSS_SELECTOR, "#problems li")]
    assert any("alloyHash" in p or "view differs" in p for p in problems), problems
    shot(d, "07-artifact-tampered")
    d.find_element(By.ID, "audit-link").click()
    until(d, lambda d: "/console/audit/" in d.current_url, 10, "the audit report")
    assert text(d, "#verdict") == "BROKEN"
    assert [p.text for p in d.find_elements(By.CSS_SELECTOR, "#problems li")] == problems
    assert served.names["run"] in d.find_element(By.TAG_NAME, "main").text  # who edited
    shot(d, "08-audit")

    d.set_window_size(390, 844)  # a phone
    d.get(recipe_url)
    assert d.execute_script("return document.documentElement.scrollWidth") <= 400
    shot(d, "09-recipe-phone")
    d.set_window_size(1280, 900)
    assert sorted(p.name for p in SHOTS.iterdir())[0] == "01-sign-in.png"


def tamper_a_stage_event(served: Served) -> None:
    """Change one recorded output hash in the run's event table, as an attacker with write
    access to the database file would."""
    runs_db = Path(served.db.removeprefix("sqlite:///")).with_name("foundry.runs.db")
    with sqlite3.connect(runs_db) as conn:
        rows = conn.execute("SELECT rowid, state FROM stored_events WHERE topic LIKE "
                            "'%StageCompleted' ORDER BY rowid LIMIT 1").fetchall()
        assert rows, "no StageCompleted event to tamper with"
        rowid, state = rows[0]
        doc = json.loads(state)
        doc["output_hash"] = "sha256:" + "0" * 64
        conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                     (json.dumps(doc).encode(), rowid))
    time.sleep(0.1)


def test_the_console_acts_only_within_the_tokens_scope_and_only_from_its_own_origin(
        served: Served) -> None:
    import httpx

    with httpx.Client(base_url=served.url, follow_redirects=False, timeout=60) as reader:
        assert reader.get("/console").headers["location"] == "/console/login"
        signed = reader.post("/console/login", data={"token": served.tokens["read"]})
        assert signed.status_code == 303 and "httponly" in signed.headers["set-cookie"].lower()
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
        made = reader.post("/console/recipes", data={"data": json.dumps(fake_recipe())})
        assert made.status_code == 400 and "scope" in made.text  # a read token
        foreign = reader.post("/console/recipes", data={"data": "{}"},
                              headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 400 and "Origin" in foreign.text
        wrong = reader.post("/console/login", data={"token": "fdy_nothing"})
        assert wrong.status_code == 401
