"""The ldm UNet behind a k-diffusion CompVisDenoiser, as A1111 wraps its SD1.x models (eps prediction)."""
from lib_seg.kdiffusion import compvis_denoiser as denoiser_for, load  # noqa: F401 (re-exported for tests)

sampling, external = load()
