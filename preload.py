"""Command-line flags of the SEG extension (read by the WebUI before it parses its arguments)."""


def preload(parser):
    parser.add_argument("--seg-disable", action="store_true",
                        help="Smoothed Energy Guidance (SEG): load the extension without its controls, "
                             "API script or X/Y/Z axes (turns it off globally).")
