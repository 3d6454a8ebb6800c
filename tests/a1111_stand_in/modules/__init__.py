"""Stand-in for AUTOMATIC1111 stable-diffusion-webui 1.10.1 ``modules`` (see ../README.md)."""
