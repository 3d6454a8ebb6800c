"""A self-contained SEG demo: a tiny class-conditional pixel-space diffusion model of handwritten digits.

Everything needed ships in this package (weights under ``weights/``), so ``python -m lib_seg.demo`` shows
what SEG does without a WebUI or a multi-GB checkpoint, and ``python -m lib_seg.demo --evaluate`` scores
it (Fréchet distance of classifier features, class accuracy). ``python -m lib_seg.demo.train`` rebuilds
the weights reproducibly.
"""
import os

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
DENOISER_PATH = os.path.join(WEIGHTS_DIR, "digits_denoiser.safetensors")
CLASSIFIER_PATH = os.path.join(WEIGHTS_DIR, "digits_classifier.safetensors")
CURVE_PATH = os.path.join(WEIGHTS_DIR, "training_curve.json")
