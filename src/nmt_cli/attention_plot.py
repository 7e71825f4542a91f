"""The attention heat-map of one translation, drawn as the TensorFlow NMT tutorial draws it:
source pieces along the top, the translation's pieces down the side, each cell shaded by how much
that target piece drew on that source piece.

matplotlib (the `plot` extra) is imported only here, and only its object interface is used: a
`Figure` saved to PNG goes through the Agg renderer (to SVG, through the SVG one), and no
display, window or pyplot state is involved.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli import files
from nmt_cli.errors import UserError

if TYPE_CHECKING:
    from nmt_cli.translation import Attention

FORMATS = (".png", ".svg")
# Fonts tried, in order, for pieces that DejaVu Sans (matplotlib's own) has no glyphs for, such as
# Japanese; those installed are used.
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans JP", "IPAexGothic", "IPAGothic", "TakaoGothic", "Droid Sans Fallback")
INCHES_PER_PIECE, MARGIN_INCHES, MOST_INCHES = 0.4, 2.0, 40.0


def check_plot_attention(path: Path) -> None:
    """What `--plot-attention` needs, checked before any model loads: a file name ending in .png or
    .svg, and matplotlib."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"--plot-attention {path} must end in .png or .svg")
    if path.is_dir():
        raise UserError(f"--plot-attention {path} is a folder: name a file to write, such as {path / 'attention.png'}")
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("--plot-attention needs matplotlib, which is not installed: pip install 'nmt-cli[plot]'")


def plot_attention(attention: Attention, path: Path) -> None:
    """Draw `attention` to `path` (PNG or SVG, by its suffix), written whole or not at all."""
    import matplotlib
    import numpy as np
    from matplotlib import font_manager
    from matplotlib.figure import Figure

    path = Path(path)
    installed = {font.name for font in font_manager.fontManager.ttflist}
    fonts = ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]
    with matplotlib.rc_context({"font.family": fonts}), warnings.catch_warnings():
        # A piece no installed font can draw shows as a box; the warning would only repeat that.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        figure = Figure(figsize=(_inches(len(attention.source)), _inches(len(attention.target))), layout="constrained")
        axes = figure.add_subplot()
        image = axes.matshow(np.asarray(attention.weights), cmap="viridis", vmin=0.0, vmax=1.0)
        axes.set_xticks(range(len(attention.source)), attention.source, rotation=90)
        axes.set_yticks(range(len(attention.target)), attention.target)
        axes.set_xlabel("source")
        axes.xaxis.set_label_position("top")
        axes.set_ylabel("translation")
        figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_with(lambda partial: figure.savefig(partial, format=path.suffix[1:].lower()), path)


def _inches(pieces: int) -> float:
    return min(MARGIN_INCHES + INCHES_PER_PIECE * pieces, MOST_INCHES)
