"""Smoothed Energy Guidance (Hong, NeurIPS 2024) for Stable Diffusion WebUIs.

The modules directly in this package are host-free (torch and numpy only); everything that touches a
WebUI lives in ``lib_seg.hosts``.
"""
