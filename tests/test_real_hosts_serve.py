"""serve.py wait, the harness's readiness gate, on the shared API client (lib_seg.selfcheck.client): ready when the
fake WebUI lists the script, answers script-info and makes a tiny image; not ready, and saying why, when nothing
answers."""
import os
import subprocess
import sys

from fake_webui import FakeWebUI

SERVE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "real_hosts", "serve.py")


def wait(url, *flags):
    return subprocess.run([sys.executable, SERVE, "wait", "--url", url, *flags], capture_output=True, text=True)


def test_ready_when_the_webui_answers():
    with FakeWebUI() as webui:
        done = wait(webui.url, "--timeout", "20")
    assert done.returncode == 0 and "ready after" in done.stdout, done.stdout + done.stderr


def test_not_ready_when_nothing_answers():
    done = wait("http://127.0.0.1:9", "--timeout", "1")
    assert done.returncode != 0
    assert "Connection refused" in done.stdout and "not ready after" in done.stderr


def test_not_ready_when_the_script_is_missing():
    with FakeWebUI() as webui:
        done = wait(webui.url, "--timeout", "20", "--script", "No Such Script")
    assert done.returncode != 0 and "is not listed" in done.stderr
