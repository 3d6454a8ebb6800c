"""The self-check's lines, grouped by feature. Each check is a function of the run (``sc``: a
lib_seg.selfcheck.runner.SelfCheck, which makes and caches the requests) returning (status, detail, data);
its name after ``check_`` is its key for ``--only``."""
from lib_seg.selfcheck.checks import basics, generation, modes, xyz

# (line name, check), in the order they run and print; the README's self-check table explains each name.
CHECKS = (
    ("SEG script listed", basics.check_listed),
    ("SEG changes the image", basics.check_changes),
    ("infotext reproduces the SEG image", basics.check_infotext),
    ("positional and named args agree", basics.check_named),
    ("bad value refused (sigma -1)", basics.check_refusal),
    ("CFG 1", generation.check_cfg1),
    ("batch 2", generation.check_batch),
    ("non-square size", generation.check_nonsquare),
    ("hires fix", generation.check_hires),
    ("img2img", generation.check_img2img),
    ("X/Y/Z sweep over SEG sigma", xyz.check_xyz),
    ("PAG mode (identity attention)", modes.check_pag),
    ("choices as script-info advertises them", modes.check_labels),
    ("hires pass with own settings", modes.check_hires_own),
    ("no SEG after SEG runs: bit-identical", basics.check_after),
)
