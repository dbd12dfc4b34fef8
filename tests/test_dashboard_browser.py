"""The dashboard in a real browser: Debian's chromium, driven by selenium through Debian's
chromedriver (never a downloaded browser), with JavaScript off, against a real `receiver serve`
fed by the provider simulator over HTTP.

Skipped, with the reason, when chromium, chromedriver or selenium is missing (`.ci/run`
installs them). The overview's screenshot is written to the test's temporary directory, and
to $DASHBOARD_SCREENSHOT when set (docs/dashboard.png is made so).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from server_process import ServerProcess
from support import AppServer, wait_until

from receiver.dashboard.figures import rate
from receiver.demo import REALISM, TIMING
from receiver.simulator import Accounts, SimConfig, create_simulator
from receiver.simulator.client import SimulatorClient

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "browser-test-token-0123456789"
PROVIDERS = {"twilio": 12, "telecom23": 9, "mesms": 9}
SCRIPT_ID = "<script>alert('x')</script>/42"


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")

if _missing() is None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

# A page a click or a submit leads to: loaded within this, however busy the machine.
PAGE_DEADLINE = 60.0


@dataclass
class Stack:
    receiver: ServerProcess
    sim_url: str

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(
            self.receiver.base_url + path,
            params=params,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The simulator and `receiver serve`, with thirty messages of three providers, all final."""
    workdir = tmp_path_factory.mktemp("dashboard-browser")
    sim = AppServer(create_simulator(SimConfig(seed=7, realism=REALISM, timing=TIMING))).start()
    accounts = Accounts()
    receiver = ServerProcess(
        workdir / "receiver.db",
        workdir / "receiver.log",
        RECEIVER_API_TOKEN=TOKEN,
        RECEIVER_SECRET_KEY="browser-test-secret-key-0123456789",
        RECEIVER_DLR_GRACE="2s",
        RECEIVER_POLL_BACKOFF="1s",
        RECEIVER_POLL_BACKOFF_MAX="2s",
        RECEIVER_POLL_MAX_AGE="40s",
        RECEIVER_POLL_INTERVAL="0.5s",
        TWILIO_AUTH_TOKEN=accounts.twilio_auth_token,
        TWILIO_ACCOUNT_SID=accounts.twilio_account_sid,
        TWILIO_API_BASE=sim.base_url,
        TELECOM23_API_KEY=accounts.telecom23_api_key,
        TELECOM23_API_BASE=sim.base_url + "/api/v1",
        MESMS_API_KEY=accounts.mesms_api_key,
        MESMS_API_BASE=sim.base_url,
        **{f"{p.upper()}_POLL_RATE": "50" for p in PROVIDERS},
    )
    receiver.start()
    try:
        with (
            SimulatorClient(sim.base_url) as simulator,
            httpx.Client(
                base_url=receiver.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as api,
        ):
            simulator.point_at_receiver(receiver.base_url, providers=PROVIDERS, api_token=TOKEN)
            for provider, count in PROVIDERS.items():
                numbers = [f"+1555{2_000_000 + i:07d}" for i in range(count)]
                ids = simulator.create_messages(provider, count, to=numbers)
                registered = api.post(
                    "/v1/messages",
                    json={
                        "messages": [
                            {"provider": provider, "message_id": m, "to": n}
                            for m, n in zip(ids, numbers, strict=True)
                        ]
                    },
                )
                assert registered.status_code == 200, registered.text

            def all_final() -> bool:
                rows = api.get("/v1/messages", params={"limit": 1000}).json()["messages"]
                return len(rows) == sum(PROVIDERS.values()) and all(r["final"] for r in rows)

            wait_until(all_final, timeout=90, what="every simulated message final")
            simulator.wait_idle(timeout=30)
            # A message whose id holds markup (an app may register anything): never a DLR.
            odd = api.post("/v1/messages", json={"provider": "twilio", "message_id": SCRIPT_ID})
            assert odd.status_code in (200, 201), odd.text
        yield Stack(receiver, sim.base_url)
    finally:
        receiver.stop()
        sim.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1800")
    # The pages must work without JavaScript: the browser runs none.
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _follow(driver: WebDriver, element: WebElement, submit: bool = False) -> None:
    """Click a link or button (or submit a form) and wait until the page it leads to has
    replaced this one: a click returns once sent, and the old page's elements would answer
    (or go stale under) the next lookups."""
    page = driver.find_element(By.TAG_NAME, "html")
    if submit:
        element.submit()
    else:
        element.click()
    WebDriverWait(driver, PAGE_DEADLINE).until(expected_conditions.staleness_of(page))
    WebDriverWait(driver, PAGE_DEADLINE).until(
        expected_conditions.presence_of_element_located((By.TAG_NAME, "main"))
    )


def _text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _log_in(driver: WebDriver, stack: Stack, token: str = TOKEN) -> None:
    driver.delete_all_cookies()
    driver.get(stack.receiver.base_url + "/dashboard")
    assert urlparse(driver.current_url).path == "/dashboard/login"
    driver.find_element(By.ID, "token").send_keys(token)
    _follow(driver, driver.find_element(By.ID, "login"))


def _query(driver: WebDriver) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(driver.current_url).query).items()}


def test_log_in_and_see_the_delivery_rate_of_v1_stats(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    _log_in(browser, stack)
    assert urlparse(browser.current_url).path == "/dashboard"
    since = browser.find_element(By.ID, "since").get_attribute("datetime")
    stats = stack.api("/v1/stats", since=str(since))
    assert stats["total"] == sum(PROVIDERS.values()) + 1
    assert _text(browser, "total") == str(stats["total"])
    assert _text(browser, "delivery-rate") == rate(stats["delivery_rate"])
    assert _text(browser, "delivery-rate").endswith("%")
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    if target := os.environ.get("DASHBOARD_SCREENSHOT"):
        shutil.copyfile(shot, target)


def test_a_wrong_token_is_refused(stack: Stack, browser: WebDriver) -> None:
    _log_in(browser, stack, token="not-the-token")
    assert urlparse(browser.current_url).path == "/dashboard/login"
    assert _text(browser, "login-error") == "this token is not valid"
    browser.get(stack.receiver.base_url + "/dashboard")
    assert urlparse(browser.current_url).path == "/dashboard/login"


def test_open_a_message_from_the_failures_list_and_see_its_timeline(
    stack: Stack, browser: WebDriver
) -> None:
    _log_in(browser, stack)
    links = browser.find_elements(By.CSS_SELECTOR, "#failures a.message-link")
    assert links, "the failures list is empty"
    message_id = links[0].text
    _follow(browser, links[0])
    assert _text(browser, "message-id") == message_id
    provider = urlparse(browser.current_url).path.split("/")[3]
    history = stack.api(f"/v1/messages/{message_id}/events", provider=provider)
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tr.event td.outcome")
    assert [r.text.split(" ")[0] for r in rows] == [e["outcome"] for e in history["events"]]
    assert _text(browser, "message-status").split(" ")[0] == history["message"]["status"]
    assert browser.find_elements(By.CSS_SELECTOR, "pre.body")


def test_switch_provider_and_window(stack: Stack, browser: WebDriver) -> None:
    _log_in(browser, stack)
    _follow(browser, browser.find_element(By.CSS_SELECTOR, 'a.provider[data-provider="mesms"]'))
    assert _query(browser) == {"window": "24h", "provider": "mesms"}
    assert _text(browser, "chosen-provider") == "mesms"
    since = browser.find_element(By.ID, "since").get_attribute("datetime")
    stats = stack.api("/v1/stats", since=str(since), provider="mesms")
    assert _text(browser, "total") == str(stats["total"]) == str(PROVIDERS["mesms"])
    assert _text(browser, "delivery-rate") == rate(stats["delivery_rate"])
    _follow(browser, browser.find_element(By.CSS_SELECTOR, 'a.window[data-window="1h"]'))
    assert _query(browser) == {"window": "1h", "provider": "mesms"}
    chosen = browser.find_element(By.CSS_SELECTOR, "a.window.chosen")
    assert chosen.get_attribute("data-window") == "1h"
    since = browser.find_element(By.ID, "since").get_attribute("datetime")
    stats = stack.api("/v1/stats", since=str(since), provider="mesms")
    assert _text(browser, "total") == str(stats["total"])


def test_a_message_id_holding_script_is_shown_as_text(stack: Stack, browser: WebDriver) -> None:
    _log_in(browser, stack)
    search = browser.find_element(By.NAME, "q")
    search.send_keys(SCRIPT_ID)
    _follow(browser, search, submit=True)
    assert _text(browser, "message-id") == SCRIPT_ID
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert "<script>" in browser.title


def test_the_overview_fits_a_phone(stack: Stack, browser: WebDriver, tmp_path: Path) -> None:
    _log_in(browser, stack)
    browser.set_window_size(390, 1600)
    try:
        browser.get(stack.receiver.base_url + "/dashboard?window=1h")
        page = browser.find_element(By.TAG_NAME, "main").rect
        assert page["width"] <= 390
        assert browser.find_element(By.ID, "delivery-rate").is_displayed()
        assert browser.save_screenshot(str(tmp_path / "phone.png"))
    finally:
        browser.set_window_size(1280, 1800)
