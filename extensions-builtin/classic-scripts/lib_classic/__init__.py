"""Code the classic scripts share (value ranges, X/Y/Z axes, outpainting pixels), imported by
scripts/*.py relatively (`from ..lib_classic.ranges import ...`), so it loads with the extension."""
