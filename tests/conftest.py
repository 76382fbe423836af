"""A real headless browser for the tests that look at what a user sees (the MLflow UI, the HTML report).

``browser`` starts Debian's Chromium (``chromium-headless-shell``, or a full
``chromium``) and drives one page through the Chrome DevTools Protocol over
``--remote-debugging-pipe``: the browser reads JSON commands, each ended by a
NUL byte, on its fd 3 and answers on its fd 4. A pipe needs no port, no
websocket client and no driver binary, so the test dependencies stay Debian's
browser alone (``scripts/setup.sh --test`` installs it).

Waiting for a single-page app is done inside the page: a promise checks a
condition on every animation frame and settles when it holds, or with the
page's text when the bound runs out, so a test fails with what the user saw.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

# A test run started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT
# ignored, and StopSignals rightly leaves an ignored signal alone; the Ctrl-C tests need it caught.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: Executables tried in this order; setup.sh --test installs the first.
CHROMIUM_NAMES = ("chromium-headless-shell", "chromium")


class BrowserError(AssertionError):
    pass


class Browser:
    """One Chromium process showing one page; use as a context manager (the process is ended on exit)."""

    def __init__(self, executable: str, profile: Path, log: Path, timeout: float = 60):
        self.log = log
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1600,1000",
                 "about:blank"]
        # bash (dash takes no fd above 9) puts the two pipe ends on the fd numbers the protocol fixes
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{commands_read} 4>&{answers_write}', executable, *flags],
                pass_fds=(commands_read, answers_write), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        os.close(commands_read)
        os.close(answers_write)
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, to_browser=True)["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     to_browser=True)["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    # protocol --------------------------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, to_browser: bool = False) -> dict:
        """Send one command (to the page, or ``to_browser``) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if not to_browser:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data):]
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method} failed: {answer['error']}")
                return answer["result"]

    def wait_for_event(self, method: str, matches, what: str, since: int = 0) -> dict:
        """The parameters of the latest event ``method`` that ``matches`` in ``self.events[since:]``, else the next."""
        for event in reversed(self.events[since:]):
            if event["method"] == method and matches(event["params"]):
                return event["params"]
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._receive(deadline, what)
            if event.get("method") == method and matches(event["params"]):
                return event["params"]

    def _receive(self, deadline: float, waiting_for: str) -> dict:
        """The next message; events are also kept in ``self.events``."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            readable = select.select([self._answers], [], [], left)[0] if left > 0 else []
            if not readable:
                raise BrowserError(f"chromium did not answer {waiting_for} within {self.timeout} s\n{self.log_tail()}")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed its pipe while {waiting_for} was pending\n{self.log_tail()}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else "(no log)"

    # page ------------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait for its load event (a single-page app may still be rendering).

        A URL that differs from the page's only after ``#`` stays in the same document,
        which the app's router handles: there is no load event then.
        """
        since = len(self.events)
        answer = self.call("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"cannot open {url}: {answer['errorText']}")
        if "loaderId" in answer:
            self.wait_for_event("Page.loadEventFired", lambda event: True, f"the load event of {url}", since)

    def evaluate(self, expression: str, context: int | None = None):
        """The value of a JavaScript expression in the page (or a frame's context); promises are awaited."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if context is not None:
            params["contextId"] = context
        answer = self.call("Runtime.evaluate", params)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(f"{expression[:200]!r} threw: "
                               f"{details.get('exception', {}).get('description', details.get('text'))}")
        return answer["result"].get("value")

    def wait_for(self, condition: str, what: str, seconds: float = 45, context: int | None = None):
        """Wait until the JavaScript expression ``condition`` is truthy in the page; return its value.

        Fails naming ``what`` and quoting the page's text when it is still falsy after ``seconds``.
        """
        outcome = self.evaluate(
            "new Promise(settle => { const end = performance.now() + %d;"
            " const check = () => { let value; try { value = (%s); } catch (error) { value = null; }"
            " if (value) settle({value}); else if (performance.now() > end)"
            " settle({text: document.body ? document.body.innerText : ''});"
            " else requestAnimationFrame(check); }; check(); })" % (seconds * 1000, condition),
            context=context)
        if "value" not in outcome:
            raise BrowserError(f"{what}: not shown within {seconds} s; the page showed:\n{outcome['text'][:4000]}")
        return outcome["value"]

    def click(self, element: str, what: str) -> None:
        """Press and release the left mouse button over an element, as a user clicks it.

        ``element`` is a JavaScript expression for the element (see :func:`with_text`).
        It is waited for until it has a size, no transition is running and it stayed
        in place for a frame: the report's side bar slides when its view changes, and
        styles are generated by a script after the first render; a click while the
        element moves hits another one.
        """
        centre = self.wait_for(
            "(() => { const node = (%s); if (!node) return null; node.scrollIntoView({block: 'center'});"
            " const box = node.getBoundingClientRect(), place = [box.x, box.y, box.width, box.height].join();"
            " const still = window.__clickPlace === place; window.__clickPlace = place;"
            " const moving = document.getAnimations().some(animation => animation.playState === 'running');"
            " return still && !moving && box.width && box.height"
            " ? {x: box.x + box.width / 2, y: box.y + box.height / 2} : null; })()" % element, what)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent",
                      {"type": kind, "x": centre["x"], "y": centre["y"], "button": "left", "clickCount": 1})

    def frame_context(self, url: str) -> int:
        """A JavaScript context inside the frame showing ``url`` (waited for).

        An isolated world reads a frame of another origin (e.g. a ``data:`` iframe
        in a ``file:`` page) as the browser shows it, which page scripts may not.
        """
        frame = self.wait_for_event("Page.frameNavigated", lambda event: event["frame"]["url"] == url,
                                    f"a frame showing {url[:80]}")["frame"]
        return self.call("Page.createIsolatedWorld", {"frameId": frame["id"]})["executionContextId"]

    # process ---------------------------------------------------------------------------------

    def close(self) -> None:
        for fd in (self._commands, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        # the browser leaves when its pipe closes; its renderers and helpers share its process group
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=15)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def with_text(selector: str, text: str) -> str:
    """JavaScript for the first element matching ``selector`` whose visible text is ``text``."""
    return "[...document.querySelectorAll(%s)].find(node => node.innerText.trim() === %s)" % (
        json.dumps(selector), json.dumps(text))


def chromium_executable() -> str:
    """The Chromium to drive; a missing one fails the test with the command that installs it."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no headless Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}): "
                "run `bash scripts/setup.sh --test` (as root it installs Debian's chromium-headless-shell)",
                pytrace=False)


@pytest.fixture
def browser(tmp_path_factory):
    """A fresh headless Chromium page; its log lies next to its profile in a temporary folder."""
    root = tmp_path_factory.mktemp("chromium")
    with Browser(chromium_executable(), root / "profile", root / "chromium.log") as page:
        yield page
