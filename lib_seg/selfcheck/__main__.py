"""``python -m lib_seg.selfcheck --url ...``, or from a checkout ``python lib_seg/selfcheck --url ...``."""
import os
import sys

if not __package__:
    # Run as a folder: Python put this folder first on sys.path, where its modules would shadow top-level
    # ones of the same name; the checkout root instead makes the package importable.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lib_seg.selfcheck.cli import main  # noqa: E402

sys.exit(main())
