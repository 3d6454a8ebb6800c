// Generated from lib_seg/params.py by lib_seg.ui.hints_js(); tests/test_ui.py keeps it in sync.
// Hover hints for the SEG controls through the WebUI's `titles` table (javascript/hints.js).
(function() {
    var segHints = {
        "Smoothed Energy Guidance (SEG)": "Smoothed Energy Guidance: guide away from a prediction made with blurred self-attention queries (Hong, NeurIPS 2024).",
        "SEG hires fix pass": "A separate SEG setting for the hires fix's second pass (off by default: that pass uses the settings above).",
        "SEG enabled": "Turn Smoothed Energy Guidance on for this generation.",
        "SEG scale": "Strength of the guidance away from the blurred-attention prediction; 0 turns it off.",
        "SEG sigma": "Gaussian blur of the attention queries, in tokens; inf replaces them by their mean (strongest).",
        "SEG layers": "Self-attention blocks to blur: mid, down, up, all, or a list such as d0-3, m0, u0.4, d2.2-9.",
        "SEG start": "Fraction of the sampling steps after which SEG starts (0 = from the first step).",
        "SEG end": "Fraction of the sampling steps after which SEG stops (1 = through the last step).",
        "SEG rescale": "Pull the guided prediction's spread back toward the plain prediction's (0 = off).",
        "SEG perturbation": "What the guiding prediction changes in the selected self-attention layers: blur the queries (Smoothed Energy Guidance, uses sigma), replace attention by the identity, each token keeping its own value (Perturbed-Attention Guidance, sigma unused), on transformer models (Flux, Chroma, SD3) skip the selected blocks (skip-layer guidance, sigma unused), or blur only the part of each query that picks its keys (Orthogonal SEG; its uncond prediction is perturbed too).",
        "SEG hires pass": "The hires fix's second pass: the first pass's SEG settings, its own scale, sigma, layers and perturbation below, or no SEG at all.",
        "SEG hires scale": "SEG scale of the hires fix's second pass (with 'Own settings'); 0 turns it off there.",
        "SEG hires sigma": "Query blur of the hires fix's second pass (with 'Own settings'), in tokens of that pass's grid.",
        "SEG hires layers": "Self-attention blocks perturbed in the hires fix's second pass (with 'Own settings').",
        "SEG hires perturbation": "Perturbation of the hires fix's second pass (with 'Own settings'): blurred queries (SEG), identity attention (PAG), skipped blocks (SLG, transformer models) or orthogonal SEG (OSEG)."
    };
    if (typeof titles === "undefined") {
        window.titles = {};
    }
    Object.assign(titles, segHints);
})();
