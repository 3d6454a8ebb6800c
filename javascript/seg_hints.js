// Generated from lib_seg/params.py by lib_seg.ui.hints_js(); tests/test_ui.py keeps it in sync.
// Hover hints for the SEG controls through the WebUI's `titles` table (javascript/hints.js).
(function() {
    var segHints = {
        "Smoothed Energy Guidance (SEG)": "Smoothed Energy Guidance: guide away from a prediction made with blurred self-attention queries (Hong, NeurIPS 2024).",
        "SEG enabled": "Turn Smoothed Energy Guidance on for this generation.",
        "SEG scale": "Strength of the guidance away from the blurred-attention prediction; 0 turns it off.",
        "SEG sigma": "Gaussian blur of the attention queries, in tokens; inf replaces them by their mean (strongest).",
        "SEG layers": "Self-attention blocks to blur: mid, down, up, all, or a list such as d0-3, m0, u0.4, d2.2-9.",
        "SEG start": "Fraction of the sampling steps after which SEG starts (0 = from the first step).",
        "SEG end": "Fraction of the sampling steps after which SEG stops (1 = through the last step).",
        "SEG rescale": "Pull the guided prediction's spread back toward the plain prediction's (0 = off)."
    };
    if (typeof titles === "undefined") {
        window.titles = {};
    }
    Object.assign(titles, segHints);
})();
