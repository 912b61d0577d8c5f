"""Drives the CRM cockpit page (`GET /` of `crm serve`) in headless Chromium with Playwright.

Run by gateway/tests/cockpit_browser.rs against a real server:

    python drive.py CONFIG.json

CONFIG (JSON), written by the Rust test:
    base            "http://127.0.0.1:PORT"
    artifacts       directory for screenshots (created)
    admin_token     token of an admin (or null when the server has no authentication)
    scorecard       the scorecard id the page should open by default
    top_node        the node an admin lands on
    top_figures     {measure id: display} expected at the top node
    children        {text in the child's link: win-rate display} reached through nav#children
    measure         the measure to drill down and to watch live (e.g. "win_rate")
    metric          the metric id its explanation names (e.g. "sales.win_rate")
    live            {"node": id, "setup": [command, ...], "appends": [[command, ...], ...]}:
                    commands POSTed to /v1/aggregates/{category}/commands (each body with
                    its "category"), the setup first, then each append, timed
    member          {"token", "node", "refused"}: a person's token, the node they see,
                    a node they may not see

Prints measurements as `name=value` lines (first_render_ms, append_to_render_ms, ...);
never asserts on time. Exits non-zero with the failed check on the last line.
"""

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

TIMEOUT_MS = 60_000

READY = 'main#cockpit[data-state="ready"]'


def log(*args):
    print(*args, flush=True)


class Check:
    """Collects what the browser says that a correct page never says."""

    def __init__(self, base):
        self.base = base
        self.external = []
        self.errors = []

    def attach(self, context):
        def request(r):
            url = r.url
            if not (url.startswith(self.base + "/") or url == self.base or url.startswith("data:")):
                self.external.append(url)

        context.on("request", request)

    def watch(self, page):
        def console(msg):
            # A refused request (401/403) is logged by Chromium itself; the page's own
            # errors are what matters.
            if msg.type == "error" and "Failed to load resource" not in msg.text:
                self.errors.append("console: " + msg.text)

        page.on("console", console)
        page.on("pageerror", lambda e: self.errors.append("pageerror: " + str(e)))

    def verify(self):
        assert not self.external, "the page asked for URLs outside the server: %s" % self.external
        assert not self.errors, "the page reported errors: %s" % self.errors


def http(config, method, path, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(config["base"] + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode(errors="replace")


def ready(page, node=None):
    """Waits for the page to be rendered (at `node` if given)."""
    if node is None:
        page.wait_for_selector(READY, timeout=TIMEOUT_MS)
    else:
        page.wait_for_selector('main#cockpit[data-state="ready"][data-node="%s"]' % node, timeout=TIMEOUT_MS)


def actual(page, measure):
    return page.text_content('#perspectives tr[data-measure="%s"] td[data-field="actual"] a' % measure).strip()


def shot(page, config, name):
    path = os.path.join(config["artifacts"], name)
    page.screenshot(path=path, full_page=True)
    log("screenshot=" + path)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


CONTRAST_JS = """() => {
  const parse = c => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const lum = ({r, g, b}) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg') || !el.getClientRects().length) continue;
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const l1 = lum(parse(getComputedStyle(el).color)), l2 = lum(background(el));
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) low.push(el.tagName + ' "' + el.textContent.trim().slice(0, 40) + '" ' + ratio.toFixed(2));
  }
  return low;
}"""


def hash_route(config, node, rest=""):
    return "#/s/%s/n/%s%s" % (config["scorecard"], node, rest)


def scenario_figures(browser, config, check):
    """(e) time to first render, (a) real figures and navigation down the cascade by
    mouse and keyboard, back/forward, the phone-width layout."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    check.attach(context)
    page = context.new_page()
    check.watch(page)
    token = config.get("admin_token")
    page.goto(config["base"] + "/" + ("#token=" + token if token else ""))
    ready(page)
    first = page.evaluate("window.__cockpitFirstReadyMs")
    log("first_render_ms=%.0f" % first)
    assert "token=" not in page.url, "the token stays in the address bar: %s" % page.url
    if token:
        stored = page.evaluate("sessionStorage.getItem('crm.cockpit.token')")
        assert stored == token, "the token was not kept in sessionStorage"
    main = page.locator("main#cockpit")
    assert main.get_attribute("data-scorecard") == config["scorecard"]
    top = config["top_node"]
    assert main.get_attribute("data-node") == top, "opened %s" % main.get_attribute("data-node")
    assert int(main.get_attribute("data-log-position")) > 0
    assert page.url.endswith(hash_route(config, top)), page.url
    for measure, shown in config["top_figures"].items():
        got = actual(page, measure)
        assert got == shown, "%s at %s: %s, expected %s" % (measure, top, got, shown)
    perspectives = page.locator("table[data-perspective]")
    assert perspectives.count() >= 1
    for i in range(perspectives.count()):
        assert perspectives.nth(i).locator("caption").count() == 1, "a perspective table without caption"
    assert page.locator("#strategy-map svg").count() == 1, "no strategy map"
    row = page.locator('tr[data-measure="%s"]' % config["measure"])
    for field in ("name", "owner", "actual", "target", "status", "trend"):
        assert row.locator('td[data-field="%s"]' % field).count() == 1, "no %s cell" % field
    status = row.locator('td[data-field="status"]').text_content().strip()
    assert status in ("on track", "at risk", "off track", "no data"), "status %r is not a word" % status
    low = page.evaluate(CONTRAST_JS)
    assert not low, "text below WCAG AA contrast (4.5:1): %s" % low
    shot(page, config, "cockpit-1280.png")

    # Down the cascade through nav#children: the first child by keyboard alone (Tab to it,
    # Enter), the others by click; back and forward return.
    children = config["children"]
    for i, (name, shown) in enumerate(children.items()):
        link = page.locator("nav#children a[data-node]", has_text=name).first
        node = link.get_attribute("data-node")
        if i == 0:
            page.locator("body").focus()
            for _ in range(400):
                page.keyboard.press("Tab")
                focused = page.evaluate(
                    "(() => { const a = document.activeElement;"
                    " return a && a.closest('nav#children') ? a.getAttribute('data-node') : null })()"
                )
                if focused == node:
                    break
            else:
                raise AssertionError("Tab never reached the link to %s" % name)
            outline = page.evaluate(
                "(() => { const s = getComputedStyle(document.activeElement);"
                " return [s.outlineStyle, parseFloat(s.outlineWidth)] })()"
            )
            assert outline[0] != "none" and outline[1] >= 2, "the focused link shows no outline: %s" % outline
            page.keyboard.press("Enter")
        else:
            link.click()
        ready(page, node)
        got = actual(page, config["measure"])
        assert got == shown, "%s at %s: %s, expected %s" % (config["measure"], name, got, shown)
        log("child %s (%s): %s %s" % (name, node, config["measure"], got))
        assert page.locator('nav#path a[data-node="%s"]' % top).count() == 1, "no way back up"
        page.go_back()
        ready(page, top)
        if i == 0:
            page.go_forward()
            ready(page, node)
            page.locator('nav#path a[data-node="%s"]' % top).click()
            ready(page, top)

    # Phone width: one column, no sideways scrolling of the page.
    page.set_viewport_size({"width": 375, "height": 812})
    page.wait_for_timeout(200)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 376, "at 375 px the page is %d px wide" % width
    shot(page, config, "cockpit-375.png")
    context.close()


def scenario_drill_down(browser, config, check):
    """(b) from a figure to its explanation, to one event, and back."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    check.attach(context)
    page = context.new_page()
    check.watch(page)
    token = config.get("admin_token")
    top = config["top_node"]
    page.goto(config["base"] + "/" + hash_route(config, top) + ("&token=" + token if token else ""))
    ready(page, top)
    page.locator('tr[data-measure="%s"] td[data-field="actual"] a' % config["measure"]).click()
    page.wait_for_selector("section#explain:not([hidden])", timeout=TIMEOUT_MS)
    ready(page)
    assert page.url.endswith(hash_route(config, top, "/explain/" + config["measure"])), page.url
    explain = page.locator("section#explain")
    metric = explain.locator('[data-field="metric"]').text_content()
    assert metric.startswith(config["metric"] + "@"), "metric %r" % metric
    position = explain.locator('[data-field="log-position"]').text_content().strip()
    assert position.isdigit() and int(position) > 0, "log position %r" % position
    chain = explain.locator('[data-field="chain-hash"]').text_content().strip()
    assert len(chain) >= 16, "chain hash %r" % chain
    rows = explain.locator("tr[data-position]")
    before = rows.count()
    assert before > 0, "no rows in the explanation"
    more = page.locator("#explain-more")
    if more.is_visible():
        more.click()
        page.wait_for_function("n => document.querySelectorAll('#explain tr[data-position]').length > n", arg=before)
        log("explanation rows: %d, then %d after More" % (before, rows.count()))
    shot(page, config, "explain-1280.png")

    pick = rows.nth(1 if rows.count() > 1 else 0)
    at = pick.get_attribute("data-position")
    event_type = pick.locator("td").nth(1).text_content().strip()
    pick.locator("a, button").first.click()
    page.wait_for_selector("section#event:not([hidden])", timeout=TIMEOUT_MS)
    ready(page)
    event = page.locator("section#event")
    assert event.locator('[data-field="position"]').text_content().strip() == at
    assert event.locator('[data-field="event-type"]').text_content().strip() == event_type
    assert event.locator('[data-field="stream"]').text_content().strip() != ""
    log("event %s: %s" % (at, event_type))
    page.set_viewport_size({"width": 375, "height": 812})
    shot(page, config, "event-375.png")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.go_back()
    page.wait_for_selector("section#explain:not([hidden])", timeout=TIMEOUT_MS)
    ready(page)
    context.close()


def post_all(config, token, commands):
    for command in commands:
        body = dict(command)
        category = body.pop("category")
        status, answer = http(config, "POST", "/v1/aggregates/%s/commands" % category, token, body)
        assert status == 200, "POST %s: %s %s" % (body.get("type"), status, answer)


def head(config, token):
    status, page = http(config, "GET", "/v1/events?limit=1", token)
    assert status == 200, page
    return page["head"]


def settle(page, config, token, quiet_ms=1500):
    """Waits until the page has no refresh pending and the log's head stays put for
    `quiet_ms` (the server's status watcher may append after an event)."""
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        page.wait_for_function("() => !window.__cockpit.pending()", timeout=TIMEOUT_MS)
        before = head(config, token)
        page.wait_for_timeout(quiet_ms)
        if head(config, token) == before and not page.evaluate("window.__cockpit.pending()"):
            return
    raise AssertionError("the page and the log never settled")


def scenario_live(browser, config, check):
    """(c) events appended through the API change the open page without a reload."""
    live = config["live"]
    node, measure = live["node"], config["measure"]
    token = config.get("admin_token")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    check.attach(context)
    page = context.new_page()
    check.watch(page)
    page.goto(config["base"] + "/" + hash_route(config, node) + ("&token=" + token if token else ""))
    ready(page, node)
    page.wait_for_selector('#live[data-state="live"]', timeout=TIMEOUT_MS)
    loaded_at = page.evaluate("window.__cockpitLoadedAt")
    post_all(config, token, live.get("setup", []))
    delays = []
    seen_highlight = False
    for commands in live["appends"]:
        settle(page, config, token)
        before = actual(page, measure)
        page.evaluate(
            """([measure, before]) => {
                window.__changedAt = null;
                const box = document.getElementById('perspectives');
                const read = () => {
                    const a = box.querySelector('tr[data-measure="' + measure + '"] td[data-field="actual"] a');
                    return a ? a.textContent.trim() : null;
                };
                const observer = new MutationObserver(() => {
                    const now = read();
                    if (now !== null && now !== before) {
                        window.__changedAt = Date.now();
                        window.__changedHighlighted = !!box.querySelector(
                            'tr[data-measure="' + measure + '"] td[data-field="actual"].changed .updated-tag');
                        observer.disconnect();
                    }
                });
                observer.observe(box, {subtree: true, childList: true, characterData: true});
            }""",
            [measure, before],
        )
        post_all(config, token, commands)
        answered = time.time() * 1000
        page.wait_for_function("() => window.__changedAt !== null", timeout=TIMEOUT_MS)
        changed_at = page.evaluate("window.__changedAt")
        seen_highlight = seen_highlight or page.evaluate("window.__changedHighlighted")
        delay = changed_at - answered
        delays.append(delay)
        # Where the time went: the feed's event, the page's wait, the server's answer.
        marks = page.evaluate("window.__cockpit.marks")
        after = [(what, t) for what, t in marks if t >= answered - 1000 and t <= changed_at]
        first = lambda what: next((t for w, t in after if w == what), None)
        last = lambda what: next((t for w, t in reversed(after) if w == what), None)
        event, request, answer = first("event"), last("request"), last("answer")
        parts = []
        if event is not None:
            parts.append("event after %.0f ms" % (event - answered))
        if request is not None and answer is not None:
            parts.append("view requested %.0f ms after the event, answered in %.0f ms, rendered %.0f ms later"
                         % (request - (event or request), answer - request, changed_at - answer))
        log("append_to_render_ms=%.0f (%s -> %s; %s)" % (delay, before, actual(page, measure), "; ".join(parts)))
    assert page.evaluate("window.__cockpitLoadedAt") == loaded_at, "the page was reloaded"
    assert seen_highlight, "a changed figure was not marked"
    status, view = http(config, "GET", "/v1/scorecards/%s?node=%s" % (config["scorecard"], node), token)
    assert status == 200, view
    want = None
    for p in view["perspectives"]:
        for o in p["objectives"]:
            for m in o["measures"]:
                if m["id"] == measure:
                    want = m["actual"]["display"]
    page.wait_for_function(
        "([m, want]) => { const a = document.querySelector('tr[data-measure=\"' + m + '\"] td[data-field=\"actual\"] a');"
        " return a && a.textContent.trim() === want }",
        arg=[measure, want],
        timeout=TIMEOUT_MS,
    )
    log("live figure %s at %s: %s, as the API says" % (measure, node, want))
    log(
        "append_to_render_p50_ms=%.0f append_to_render_p95_ms=%.0f appends=%d"
        % (percentile(delays, 50), percentile(delays, 95), len(delays))
    )
    changes = page.locator("#changes li[data-position]").count()
    log("status changes listed: %d" % changes)
    if live.get("expect_status_change"):
        assert changes > 0, "no status change listed"
    context.close()


def scenario_person(browser, config, check):
    """(d) a person's token: the login form, their own node and below, the rest refused."""
    member = config["member"]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    check.attach(context)
    page = context.new_page()
    check.watch(page)
    page.goto(config["base"] + "/")
    page.wait_for_selector("form#login:not([hidden])", timeout=TIMEOUT_MS)
    page.fill("#login-token", member["token"])
    page.keyboard.press("Enter")
    ready(page, member["node"])
    assert page.locator("form#login").is_hidden()
    status, view = http(
        config, "GET", "/v1/scorecards/%s?node=%s" % (config["scorecard"], member["node"]), member["token"]
    )
    assert status == 200, view
    want = sorted(c["id"] for c in view["node"]["children"])
    got = sorted(page.eval_on_selector_all("nav#children a[data-node]", "els => els.map(a => a.dataset.node)"))
    assert got == want, "children shown %s, the API's %s" % (got, want)
    log("person sees %s with children %s; feed: %s" % (member["node"], got, page.get_attribute("#live", "data-state")))
    shot(page, config, "person-1280.png")
    above = page.eval_on_selector_all("nav#path a[data-node]", "els => els.map(a => a.dataset.node)")
    assert member["refused"] not in above, "the breadcrumb links to %s, which is refused" % member["refused"]
    # A node outside the person's part of the cascade is refused (404: as if it did not
    # exist, or 403).
    page.evaluate("location.hash = %s" % json.dumps(hash_route(config, member["refused"])))
    page.wait_for_selector('main#cockpit[data-state="error"]', timeout=TIMEOUT_MS)
    refusal = page.get_attribute("main#cockpit", "data-error-status")
    assert refusal in ("403", "404"), "refused with %s" % refusal
    message = page.text_content("#message p").strip()
    assert message, "no reason given for the refusal"
    assert page.locator("#perspectives tr[data-measure]:visible").count() == 0, "refused figures shown"
    assert page.locator("nav#children a[data-node]").count() == 0, "refused children shown"
    log("refused %s (%s): %s" % (member["refused"], refusal, message.splitlines()[0]))
    # From the refusal back to what the person may see, down to a figure's events; without
    # `read_log` the event panel shows what the explanation recorded of the event.
    page.locator("#message a").first.click()
    ready(page, member["node"])
    page.locator('tr[data-measure="%s"] td[data-field="actual"] a' % config["measure"]).click()
    page.wait_for_selector("section#explain:not([hidden])", timeout=TIMEOUT_MS)
    ready(page)
    row = page.locator("section#explain tr[data-position]").first
    at = row.get_attribute("data-position")
    row.locator("a").click()
    page.wait_for_selector("section#event:not([hidden])", timeout=TIMEOUT_MS)
    ready(page)
    assert page.text_content('section#event [data-field="position"]').strip() == at
    note = page.locator("#event-note")
    log("person's event %s: %s" % (at, note.text_content().strip() if note.is_visible() else "the full event"))
    context.close()


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    os.makedirs(config["artifacts"], exist_ok=True)
    executable = os.environ.get("CRM_CHROMIUM") or "/usr/bin/chromium"
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    only = set(filter(None, os.environ.get("CRM_COCKPIT_SCENARIOS", "").split(",")))
    check = Check(config["base"])
    scenarios = [
        ("figures", scenario_figures),
        ("drill_down", scenario_drill_down),
        ("live", scenario_live),
        ("person", scenario_person),
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        log("chromium %s" % browser.version)
        for name, run in scenarios:
            if only and name not in only:
                continue
            if name == "person" and not config.get("member"):
                continue
            started = time.time()
            run(browser, config, check)
            log("ok %s (%.1f s)" % (name, time.time() - started))
        browser.close()
    check.verify()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print("FAILED: %s" % e, flush=True)
        sys.exit(1)
