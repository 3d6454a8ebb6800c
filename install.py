"""Nothing to install: SEG needs only torch, gradio and the ``ldm`` code that the WebUI already has.

(The WebUI runs this file at startup. Installing packages here, e.g. another ``ldm``, would shadow the
WebUI's own copy; the test environment installs its own in tests/requirements*.txt.)
"""
print("[SEG] Smoothed Energy Guidance: nothing to install (uses the WebUI's torch, gradio and ldm).")
